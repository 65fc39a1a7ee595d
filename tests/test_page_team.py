"""Team mode through AppTest (st.secrets and st.user set by the test): the login gate, the pages
and controls per role, and the email as the recorded identity. The real login, in a browser
against a real OIDC provider, is tests/e2e/test_team_login.py."""
import pytest
from streamlit.testing.v1 import AppTest

from selfinstruct import access, quality
from selfinstruct.render import escape_markdown
from tests.conftest import ROOT, app_pool

AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "c" * 64,
        "client_id": "studio", "client_secret": "s",
        "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}
TEAM = {"owners": ["ada@example.com"], "annotators": ["grace@example.com"]}


def team_app(user: dict | None, page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    at.secrets = {"auth": AUTH, "team": TEAM}
    at.user = user or {"is_logged_in": False}
    at.run()
    assert not at.exception
    if page:
        at.switch_page(page).run()
        assert not at.exception
    return at


def logged_in(email: str, **claims) -> dict:
    return {"is_logged_in": True, "email": email, **claims}


def buttons(at: AppTest) -> set[str]:
    return {b.label for b in at.button}


def test_a_logged_out_visitor_gets_the_login_and_no_pool(app_env):
    at = team_app(None)
    assert [t.value for t in at.title] == ["selfinstruct"]
    assert buttons(at) == {"Log in"}
    assert not at.text_input and not at.sidebar.text
    assert not app_env.exists()          # no pool was opened (it would have been created)


@pytest.mark.parametrize("user", [logged_in("mallory@example.com"),
                                  logged_in("mallory@example.com", email_verified=False),
                                  {"is_logged_in": True}])
def test_a_login_with_no_role_gets_only_a_plain_message(app_env, user):
    at = team_app(user)
    assert "Ask the owner to add you." in at.text[0].value
    assert buttons(at) == {"Log out"}
    assert not app_env.exists()


def test_a_provider_that_is_down_is_named_with_a_way_back(app_env):
    # Issue 26: Streamlit's bare "Authentication error" page, with no way back. AUTH's provider
    # is a closed port: the login says so before sending anyone there, and offers to try again.
    at = team_app(None)
    at.button(key="login_default").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "The login cannot start: the identity provider is not reachable. Nothing is wrong with your account; "
        "try again in a minute, or tell the studio's owner if it lasts."]
    assert at.text[0].value.startswith(f"The login provider at {AUTH['server_metadata_url']} does not answer (")
    assert buttons(at) == {"Log in", "Try again"}
    assert not app_env.exists()


def test_an_address_on_the_team_but_unverified_is_told_the_real_reason(app_env):
    # Issue 26: it was told "you are not on this studio's team".
    at = team_app(logged_in("ada@example.com", email_verified=False))
    [text] = at.text
    assert text.value.startswith("You are logged in as ada@example.com, an address on this studio's team, but "
                                 "your identity provider did not verify it")
    assert "not on this studio's team" not in text.value
    assert buttons(at) == {"Log out"}
    assert not app_env.exists()


def test_a_bad_team_section_stops_everyone_with_what_to_fix(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    at.secrets = {"auth": AUTH, "team": {"owners": "ada@example.com"}}
    at.user = logged_in("ada@example.com")
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [escape_markdown(
        '[team] owners must be a list of emails in brackets, like owners = ["you@example.com"], '
        "not a single string.")]
    assert not at.button and not at.sidebar.text and not app_env.exists()


def test_an_annotator_has_label_pool_and_rejects_only(demo_app_env):
    at = team_app(logged_in("Grace@Example.com"))
    assert [t.value for t in at.title] == ["Quality study"]          # where annotators land
    assert at.sidebar.text[0].value == "grace@example.com · annotator"
    assert "db_path_input" not in [t.key for t in at.text_input]    # no pool-file box
    assert "label_annotator" not in [t.key for t in at.text_input]  # the login is the name
    assert not [b for b in at.button if b.key == "study_create"]
    for page in ("pages/generate.py", "pages/export.py", "pages/seed.py", "pages/home.py"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(page)


def test_an_annotator_reads_the_pool_and_rejects_without_changing_them(demo_app_env):
    pool = app_pool(demo_app_env)
    candidate = int(pool.explore.pool_browse(limit=1).iloc[0]["id"])
    instruction = pool.explore.pool_item(candidate)["instruction"]
    edits = {"Save instruction", "Approve", "Remove from the pool", "Save", "Drop"}
    rescues = {"rej_rescue", "rej_confirm", "rej_bulk_rescue", "rej_bulk_confirm"}
    for email, can_change in (("grace@example.com", False), ("ada@example.com", True)):
        at = team_app(logged_in(email), "pages/pool.py")
        at.number_input(key="pool_open").set_value(candidate).run()
        assert not at.exception
        assert buttons(at) & edits == (edits if can_change else set())
        assert (instruction in [t.value for t in at.text]) is not can_change    # read-only: plain text
        at = team_app(logged_in(email), "pages/rejects.py")
        assert {b.key for b in at.button} & rescues == (rescues if can_change else set())
        assert not [t for t in at.text_input if t.key in ("rej_why", "rej_one_why")] or can_change


def test_labels_and_the_audit_log_record_the_logins_email(demo_app_env):
    pool = app_pool(demo_app_env)
    study = quality.create_study(pool, "team", size=4, seed=3, actor="ada@example.com").study_id
    at = team_app(logged_in("GRACE@example.com"), "pages/label.py")
    at.button(key="label_all_yes").click().run()
    assert not at.exception
    labels = pool.quality.study_labels(study)
    assert [row["annotator"] for row in labels] == ["grace@example.com"]
    assert pool.audit.entries(action="label")[0]["actor"] == "grace@example.com"


def test_an_annotator_sees_only_their_queue_not_results_or_study_data(demo_app_env):
    pool = app_pool(demo_app_env)
    quality.create_study(pool, "team", size=4, seed=3, actor="ada@example.com")
    annotator = team_app(logged_in("grace@example.com"), "pages/label.py")
    assert annotator.segmented_control(key="label_view").options == ["Label items"]
    assert not [b for b in annotator.get("download_button")]
    owner = team_app(logged_in("ada@example.com"), "pages/label.py")
    assert owner.segmented_control(key="label_view").options == ["Label items", "Results", "Study data"]


def test_an_owner_has_every_page_and_the_pool_file_box(demo_app_env):
    at = team_app(logged_in("ada@example.com"))
    assert [t.value for t in at.title] == ["selfinstruct"]          # Home
    assert at.sidebar.text[0].value == "ada@example.com · owner"
    assert "db_path_input" in [t.key for t in at.text_input]
    for page in access.PAGES:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception


def test_a_secrets_file_that_does_not_parse_stops_instead_of_going_local(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit import config

    from pages.common import team_config

    broken = tmp_path / "secrets.toml"
    broken.write_text('[auth]\nclient_id = "unterminated\n')
    monkeypatch.setattr(st, "secrets", type(st.secrets)())    # a fresh, unparsed store
    files = config.get_option("secrets.files")
    config.set_option("secrets.files", [str(broken)])
    try:
        with pytest.raises(access.TeamConfigError, match="is not valid TOML"):
            team_config()
        broken.unlink()                                        # no file at all: local mode
        monkeypatch.setattr(st, "secrets", type(st.secrets)())
        assert not team_config().enabled
    finally:
        config.set_option("secrets.files", files)
