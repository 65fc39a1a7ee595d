"""Files stay in the data directory (issue 14): what a visitor types as a path is confined to
the app's data directory, for pool files and for exports written on the server; refusals say
the same words whether or not the path exists outside."""
import os

import pytest

from selfinstruct.datadir import DATA_DIR_ENV, PathRefused, confined_path, data_dir
from tests.conftest import app_pool, open_page


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    return path


def test_names_inside_are_resolved_and_everything_else_refused(root, tmp_path):
    assert confined_path("team.duckdb", root) == (root / "team.duckdb").resolve()
    assert confined_path("exports/../exports/a.jsonl", root) == (root / "exports" / "a.jsonl").resolve()
    assert confined_path(str(root / "b.zip"), root) == (root / "b.zip").resolve()
    outside = tmp_path / "secret.json"
    outside.write_text("{}")
    for text in ("../secret.json", "exports/../../secret.json", str(outside), "/etc/passwd", "/",
                 "..", ".", "", "   "):
        with pytest.raises(PathRefused):
            confined_path(text, root)
    # a symlink inside that leads out, as a file or as a folder on the way
    (root / "link.json").symlink_to(outside)
    (root / "out").symlink_to(tmp_path)
    for text in ("link.json", "out/secret.json", "out/new.jsonl"):
        with pytest.raises(PathRefused):
            confined_path(text, root)
    with pytest.raises(PathRefused, match="does not end in .duckdb"):
        confined_path("notes.txt", root, suffixes=(".duckdb",))


def test_the_files_selfinstruct_ships_with_are_never_written_over():
    from selfinstruct.datadir import DEFAULT_DATA_DIR

    for name in ("seed_tasks.jsonl", "exports/../demo_corpus.jsonl"):
        with pytest.raises(PathRefused, match="ships with"):
            confined_path(name, DEFAULT_DATA_DIR, suffixes=(".jsonl",))
    assert confined_path("exports/seed_tasks.jsonl", DEFAULT_DATA_DIR).name == "seed_tasks.jsonl"


def test_a_refusal_does_not_tell_whether_the_path_exists(root, tmp_path):
    (tmp_path / "there.txt").write_text("x")
    messages = []
    for name in ("there.txt", "not-there.txt"):
        with pytest.raises(PathRefused) as refused:
            confined_path(f"../{name}", root)
        messages.append(str(refused.value).replace(name, "NAME"))
    assert messages[0] == messages[1]
    with pytest.raises(PathRefused) as first:
        confined_path("/etc/passwd", root)
    with pytest.raises(PathRefused) as second:
        confined_path("/etc/no-such-file-here", root)
    assert str(first.value).replace("passwd", "N") == str(second.value).replace("no-such-file-here", "N")


def test_the_owner_sets_the_data_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    monkeypatch.delenv("SELFINSTRUCT_DB", raising=False)
    assert data_dir() == tmp_path / "elsewhere"
    from selfinstruct.store import default_db_path

    assert default_db_path() == tmp_path / "elsewhere" / "pool.duckdb"


# -- the app ---------------------------------------------------------------------------------
def _pool_file_box_script():
    # The sidebar's own box, run alone: AppTest reruns only the page after app.py's first run,
    # so the sidebar app.py draws cannot be clicked through AppTest.
    from pages.common import _pool_file_box

    _pool_file_box()


def _open_pool_file(at, text):
    at.text_input(key="db_path_input").input(text).run()
    at.button(key="db_path_open").click().run()
    assert not at.exception


def test_the_pool_file_box_opens_only_files_in_the_data_directory(app_env, tmp_path):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_pool_file_box_script, default_timeout=30).run()
    assert at.text_input(key="db_path_input").value == "pool.duckdb"
    before = sorted(os.listdir(tmp_path))
    for text in ("../elsewhere/pool.duckdb", str(tmp_path.parent / "x" / "pool.duckdb"), "/etc/passwd",
                 "/etc/no-such.duckdb"):
        _open_pool_file(at, text)
        assert [e.value for e in at.error] == ["Not opened."]
        said = at.text[-1].value
        assert "outside" in said and "exist" not in said, said
    assert not (tmp_path.parent / "x").exists() and not (tmp_path.parent / "elsewhere").exists()
    assert sorted(os.listdir(tmp_path)) == before
    (tmp_path / "escape.duckdb").symlink_to(tmp_path.parent / "escaped.duckdb")
    _open_pool_file(at, "escape.duckdb")
    assert at.error and not (tmp_path.parent / "escaped.duckdb").exists()

    _open_pool_file(at, "team/second.duckdb")     # inside, new: asked first, then created
    assert not at.error and "db_path" not in at.session_state
    at.button(key="db_path_create").click().run()
    assert not at.error
    assert at.session_state["db_path"] == str(tmp_path / "team" / "second.duckdb")
    from pages.common import _open_pool   # the app opens what the session chose

    assert _open_pool(at.session_state["db_path"]).path.exists()
    assert at.text_input(key="db_path_input").value == os.path.join("team", "second.duckdb")


def test_typed_names_follow_one_rule_for_control_characters_and_length(root, tmp_path):
    """Bidi controls (U+202E shows "fdp.exe" as "exe.pdf"), other invisible format characters and
    control characters are refused in every typed file name, and a name longer than the file
    system allows gets words, not an OSError: pool and export names (confined_path), a model
    file (local.resolve_gguf) and the CLI's --db and --out."""
    from selfinstruct import local
    from tests.conftest import run_cli

    for text in ("pool\u202egnp.duckdb", "a\u2066b.duckdb", "zero\u200bwidth.duckdb", "tab\there.duckdb",
                 "nul\x00.duckdb"):
        with pytest.raises(PathRefused, match="cannot hold U\\+"):
            confined_path(text, root, suffixes=(".duckdb",))
        with pytest.raises(local.LocalModelError, match="cannot hold U\\+"):
            local.resolve_gguf(str(tmp_path / text.replace(".duckdb", ".gguf")))
    for text in ("x" * 5000 + ".duckdb", "/".join(["folder"] * 900) + "/p.duckdb"):
        with pytest.raises(PathRefused, match="too long"):
            confined_path(text, root, suffixes=(".duckdb",))
    assert confined_path("équipe/données.duckdb", root) == (root / "équipe" / "données.duckdb").resolve()
    assert not list(root.iterdir())
    done = run_cli("info", "--db", str(tmp_path / "pool\u202egnp.duckdb"))
    assert done.returncode != 0 and "U+202E (RIGHT-TO-LEFT OVERRIDE)" in done.stderr, done.stderr
    done = run_cli("export", "--db", str(tmp_path / "p.duckdb"), "--format", "alpaca",
                   "--out", str(tmp_path / "out\u202enosj.json"))
    assert done.returncode != 0 and "U+202E" in done.stderr, done.stderr
    assert not [p for p in tmp_path.iterdir() if "\u202e" in p.name]


def test_the_pool_file_box_says_what_is_wrong_and_asks_before_creating(app_env, tmp_path):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_pool_file_box_script, default_timeout=30).run()
    before = sorted(os.listdir(tmp_path))
    _open_pool_file(at, "p" * 5000 + ".duckdb")      # an OSError traceback before
    assert [e.value for e in at.error] == ["Not opened."] and "too long" in at.text[-1].value
    _open_pool_file(at, "exports/re\u202eport.duckdb")
    assert [e.value for e in at.error] == ["Not opened."] and "RIGHT-TO-LEFT OVERRIDE" in at.text[-1].value
    _open_pool_file(at, "tpyo/pool.duckdb")           # a typo: asked, nothing created
    assert [w.value.replace("\\", "") for w in at.warning] == [   # markdown-escaped on the page
        "There is no pool file tpyo/pool.duckdb. Create a new, empty pool there?"]
    assert "db_path" not in at.session_state
    at.button(key="db_path_cancel").click().run()
    assert not at.warning and "db_path" not in at.session_state
    assert sorted(os.listdir(tmp_path)) == before
    _open_pool_file(at, "pool.duckdb")                # the open one: nothing to ask
    assert not at.warning


def test_export_writes_only_inside_the_data_directory(demo_app_env, tmp_path):
    victim = tmp_path.parent / "config.json"
    victim.write_text('{"keep": "me"}')
    at = open_page("pages/export.py")
    key = "exp_path_selfinstruct_True"
    assert at.text_input(key=key).value == os.path.join("exports", "selfinstruct-data.zip")
    for text in ("../config.json", str(victim), "../../../../../../tmp/x.zip", "pool.duckdb"):
        at.text_input(key=key).input(text).run()
        at.button(key="exp_write").click().run()
        assert not at.exception
        assert [e.value for e in at.error] == ["Not written."], text
        assert not at.success
    assert victim.read_text() == '{"keep": "me"}'
    assert not (tmp_path.parent / "README.md").exists()
    (tmp_path / "link.jsonl").symlink_to(victim)
    at.text_input(key=key).input("link.jsonl").run()
    at.button(key="exp_write").click().run()
    assert [e.value for e in at.error] == ["Not written."]
    assert victim.read_text() == '{"keep": "me"}'

    at.text_input(key=key).input("exports/out.zip").run()
    at.button(key="exp_write").click().run()
    assert not at.error and at.success
    assert (tmp_path / "exports" / "out.zip").exists()
    assert app_pool(demo_app_env).counts().seeds > 0   # the pool file is untouched
