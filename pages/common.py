"""What every page shares: the open pool and the sidebar. Not a page itself."""
from __future__ import annotations

import streamlit as st

from selfinstruct.jobs import JobManager
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
    try:
        return _open_pool(pool_path())
    except PoolError as exc:
        st.error(str(exc), icon=":material/lock:")
        st.stop()


def current_user() -> str:
    """Who is acting in this browser session (recorded in the audit log and on labels)."""
    return (st.session_state.get("user_name") or "").strip() or "user"


def pool_sidebar() -> None:
    with st.sidebar:
        st.text_input("Your name", key="user_name", placeholder="user",
                      help="Recorded with every change you make and every label you give.")
        with st.expander("Pool file", icon=":material/database:"):
            new_path = st.text_input("DuckDB file", value=pool_path(), key="db_path_input",
                                     help="Every seed, run, candidate and label lives in this one file.")
            if st.button("Open", key="db_path_open") and new_path.strip() != pool_path():
                st.session_state["db_path"] = new_path.strip()
                st.rerun()
            st.caption(f"Open: `{pool_path()}`")
        try:
            busy = job_manager().status().busy
        except PoolError:  # the page itself reports a pool it cannot open
            return
        st.fragment(run_every=2 if busy else None)(_job_status_line)()


def _job_status_line() -> None:
    manager = job_manager()
    status = manager.status()
    size = manager.pool.counts()
    icon = ":material/autorenew:" if status.busy else ":material/pause_circle:"
    st.caption(f"{icon} {status.line(size.seeds + size.accepted)}")
