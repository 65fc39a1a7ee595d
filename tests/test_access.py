"""Team rules (selfinstruct/access.py), without Streamlit: who has which role, what each role may
open and do, and how a bad [team] section is reported."""
import pytest

from selfinstruct import access
from selfinstruct.access import ANNOTATOR, OWNER, TeamConfig, TeamConfigError

AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
        "client_id": "studio", "client_secret": "s", "server_metadata_url": "https://id.example/.well-known"}


def team(**lists) -> TeamConfig:
    return TeamConfig.from_secrets({"auth": AUTH, "team": lists})


def test_no_auth_section_is_local_mode_where_the_one_user_owns_everything():
    for secrets in (None, {}, {"team": {"owners": ["ada@example.com"]}}, {"OPENAI_API_KEY": "sk-x"}):
        config = TeamConfig.from_secrets(secrets)
        assert not config.enabled
        assert config.role_of(None) == OWNER
        assert config.role_of("anyone@example.com") == OWNER


def test_roles_by_email_compared_case_insensitively_owner_first():
    config = team(owners=["Ada@Example.com "], annotators=["grace@example.com", "ADA@example.com"])
    assert config.enabled and config.has_team_section
    assert config.role_of("ada@example.com") == OWNER          # also an annotator: stays an owner
    assert config.role_of("  ADA@EXAMPLE.COM") == OWNER
    assert config.role_of("Grace@Example.COM") == ANNOTATOR
    assert config.role_of("mallory@example.com") is None
    assert config.role_of("") is None and config.role_of(None) is None


def test_an_email_the_provider_marks_unverified_has_no_role():
    config = team(owners=["ada@example.com"], annotators=["grace@example.com"])
    assert config.role_of("ada@example.com", email_verified=False) is None
    assert config.role_of("grace@example.com", email_verified=False) is None
    assert config.role_of("ada@example.com", email_verified=True) == OWNER
    assert config.role_of("ada@example.com", email_verified=None) == OWNER   # claim not sent


def test_auth_without_a_team_section_gives_nobody_a_role():
    config = TeamConfig.from_secrets({"auth": AUTH})
    assert config.enabled and not config.has_team_section
    assert config.role_of("ada@example.com") is None


@pytest.mark.parametrize("team_section, words", [
    ({"owners": "ada@example.com"}, 'owners must be a list of emails in brackets, like owners = ["you'),
    ({"annotators": 3}, "annotators must be a list of emails"),
    ({"owners": ["ada@example.com", "bob"]}, "owners: entry 2 is not an email address"),
    ({"annotators": [None]}, "annotators: entry 1 is not an email address"),
    ("ada@example.com", "[team] must be a section"),
])
def test_a_bad_team_section_is_refused_with_what_to_fix(team_section, words):
    with pytest.raises(TeamConfigError) as exc:
        TeamConfig.from_secrets({"auth": AUTH, "team": team_section})
    assert words in str(exc.value)
    assert "ada@" not in str(exc.value) and "bob" not in str(exc.value)   # shown to anyone


def test_owners_may_do_everything_annotators_label_and_read():
    for action in access.ACTIONS:
        assert access.may(OWNER, action)
    assert {a for a in access.ACTIONS if access.may(ANNOTATOR, a)} == {"read", "label"}
    for action in access.ACTIONS:
        assert not access.may(None, action)
    with pytest.raises(KeyError, match="Unknown action 'rescu'"):
        access.may(OWNER, "rescu")


def test_pages_per_role_and_where_each_lands():
    assert access.pages_for(OWNER) == ["home", "seed", "generate", "rejects", "pool", "topics", "label", "judge",
                                       "evaluate", "export"]
    assert access.pages_for(ANNOTATOR) == ["rejects", "pool", "topics", "label", "evaluate"]
    assert access.pages_for(None) == []
    assert access.landing_page(OWNER) == "home" and access.landing_page(ANNOTATOR) == "label"
    assert access.landing_page(None) is None
    for role in access.ROLES:
        assert access.landing_page(role) in access.pages_for(role)


def test_every_page_file_has_a_rule():
    from tests.conftest import ROOT

    files = {p.stem for p in (ROOT / "pages").glob("*.py")} - {"__init__", "common", "endpoint",
                                                                "keyqueue"}   # shared, not pages
    assert files == set(access.PAGES)


def test_login_providers():
    assert access.login_providers(AUTH) == [None]
    assert access.login_providers({"redirect_uri": "x", "cookie_secret": "y",
                                   "microsoft": {"client_id": "a"}, "google": {"client_id": "b"}}) == [
        "google", "microsoft"]
