"""What every page shares: the open pool, who is acting and what they may do, the sidebar.
Not a page itself. The team rules live in selfinstruct/access.py; this module only asks them."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from selfinstruct import access, datadir
from selfinstruct.jobs import JobManager
from selfinstruct.render import escape_markdown
from selfinstruct.store import Pool, PoolError, default_db_path


@st.cache_resource(show_spinner=False)
def _open_pool(path: str) -> Pool:
    # One Pool per file per process: DuckDB allows a single writer per file.
    return Pool.open(path)


@st.cache_resource(show_spinner=False)
def _job_manager(path: str) -> JobManager:
    # One background runner per pool file, shared by every browser session. Never evicted: an
    # evicted manager once let a second run start beside a running one (the engine now also
    # refuses that, per process).
    return JobManager(_open_pool(path))


def job_manager() -> JobManager:
    """The background runner of this session's pool (open the pool with current_pool() first)."""
    return _job_manager(pool_path())


def pool_path() -> str:
    return st.session_state.get("db_path") or str(default_db_path())


_navigation_ready = False


def navigation_ready() -> None:
    """Called by app.py once st.navigation has run in this process."""
    global _navigation_ready
    _navigation_ready = True


def current_pool() -> Pool:
    """The pool this browser session works on; stops the page with a plain message
    when the file cannot be opened."""
    if not _navigation_ready:
        # A page opened by its URL before any session ran app.py: Streamlit then runs the
        # file on its own (it still sees a pages/ folder). Go through app.py instead.
        st.switch_page("app.py")
    if current_role() is None:  # app.py shows such a session only its login; never a pool
        st.stop()
    try:
        return _open_pool(pool_path())
    except PoolError as exc:
        st.error(escape_markdown(str(exc)), icon=":material/lock:")   # quotes a path and DuckDB
        st.stop()


def current_user() -> str:
    """Who is acting in this browser session (recorded in the audit log and on labels): in team
    mode the login's email, else the name typed in the sidebar."""
    if team_config().enabled:
        return access.normalize_email(st.user.get("email")) if _logged_in() else ""
    return (st.session_state.get("user_name") or "").strip() or "user"


# -- team mode: who is logged in and what they may do ----------------------------------------
def team_config() -> access.TeamConfig:
    """Team mode and roles from the server's secrets (raises access.TeamConfigError)."""
    if not st.secrets.load_if_toml_exists():
        # Fail closed: a secrets file that exists but does not parse must not quietly turn a
        # team's server into an unguarded single-user app.
        unreadable = [p for p in st.get_option("secrets.files") if Path(p).is_file()]
        if unreadable:
            raise access.TeamConfigError(f"{unreadable[0]} is not valid TOML, so the login cannot be "
                                         "set up; fix the file and restart the app.")
        return access.TeamConfig()
    return access.TeamConfig.from_secrets(st.secrets.to_dict())


def _logged_in() -> bool:
    return bool(st.user.get("is_logged_in"))


def current_role() -> str | None:
    """This session's role: owner or annotator; None when logged out or not on the team."""
    config = team_config()
    if config.enabled and not _logged_in():
        return None
    return config.role_of(st.user.get("email"), email_verified=st.user.get("email_verified"))


def allowed(action: str) -> bool:
    """Whether this session may take `action` (see selfinstruct.access.ACTIONS)."""
    return access.may(current_role(), action)


def require(action: str) -> None:
    """Stop the run, with a plain message, unless this session may take `action`. A page hides
    what a role may not use; this is the check behind it, where the change is made."""
    if not allowed(action):
        st.error(f"Your role cannot do this ({action}); ask an owner of this studio.", icon=":material/block:")
        st.stop()


def act_and_rerun(pool: Pool, fn, *args, actor: str, flash_key: str, done, **kwargs) -> None:
    """Run one audited change (selfinstruct.actions) and rerun, keeping its message under
    `flash_key` for show_flash on the next run (and its batch under `<flash_key>_batch`, for a
    page that opens its undo). `done` is the success sentence, or a function of the Outcome."""
    from selfinstruct.actions import ActionError

    require("edit")
    try:
        outcome = fn(pool, *args, actor=actor, **kwargs)
    except (ActionError, PoolError) as exc:
        st.session_state[flash_key] = ("error", str(exc))
    else:
        if outcome.skipped and not outcome.done:   # an undo refused: the sentence says why
            st.session_state[flash_key] = ("error", outcome.skipped[0][1])
        else:
            st.session_state[f"{flash_key}_batch"] = outcome.batch
            st.session_state[flash_key] = ("success", done(outcome) if callable(done) else done)
    st.rerun()


def show_flash(flash_key: str) -> None:
    """The message act_and_rerun kept, once."""
    if message := st.session_state.pop(flash_key, None):
        kind, text = message
        (st.success if kind == "success" else st.error)(text)


def ask_for_name(doing: str) -> None:
    """Where a page that records who did what sends a person who has not named themselves: the
    one name box, the sidebar's (issue 26: the Label and Evaluate pages had boxes of their own)."""
    st.info(f"Type your name in **Your name** in the sidebar to start {doing}: it is recorded with every "
            "label, rating and change you make, so several people can work on the same study and their "
            "agreement can be measured.", icon=":material/person:")


def pause_and_stop(prefix: str, status) -> None:
    """Pause and Stop for the job going on (a generation or judge run), next to its progress."""
    b1, b2, _ = st.columns([1, 1, 4])
    if b1.button("Pause", key=f"{prefix}_pause", icon=":material/pause:", disabled=status.state != "running"):
        job_manager().pause()
        st.rerun(scope="app")
    if b2.button("Stop", key=f"{prefix}_stop", icon=":material/stop:", disabled=status.state == "stopping"):
        job_manager().stop()
        st.rerun(scope="app")


def page_link(page: str, label: str, icon: str | None = None) -> None:
    """st.page_link, shown only when this session may open that page."""
    if access.may(current_role(), access.PAGES[Path(page).stem]):
        st.page_link(page, label=label, icon=icon)


def gate() -> str:
    """Called by app.py before its navigation. In team mode a session that is not logged in
    sees only the login, and one whose email has no role only a plain message; either way the
    run stops there, before any pool is opened. Returns the session's role."""
    try:
        config = team_config()
    except access.TeamConfigError as exc:
        message = escape_markdown(str(exc))   # it quotes TOML and a path: show them as typed
        _only("Setup error", lambda: st.error(message, icon=":material/settings_alert:"))
    if not config.enabled:
        return access.OWNER
    if not _logged_in():
        _only("Log in", _login_screen)
    role = current_role()
    if role is None:
        _only("No access", lambda: _no_role_screen(config))
    return role


def _only(title: str, screen) -> None:
    # Through st.navigation, so this session's routes hold this one screen: any page URL lands
    # here, and Streamlit stops treating pages/ as pages of their own.
    st.navigation([st.Page(screen, title=title, default=True)], position="hidden").run()
    st.stop()


def _login_screen() -> None:
    st.title("selfinstruct")
    st.write("This studio is shared by a team. Log in with your organisation's account to continue.")
    auth = st.secrets.to_dict().get("auth", {})
    for provider in access.login_providers(auth):
        name = f"Log in with {provider.title()}" if provider else "Log in"
        if st.button(name, key=f"login_{provider or 'default'}", type="primary", icon=":material/login:"):
            if problem := access.provider_problem(auth, provider):
                st.error("The login cannot start: the identity provider is not reachable. Nothing is wrong "
                         "with your account; try again in a minute, or tell the studio's owner if it lasts.",
                         icon=":material/cloud_off:")
                st.text(problem)   # quotes a URL and a system message: plain text
                st.button("Try again", key="login_retry", icon=":material/refresh:")
            elif provider:
                st.login(provider)
            else:
                st.login()


def _no_role_screen(config: access.TeamConfig) -> None:
    st.title("selfinstruct")
    email = current_user()
    if email and config.role_of(email, email_verified=True) is not None:
        # On the team, but the provider marked the address unverified (issue 26): say so, not
        # "not on the team".
        st.text(f"You are logged in as {email}, an address on this studio's team, but your identity "
                "provider did not verify it, so anyone could have typed it. Verify the address with "
                "your provider (its account settings), then log out and in again.")
        if st.button("Log out", key="logout", icon=":material/logout:"):
            st.logout()
        return
    st.text(f"You are logged in as {email or 'an account without an email'}, but you are not "
            "on this studio's team. Ask the owner to add you.")
    if not config.has_team_section:
        st.caption("The server's secrets have no [team] section yet, so nobody has a role.")
    if st.button("Log out", key="logout", icon=":material/logout:"):
        st.logout()


def pool_sidebar() -> None:
    with st.sidebar:
        if team_config().enabled:
            st.text(f"{current_user()} · {current_role()}")
            if st.button("Log out", key="logout", icon=":material/logout:"):
                st.logout()
        else:
            # The name lives under a plain key, which outlives the box (a page that runs without
            # the sidebar, as in a test, does not forget it); the box shows and sets it.
            st.session_state.setdefault("user_name_box", st.session_state.get("user_name", ""))
            st.text_input("Your name", key="user_name_box", placeholder="user", on_change=_adopt_name,
                          help="Recorded with every change you make and every label and rating you give.")
        if allowed("settings"):
            _pool_file_box()
        try:
            busy = job_manager().status().busy
        except PoolError:  # the page itself reports a pool it cannot open
            return
        st.fragment(run_every=2 if busy else None)(_job_status_line)()


def _adopt_name() -> None:
    st.session_state["user_name"] = (st.session_state.get("user_name_box") or "").strip()


def _pool_file_box() -> None:
    with st.expander("Pool file", icon=":material/database:"):
        open_now = datadir.shown(Path(pool_path()))
        new_path = st.text_input("DuckDB file", value=open_now, key="db_path_input",
                                 help="Every seed, run, candidate and label lives in this one file, "
                                      "a .duckdb file in the app's data directory.")
        if st.button("Open", key="db_path_open") and new_path.strip() != open_now:
            st.session_state.pop("db_path_new", None)
            try:   # a visitor's path: only inside the data directory (datadir.py)
                chosen = datadir.confined_path(new_path, suffixes=(".duckdb",))
            except datadir.PathRefused as exc:
                st.error("Not opened.", icon=":material/block:")
                st.text(str(exc))   # quotes the typed name: plain text
            else:
                if chosen.exists():
                    st.session_state["db_path"] = str(chosen)
                    st.rerun()
                # a typo would otherwise make a new, empty pool (and its folders) without a word
                st.session_state["db_path_new"] = str(chosen)
        pending = st.session_state.get("db_path_new")
        if pending:
            st.warning("There is no pool file " + escape_markdown(datadir.shown(Path(pending))) +
                       ". Create a new, empty pool there?", icon=":material/help:")
            yes, no = st.columns(2)
            if yes.button("Create", key="db_path_create", icon=":material/add:"):
                st.session_state["db_path"] = st.session_state.pop("db_path_new")
                st.rerun()
            if no.button("Cancel", key="db_path_cancel"):
                st.session_state.pop("db_path_new", None)
                st.rerun()
        st.caption("Open: " + escape_markdown(open_now))


def _job_status_line() -> None:
    manager = job_manager()
    status = manager.status()
    size = manager.pool.counts()
    icon = ":material/autorenew:" if status.busy else ":material/pause_circle:"
    st.caption(f"{icon} {status.line(size.seeds + size.accepted)}")
