import json
import subprocess
import sys

from tests.conftest import run_cli, shared_file


def test_import_list_and_info(db_path):
    path = shared_file("selfinstruct_seed_tasks.jsonl")
    done = run_cli("seeds", "import", str(path), "--db", str(db_path))
    assert done.returncode == 0, done.stderr
    assert "Imported 175 seed task(s) with 175 instance(s)" in done.stdout
    listed = run_cli("seeds", "list", "--db", str(db_path))
    assert listed.stdout.strip().endswith("175 seed task(s).")
    info = run_cli("info", "--json", "--db", str(db_path))
    counts = json.loads(info.stdout)
    assert counts["seeds"] == 175 and counts["instances"] == 175
    assert {"accepted", "rejected", "rounds", "requests"} <= set(counts)


def test_bad_file_exits_nonzero_naming_lines_without_traceback(db_path, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "Name a fruit that is red."}\n{oops\n{"instruction": ""}\n')
    done = run_cli("seeds", "import", str(bad), "--db", str(db_path))
    assert done.returncode == 2
    assert "line 2: Not valid JSON" in done.stderr and 'line 3: "instruction" is empty.' in done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(run_cli("info", "--json", "--db", str(db_path)).stdout)["seeds"] == 0
    partial = run_cli("seeds", "import", str(bad), "--valid-only", "--db", str(db_path))
    assert partial.returncode == 0 and "skipped line 2" in partial.stdout


def test_starter_and_db_from_environment(db_path):
    done = run_cli("seeds", "import", "starter", env={"SELFINSTRUCT_DB": str(db_path)})
    assert done.returncode == 0, done.stderr
    assert str(db_path) in done.stdout
    assert json.loads(run_cli("info", "--json", "--db", str(db_path)).stdout)["seeds"] >= 40


def test_missing_file_and_locked_pool_are_plain_errors(db_path, tmp_path):
    missing = run_cli("seeds", "import", str(tmp_path / "nope.jsonl"), "--db", str(db_path))
    assert missing.returncode == 2 and "No such file" in missing.stderr
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, time; con = duckdb.connect(%r); print('ready', flush=True); time.sleep(60)"
    ) % str(db_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        locked = run_cli("info", "--db", str(db_path))
        assert locked.returncode == 2
        assert f"open in another selfinstruct process, PID {holder.pid}" in locked.stderr
        assert "Traceback" not in locked.stderr
    finally:
        holder.kill()
        holder.wait()


def test_format_names_people_type(db_path, tmp_path):
    """--format self-instruct is the selfinstruct format; "jsonl" could be three formats, and the
    answer lists them; a file type only one format has names it (seed import: jsonl)."""
    assert run_cli("seeds", "import", "starter", "--db", str(db_path)).returncode == 0
    out = tmp_path / "seeds.jsonl"
    done = run_cli("export", "--db", str(db_path), "--format", "self-instruct", "--out", str(out), "--no-card")
    assert done.returncode == 0, done.stderr
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"id", "name", "instruction", "instances", "is_classification"}
    done = run_cli("export", "--db", str(db_path), "--format", "jsonl", "--out", str(tmp_path / "x.jsonl"))
    assert done.returncode == 2
    assert ("jsonl is the file type of 3 formats: selfinstruct (Self-Instruct JSONL); chat (Chat messages JSONL); "
            "prompt-completion (Prompt/completion JSONL). Name one of them.") in done.stderr
    done = run_cli("seeds", "import", str(out), "--format", "jsonl", "--db", str(tmp_path / "again.duckdb"))
    assert done.returncode == 0, done.stderr
