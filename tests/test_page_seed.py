
from tests.conftest import app_pool, open_page

class Upload:
    """What st.file_uploader hands the page: a name and the bytes."""

    def __init__(self, name: str, data: bytes):
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def test_load_starter_seeds_and_see_the_count_on_home(app_env):
    at = open_page("pages/seed.py")
    at.button(key="load_starter").click().run()
    assert not at.exception
    assert any("Loaded" in s.value for s in at.success)
    n = int(at.success[0].value.split()[1])
    assert n >= 40
    assert any(f"{n:,} seed tasks" in h.value for h in at.subheader)
    at.switch_page("pages/home.py").run()
    assert at.metric[0].value == f"{n:,}"


def test_bad_upload_shows_errors_row_by_row_and_writes_nothing(app_env, monkeypatch):
    at = open_page("pages/seed.py")
    bad = b'{"instruction": "Name two oceans."}\n{broken\n{"instruction": 7}\n'
    import streamlit as st
    monkeypatch.setattr(st, "file_uploader", lambda *a, **k: Upload("bad.jsonl", bad))
    at.run()
    at.button(key="seed_import").click().run()
    assert not at.exception
    assert "nothing was imported" in at.error[0].value
    lines = at.code[0].value.splitlines()
    assert lines[0].startswith("line 2: Not valid JSON") and lines[1].startswith("line 3: ")
    assert "must be text" in lines[1] and len(lines) == 2
    assert any("0 seed tasks" in h.value for h in at.subheader)


def test_edit_a_seed_and_find_it_in_duckdb(app_env):
    at = open_page("pages/seed.py")
    at.button(key="load_starter").click().run()
    at.session_state["seed_editor"] = {
        "edited_rows": {0: {"instruction": "Explain the rule of thirds to a beginner cook."}},
        "added_rows": [], "deleted_rows": [],
    }
    at.run()
    at.button(key="seed_save").click().run()
    assert not at.exception
    assert any("Saved: 1 edited" in s.value for s in at.success)
    pool = app_pool(app_env)
    first = pool.seed_tasks()[0]
    assert first["instruction"] == "Explain the rule of thirds to a beginner cook."
    assert pool.audit_entries(action="edit_seed")[0]["after"]["instruction"] == first["instruction"]
