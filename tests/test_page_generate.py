"""The Generate page through AppTest, with real background runs against the offline server."""
import time

from streamlit.testing.v1 import AppTest

from selfinstruct.offline import OfflineServer
from tests.conftest import app_pool, open_page



def open_generate(db_path) -> AppTest:
    at = open_page("pages/seed.py")
    at.button(key="load_starter").click().run()
    at.switch_page("pages/generate.py").run()
    assert not at.exception
    return at


def manager(db_path):
    from pages.common import _job_manager
    return _job_manager(str(db_path))


def wait_for(at: AppTest, condition, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            at.run()
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def table_with(at: AppTest, column: str):
    """The page's dataframe that has `column` (AppTest does not expose dataframe keys)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def use_endpoint(at: AppTest, server: OfflineServer, key: str | None = None) -> None:
    at.segmented_control(key="gen_backend").set_value("compatible").run()
    at.text_input(key="gen_base_url_compatible").input(server.base_url).run()
    at.text_input(key="gen_model_compatible").input("selfinstruct-demo").run()
    if key:
        at.text_input(key="gen_api_key").input(key).run()


def test_demo_run_numbers_on_the_page_equal_app_pool(app_env):
    at = open_generate(app_env)
    at.segmented_control(key="gen_backend").set_value("offline").run()   # the default is the local model
    at.number_input(key="gen_rounds").set_value(2).run()
    at.button(key="gen_start").click().run()
    assert not at.exception
    wait_for(at, lambda: not manager(app_env).status().busy)
    assert not at.exception
    pool = app_pool(app_env)
    counts = pool.counts()
    assert counts.rounds == 2 and pool.runs.get(1)["status"] == "finished"
    assert metric(at, "Rounds done") == "2"
    assert metric(at, "Accepted") == f"{counts.accepted:,}"
    assert metric(at, "Rejected") == f"{counts.rejected:,}"
    table = table_with(at, "step")
    assert list(table["round"]) == [1, 2]
    assert int(table["accepted"].sum()) == counts.accepted
    assert any("Run 1 finished" in m.value for m in at.markdown)
    newest = table_with(at, "instruction")
    assert len(newest) == 10 and set(newest["instruction"]) <= set(pool.runs.machine_instructions())


def test_without_a_key_the_local_model_is_the_default(app_env, monkeypatch, tmp_path):
    """The page offers the bundled GGUF and the .gguf files in the models folder (never a typed
    path), in completion mode, with the local server's concurrency."""
    from selfinstruct import local

    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny-base.Q8_0.gguf").write_bytes(b"GGUF" + bytes(60))
    (models / "notes.txt").write_text("not a model")
    monkeypatch.setenv(local.MODELS_ENV_VAR, str(models))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    at = open_generate(app_env)
    assert at.segmented_control(key="gen_backend").value == "local"
    files = at.selectbox(key="gen_gguf")
    assert files.options == ["SmolLM2-135M-Instruct.Q4_1 (bundled)", "tiny-base.Q8_0"]
    assert at.segmented_control(key="gen_mode_local").value == "completion"
    assert at.number_input(key="gen_concurrency_local").value == 2
    assert not [t for t in at.text_input if t.key == "gen_base_url_local"]   # no path or URL to type
    at.selectbox(key="gen_gguf").set_value(str(models / "tiny-base.Q8_0.gguf")).run()
    assert not at.exception
    at.segmented_control(key="gen_backend").set_value("compatible").run()
    assert at.segmented_control(key="gen_mode").value == "chat"
    assert at.number_input(key="gen_concurrency").value == 8


def test_pause_resume_and_stop(app_env):
    with OfflineServer(latency_s=0.15) as server:
        at = open_generate(app_env)
        use_endpoint(at, server)
        at.number_input(key="gen_rounds").set_value(3).run()
        at.number_input(key="gen_concurrency").set_value(2).run()
        at.button(key="gen_start").click().run()
        jobs = manager(app_env)
        wait_for(at, lambda: jobs.status().done >= 3)
        at.button(key="gen_pause").click().run()
        wait_for(at, lambda: not jobs.status().busy)
        pool = app_pool(app_env)
        assert pool.runs.get(1)["status"] == "paused"
        assert any("Run 1 is paused" in m.value for m in at.markdown)
        # said once: not "Run 1 is paused (paused)"
        assert not any("paused (paused)" in m.value or "paused: paused" in m.value for m in at.markdown)
        at.button(key="gen_resume").click().run()
        assert jobs.status().busy
        wait_for(at, lambda: jobs.status().round >= 2)
        at.button(key="gen_stop").click().run()
        wait_for(at, lambda: not jobs.status().busy)
        assert pool.runs.get(1)["status"] == "stopped"
        assert any("Run 1 was stopped" in m.value for m in at.markdown)
        assert not any("stopped (stopped)" in m.value for m in at.markdown)
        # The run picker's labels hold nothing that goes stale while a run changes state.
        picker = at.selectbox(key="gen_view_run")
        assert all(word not in option for option in picker.options
                   for word in ("running", "paused", "stopped", "finished"))
        assert not at.exception


def test_settings_start_from_the_pools_newest_run(app_env):
    """A visit shows the settings of this pool's newest run, not the defaults again."""
    with OfflineServer() as server:
        at = open_generate(app_env)
        use_endpoint(at, server)
        at.number_input(key="gen_rounds").set_value(1).run()
        at.number_input(key="gen_requests").set_value(3).run()
        at.number_input(key="gen_temperature").set_value(0.9).run()
        at.slider(key="gen_threshold").set_value(0.65).run()
        at.button(key="gen_start").click().run()
        wait_for(at, lambda: not manager(app_env).status().busy)
        again = open_page("pages/generate.py")     # a new visit: a fresh session
        assert not again.exception
        assert again.segmented_control(key="gen_backend").value == "compatible"
        assert again.text_input(key="gen_base_url_compatible").value == server.base_url
        assert again.text_input(key="gen_model_compatible").value == "selfinstruct-demo"
        assert again.number_input(key="gen_rounds").value == 1
        assert again.number_input(key="gen_requests").value == 3
        assert again.number_input(key="gen_temperature").value == 0.9
        assert again.slider(key="gen_threshold").value == 0.65
        assert any("settings of run 1" in c.value for c in again.caption)


def test_failing_endpoint_shows_the_error_and_stops_cleanly(app_env):
    with OfflineServer(api_key="sk-right") as server:
        at = open_generate(app_env)
        use_endpoint(at, server, key="sk-wrong")
        at.button(key="gen_test").click().run()
        assert at.error[0].value == "The connection test failed." and any("401" in t.value for t in at.text)
        at.button(key="gen_start").click().run()
        wait_for(at, lambda: not manager(app_env).status().busy)
    assert not at.exception
    pool = app_pool(app_env)
    run = pool.runs.get(1)
    assert run["status"] == "failed" and "401" in run["error"]
    assert any("401" in t.value for t in at.text)
    assert any("Check the API key" in e.value for e in at.error)
    assert "Traceback" not in " ".join(e.value for e in at.error)


def test_server_errors_are_counted_in_plain_words(app_env):
    with OfflineServer() as server:
        server.faults.push("500", count=10_000)
        at = open_generate(app_env)
        use_endpoint(at, server)
        # no probe: one that gets no answer is sent again (issue 22 item 5); this test counts requests
        at.segmented_control(key="gen_structured").set_value("off").run()
        at.number_input(key="gen_rounds").set_value(1).run()
        at.number_input(key="gen_requests").set_value(2).run()
        app_pool(app_env)
        at.button(key="gen_start").click().run()
        wait_for(at, lambda: not manager(app_env).status().busy, timeout=120)
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("2 request(s) failed (server)") for w in warnings), warnings
    assert app_pool(app_env).runs.get(1)["status"] == "failed"
    assert any("kept failing" in t.value for t in at.text)


def test_interrupted_run_is_shown_with_resume(app_env):
    at = open_generate(app_env)
    pool = app_pool(app_env)
    from selfinstruct.settings import RunConfig
    from selfinstruct.pipeline import start_run
    run_id = start_run(pool, RunConfig(rounds=1))
    pool.runs.set_status(run_id, "running")   # as if the app had died mid-run
    import streamlit as st
    st.cache_resource.clear()                 # an app restart: new pool handle and job manager
    at = open_page("pages/generate.py")
    assert any(f"Run {run_id} was interrupted" in m.value for m in at.markdown)
    assert "interrupted" in app_pool(app_env).runs.get(run_id)["status"]
    at.button(key="gen_resume").click().run()
    wait_for(at, lambda: not manager(app_env).status().busy)
    assert app_pool(app_env).runs.get(run_id)["status"] == "finished"


def test_batch_choice_runs_through_the_batch_api(app_env):
    with OfflineServer(batch_delay_s=0.2) as server:
        at = open_generate(app_env)
        use_endpoint(at, server)
        at.number_input(key="gen_rounds").set_value(1).run()
        at.number_input(key="gen_requests").set_value(2).run()
        at.toggle(key="gen_batch").set_value(True).run()
        at.number_input(key="gen_batch_poll").set_value(0.2).run()
        at.button(key="gen_start").click().run()
        assert not at.exception
        wait_for(at, lambda: not manager(app_env).status().busy, timeout=60)
        assert server.stats["batches_created"] >= 3      # instructions, then classification, then instances
    pool = app_pool(app_env)
    run = pool.runs.get(1)
    assert run["status"] == "finished" and run["config"]["batch"] is True
    assert all(b["status"] == "completed" for b in pool.requests.batches(1))
    assert pool.runs.accepted_count(1) > 0
    batches = table_with(at, "provider id")
    assert len(batches) == len(pool.requests.batches(1)) and set(batches["status"]) == {"completed"}


def test_home_and_generate_count_the_same_rounds_done(app_env):
    """A round is done when its step is done (model.is_round_done): rounds planned or half
    answered count on neither page (Home said "Rounds 5" where Generate said "Rounds done 0")."""
    from selfinstruct.settings import RunConfig
    from selfinstruct.pipeline import start_run

    at = open_generate(app_env)
    pool = app_pool(app_env)
    run_id = start_run(pool, RunConfig(backend="offline", rounds=6))
    rounds = [pool.runs.create_round(run_id, n, "generate") for n in range(1, 6)]
    pool.runs.set_round_step(rounds[0], "done")
    pool.runs.set_round_step(rounds[1], "classify")
    at.run()
    assert not at.exception
    assert metric(at, "Rounds done") == "1"
    at.switch_page("pages/home.py").run()
    assert not at.exception
    assert metric(at, "Rounds done") == "1"
    assert pool.counts().rounds == 1


def test_a_local_run_resumes_with_other_threads(app_env):
    """A local run slowed by a busy CPU resumes with fewer threads: the page offers the field."""
    from selfinstruct.settings import RunConfig
    from selfinstruct.pipeline import start_run

    at = open_generate(app_env)
    pool = app_pool(app_env)
    run_id = start_run(pool, RunConfig(backend="local", model="SmolLM2-135M-Instruct.Q4_1", threads=2, rounds=1))
    pool.runs.set_status(run_id, "interrupted", stop_reason="interrupted")
    at.run()
    assert not at.exception
    assert at.number_input(key=f"gen_fix_threads_{run_id}").value == 2
