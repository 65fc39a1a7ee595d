"""Who may do what when the app is served to a team: the one home of these rules.

Team mode is on when the server's secrets (`.streamlit/secrets.toml`, never in git) have an
`[auth]` section: Streamlit's OIDC login then says who the visitor is, by the email claim, and
the `[team]` section of the same file gives each email a role:

    [team]
    owners = ["ada@example.com"]
    annotators = ["grace@example.com", "alan@example.com"]

Owners do everything. Annotators label and rate quality samples and read the Pool and Rejects
pages. A logged-in email in neither list gets nothing. Without `[auth]` (local, single user)
the one user is an owner. Pure Python: the pages ask `may()` and `pages_for()`; nothing here
imports Streamlit.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OWNER = "owner"
ANNOTATOR = "annotator"
ROLES = (OWNER, ANNOTATOR)

# Every action a page offers, and the roles that may take it. "read" is looking at the pool
# (Pool, Rejects); "label" is labeling and rating a study's items; "study" is drawing a new
# sample (it decides what everyone labels); "evaluate" is setting up a model evaluation and
# collecting its answers (rating them blind is "label"); "settings" is choosing the pool file and the like;
# "overview" is the Home page, an owner's dashboard whose next steps are seeding, generating and
# exporting.
ACTIONS: dict[str, frozenset[str]] = {
    "overview": frozenset({OWNER}),
    "read": frozenset({OWNER, ANNOTATOR}),
    "label": frozenset({OWNER, ANNOTATOR}),
    "seed": frozenset({OWNER}),
    "generate": frozenset({OWNER}),
    "rescue": frozenset({OWNER}),
    "edit": frozenset({OWNER}),
    "export": frozenset({OWNER}),
    "settings": frozenset({OWNER}),
    "study": frozenset({OWNER}),
    "judges": frozenset({OWNER}),
    "evaluate": frozenset({OWNER}),
}

# Each page (by its file's stem under pages/) and the action that opening it amounts to.
PAGES: dict[str, str] = {
    "home": "overview",
    "seed": "seed",
    "generate": "generate",
    "rejects": "read",
    "pool": "read",
    "topics": "read",
    "label": "label",
    "judge": "judges",
    "evaluate": "label",
    "export": "export",
}

# Where each role lands when it opens the app.
LANDING: dict[str, str] = {OWNER: "home", ANNOTATOR: "label"}


class TeamConfigError(ValueError):
    """The secrets' [team] section cannot be read; the message says what to fix."""


def normalize_email(email: object) -> str:
    """Emails compare case-insensitively (providers differ in the case they send back)."""
    return str(email or "").strip().lower()


def may(role: str | None, action: str) -> bool:
    """Whether `role` may take `action`. No role (an unlisted email) may do nothing."""
    if action not in ACTIONS:
        raise KeyError(f"Unknown action {action!r}; known: {', '.join(ACTIONS)}.")
    return role in ACTIONS[action]


def pages_for(role: str | None) -> list[str]:
    """The pages `role` may open, in the order of PAGES."""
    return [page for page, action in PAGES.items() if may(role, action)]


def landing_page(role: str | None) -> str | None:
    return LANDING.get(role) if role in ROLES else None


def login_providers(auth: Mapping) -> list[str | None]:
    """The providers the login screen offers for an [auth] section: None for the one provider
    configured in [auth] itself, else the name of each [auth.NAME] subsection (st.login(NAME))."""
    if "client_id" in auth or "server_metadata_url" in auth:
        return [None]
    return sorted(name for name, value in auth.items() if isinstance(value, Mapping))


def provider_problem(auth: Mapping, provider: str | None, *, timeout: float = 5.0) -> str | None:
    """Why the login provider cannot be used right now, in plain words (None: it answers). Asked
    before sending a person to it: Streamlit's own answer to a provider that is down is a bare
    "Authentication error" page with no way back (issue 26)."""
    import json
    import urllib.error
    import urllib.request

    section = auth if provider is None else auth.get(provider, {})
    url = str(section.get("server_metadata_url") or "")
    if not url:
        return None   # a provider Streamlit knows by name: nothing of ours to ask
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return f"The login provider answered {exc.code} ({exc.reason}) at {url}."
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return f"The login provider at {url} does not answer ({reason})."
    return None


@dataclass(frozen=True)
class TeamConfig:
    """Team mode (or not) and who holds which role, as read from the secrets."""

    enabled: bool = False
    owners: frozenset[str] = frozenset()
    annotators: frozenset[str] = frozenset()
    has_team_section: bool = False

    @classmethod
    def from_secrets(cls, secrets: Mapping | None) -> "TeamConfig":
        secrets = secrets or {}
        if "auth" not in secrets:
            return cls()
        team = secrets.get("team")
        if team is None:
            return cls(enabled=True)
        if not isinstance(team, Mapping):
            raise TeamConfigError("The secrets' [team] must be a section with owners and annotators, "
                                  'like [team] owners = ["you@example.com"].')
        lists = {key: _emails(team, key) for key in ("owners", "annotators")}
        return cls(enabled=True, owners=lists["owners"], annotators=lists["annotators"],
                   has_team_section=True)

    def role_of(self, email: object, *, email_verified: object = None) -> str | None:
        """The role of a logged-in email: owner first (an owner also listed as an annotator
        stays an owner), then annotator, else None. Outside team mode the one local user is
        the owner. An email the identity provider marks unverified has no role: anyone could
        have typed it."""
        if not self.enabled:
            return OWNER
        if email_verified is False:
            return None
        email = normalize_email(email)
        if not email:
            return None
        if email in self.owners:
            return OWNER
        if email in self.annotators:
            return ANNOTATOR
        return None


def _emails(team: Mapping, key: str) -> frozenset[str]:
    value = team.get(key, [])
    # The messages never repeat the values: a logged-out visitor may be the one who reads them.
    if isinstance(value, str):  # the common slip: owners = "ada@example.com"
        raise TeamConfigError(f'[team] {key} must be a list of emails in brackets, like '
                              f'{key} = ["you@example.com"], not a single string.')
    if not isinstance(value, (list, tuple)):
        raise TeamConfigError(f'[team] {key} must be a list of emails, like {key} = ["you@example.com"].')
    emails = []
    for position, entry in enumerate(value, 1):
        email = normalize_email(entry) if isinstance(entry, str) else ""
        if "@" not in email:
            raise TeamConfigError(f"[team] {key}: entry {position} is not an email address; list people "
                                  "by the email their login reports.")
        emails.append(email)
    return frozenset(emails)
