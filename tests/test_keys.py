"""Keys go only where the owner sent them (issue 14): the server's environment key never reaches
a URL typed on the page, on a new run or a resumed one; the page never holds it; an endpoint's
error text is shown as plain text. Real openai client over loopback HTTP to a server that
records every Authorization header it receives."""
import time

import pytest
from streamlit.testing.v1 import AppTest

from selfinstruct.backend import OPENAI_COMPATIBLE, OPENAI_URL, Backend
from selfinstruct.offline import OfflineServer, _HTTPError
from tests.conftest import app_pool, open_page

CANARY = "sk-CANARY-0123456789abcdef"
MARKDOWN = "![x](http://127.0.0.1:9/x.png) **boom**"


class RecordingServer(OfflineServer):
    """The offline server, recording the Authorization header of every request; with `refuse`,
    it answers every request 400 with that message (as a hostile or broken endpoint might)."""

    def __init__(self, *args, refuse: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[str] = []
        self.refuse = refuse

    def _check_auth(self, headers) -> None:
        self.seen.append(headers.get("Authorization") or "")
        if self.refuse:
            raise _HTTPError(400, self.refuse, "invalid_request_error", None)
        super()._check_auth(headers)


@pytest.fixture
def canary(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.delenv("SELFINSTRUCT_BASE_URL", raising=False)
    return CANARY


def _wait_idle(at: AppTest, db_path, timeout: float = 90.0) -> None:
    from pages.common import _job_manager

    manager = _job_manager(str(db_path))
    deadline = time.time() + timeout
    while manager.status().busy and time.time() < deadline:
        time.sleep(0.2)
    assert not manager.status().busy, "the run did not end"
    at.run()


def _generate_page(db_path) -> AppTest:
    at = open_page("pages/seed.py")
    at.button(key="load_starter").click().run()
    at.switch_page("pages/generate.py").run()
    assert not at.exception
    return at


# -- the rule, in the library -------------------------------------------------------------
def test_the_environment_key_goes_only_to_the_owners_endpoints(canary, monkeypatch):
    assert Backend(kind=OPENAI_COMPATIBLE, base_url=OPENAI_URL).resolved_api_key() == CANARY
    assert Backend(kind=OPENAI_COMPATIBLE, base_url=OPENAI_URL + "/").resolved_api_key() == CANARY
    for url in ("http://127.0.0.1:9/v1", "https://api.openai.com.evil.example/v1",
                "https://api.openai.com/v1/../../x", "https://api.openai.com:444/v1"):
        backend = Backend(kind=OPENAI_COMPATIBLE, base_url=url)
        assert backend.resolved_api_key() != CANARY and backend.api_key_source() == "none", url
    # a key typed with the URL goes there; the CLI's own user may send the env key anywhere
    assert Backend(kind=OPENAI_COMPATIBLE, base_url="http://x/v1", api_key="sk-typed").resolved_api_key() == "sk-typed"
    assert Backend(kind=OPENAI_COMPATIBLE, base_url="http://x/v1", env_key_any_url=True).resolved_api_key() == CANARY
    # the owner's own endpoint, named in the environment
    monkeypatch.setenv("SELFINSTRUCT_BASE_URL", "http://vllm.internal:8000/v1/")
    assert Backend(kind=OPENAI_COMPATIBLE, base_url="http://vllm.internal:8000/v1").resolved_api_key() == CANARY
    assert Backend(kind="offline").resolved_api_key() != CANARY


# -- the Generate page ----------------------------------------------------------------------
def test_a_url_typed_on_the_page_never_receives_the_servers_key(app_env, canary):
    with RecordingServer(latency_s=0.0) as server:
        at = _generate_page(app_env)
        at.segmented_control(key="gen_backend").set_value("openai").run()
        assert at.text_input(key="gen_api_key").value == ""      # never prefilled
        assert CANARY not in repr(at.session_state)
        assert not any(CANARY in str(t.value) for t in at.text_input)
        at.segmented_control(key="gen_backend").set_value("compatible").run()
        assert at.text_input(key="gen_api_key").value == ""
        at.text_input(key="gen_base_url_compatible").input(server.base_url).run()
        at.text_input(key="gen_model_compatible").input("selfinstruct-demo").run()
        assert any("no key is sent" in c.value for c in at.caption)
        at.number_input(key="gen_rounds").set_value(1).run()
        at.button(key="gen_test").click().run()
        at.button(key="gen_start").click().run()
        assert not at.exception
        _wait_idle(at, app_env)
        assert app_pool(app_env).runs.get(1)["status"] == "finished"
        assert len(server.seen) > 3
        assert not any(CANARY in header for header in server.seen), set(server.seen)


def test_resuming_a_run_does_not_send_the_servers_key_to_its_url(app_env, canary):
    with RecordingServer(latency_s=0.0) as server:
        at = _generate_page(app_env)
        pool = app_pool(app_env)
        from selfinstruct.settings import RunConfig
        from selfinstruct.pipeline import start_run

        run_id = start_run(pool, RunConfig(backend="openai-compatible", base_url=server.base_url,
                                           model="selfinstruct-demo", rounds=1))
        pool.runs.set_status(run_id, "paused")
        at.run()
        at.button(key="gen_resume").click().run()
        assert not at.exception
        _wait_idle(at, app_env)
        assert pool.runs.get(run_id)["status"] == "finished"
        assert server.seen and not any(CANARY in header for header in server.seen)

        # the library's own resume path, as the app's JobManager uses it
        from selfinstruct.jobs import JobManager

        seen = len(server.seen)
        pool.runs.set_status(run_id, "stopped")
        manager = JobManager(pool)
        manager.resume(run_id, overrides={"rounds": 2})
        assert manager.wait(90)
        assert len(server.seen) > seen and not any(CANARY in h for h in server.seen)


def test_an_endpoints_error_text_is_shown_literally(app_env, canary):
    with RecordingServer(latency_s=0.0, refuse=MARKDOWN) as server:
        at = _generate_page(app_env)
        at.segmented_control(key="gen_backend").set_value("compatible").run()
        at.text_input(key="gen_base_url_compatible").input(server.base_url).run()
        at.text_input(key="gen_model_compatible").input("selfinstruct-demo").run()
        at.button(key="gen_test").click().run()
        assert any(MARKDOWN in t.value for t in at.text), [t.value for t in at.text]
        at.button(key="gen_start").click().run()
        _wait_idle(at, app_env)
        assert not at.exception
        assert MARKDOWN in app_pool(app_env).runs.get(1)["error"]
        assert any(MARKDOWN in t.value for t in at.text)
        # nowhere as markdown: not in alerts, markdown, captions or toasts
        rendered = [e.value for kind in ("error", "warning", "info", "success", "caption", "markdown", "toast")
                    for e in at.get(kind)]
        assert not any("![x]" in value or "**boom**" in value for value in rendered), rendered
        assert not any(CANARY in header for header in server.seen)
