import io
import json


from tests.conftest import app_pool, open_page

class Upload(io.BytesIO):
    """What st.file_uploader hands the page: a file object with a name and a size."""

    def __init__(self, name: str, data: bytes):
        super().__init__(data)
        self.name, self.size = name, len(data)


def upload(monkeypatch, name: str, data: bytes) -> None:
    import streamlit as st
    monkeypatch.setattr(st, "file_uploader", lambda *a, **k: Upload(name, data))


def progress_bars(at) -> list:
    return [el for el in at.get("progress")]


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
    first = pool.seeds.seed_tasks()[0]
    assert first["instruction"] == "Explain the rule of thirds to a beginner cook."
    assert pool.audit.entries(action="edit_seed")[0]["after"]["instruction"] == first["instruction"]


ROWS = [{"instruction": "Name two oceans.", "input": "", "output": "Atlantic, Pacific"},
        {"instruction": "Reverse the word.", "input": "stone", "output": "enots"},
        {"instruction": "Name two oceans.", "input": "", "output": "Indian, Arctic"}]


def test_upload_shows_a_progress_bar_and_a_reimport_is_an_info_naming_the_reason(app_env, monkeypatch):
    at = open_page("pages/seed.py")
    upload(monkeypatch, "oceans.json", json.dumps(ROWS, indent=2).encode())
    at.run()
    at.button(key="seed_import").click().run()
    assert not at.exception
    assert [b.proto.value for b in progress_bars(at)] == [100]
    assert "Read oceans\\.json" in progress_bars(at)[0].proto.text
    assert "Imported 2 task(s) with 3 instance(s)" in at.success[0].value and not at.info
    assert any("2 seed tasks" in h.value for h in at.subheader)
    # the same file again: nothing new, said as an info with the reason per line
    at.button(key="seed_import").click().run()
    assert not at.exception and not at.success and not at.error
    message = at.info[0].value
    assert message.startswith("Nothing new was imported from oceans")
    assert "3 line(s) already in the pool (2, 7, 12)" in message
    assert progress_bars(at)
    assert any("2 seed tasks" in h.value for h in at.subheader)


def test_nested_json_and_nul_are_one_line_problems_on_the_page(app_env, monkeypatch):
    at = open_page("pages/seed.py")
    nested = '{"instruction": "Name a fruit."}\n{"instruction": ' + "[" * 50_000 + "]" * 50_000 + "}\n"
    nul = json.dumps({"instruction": "Spell it.", "instances": [{"input": "", "output": "a\u0000b"}]})
    upload(monkeypatch, "bad.jsonl", (nested + nul + "\n").encode())
    at.run()
    at.button(key="seed_import").click().run()
    assert not at.exception
    assert "2 problem(s); nothing was imported" in at.error[0].value
    lines = at.code[0].value.splitlines()
    assert lines[0].startswith("line 2: The JSON is nested too deeply")
    assert lines[1].startswith('line 3: instance 1: "output" holds a NUL character')
    assert any("0 seed tasks" in h.value for h in at.subheader)
