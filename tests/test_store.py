import subprocess
import sys
import textwrap

import duckdb
import pytest

from selfinstruct import actions
from selfinstruct.store import SCHEMA_VERSION, Pool, PoolLockedError, SchemaTooNewError
from selfinstruct.seeds import SeedTask


def test_fresh_file_gets_the_whole_schema(db_path):
    with Pool.open(db_path) as pool:
        assert pool.schema_version() == SCHEMA_VERSION
        tables = {r[0] for r in pool.cursor().execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"seed_tasks", "runs", "rounds", "requests", "candidates", "instances", "audit_log",
            "quality_studies", "study_items", "labels", "schema_version"} <= tables


def test_older_file_is_upgraded_and_keeps_its_data(db_path):
    with Pool.open(db_path, migrate_to=1) as old:
        assert old.schema_version() == 1
        actions.import_seeds(old, [SeedTask("Name three rivers in Africa.", [{"input": "", "output": "Nile"}])],
                             origin="test", actor="test")
    with duckdb.connect(str(db_path)) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "labels" not in tables
    with Pool.open(db_path) as pool:
        assert pool.schema_version() == SCHEMA_VERSION
        assert [t["instruction"] for t in pool.seeds.seed_tasks()] == ["Name three rivers in Africa."]
        assert pool.counts().studies == 0


def test_newer_file_is_refused_untouched(db_path):
    with Pool.open(db_path):
        pass
    with duckdb.connect(str(db_path)) as con:
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [SCHEMA_VERSION + 5])
    with pytest.raises(SchemaTooNewError, match=f"schema version {SCHEMA_VERSION + 5}"):
        Pool.open(db_path)
    with duckdb.connect(str(db_path)) as con:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION + 5


def test_second_process_gets_a_plain_lock_message(db_path):
    Pool.open(db_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            import duckdb
            con = duckdb.connect({str(db_path)!r})
            print("ready", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(PoolLockedError) as err:
            Pool.open(db_path)
        assert err.value.pid == holder.pid
        assert f"PID {holder.pid}" in str(err.value)
        assert str(db_path) in str(err.value)
    finally:
        holder.kill()
        holder.wait()


def test_transactions_roll_back_as_a_whole(pool):
    with pytest.raises(RuntimeError):
        with pool.transaction():
            actions.import_seeds(pool, [SeedTask("Translate the word into Spanish.")], origin="t", actor="t")
            raise RuntimeError("boom")
    assert pool.counts().seeds == 0
    assert pool.audit.entries() == []


def test_seed_edit_and_delete_are_audited(pool):
    [seed_id] = actions.import_seeds(
        pool, [SeedTask("Give a synonym for the word.", [{"input": "quick", "output": "fast"}])], origin="t",
        actor="t").done
    actions.edit_seed(pool, seed_id, actor="t", instruction="Give two synonyms for the word.", output="fast, rapid")
    [task] = pool.seeds.seed_tasks()
    assert task["instruction"] == "Give two synonyms for the word."
    assert task["instances"] == [{"input": "quick", "output": "fast, rapid"}]
    entry = pool.audit.entries(action="edit_seed")[0]
    assert entry["before"]["instruction"] == "Give a synonym for the word."
    assert entry["after"]["output"] == "fast, rapid"
    actions.delete_seeds(pool, [seed_id], actor="t")
    assert pool.counts().seeds == 0 and pool.counts().instances == 0
    assert pool.audit.entries(action="delete_seed")[0]["before"]["id"] == seed_id


def test_threads_use_their_own_cursors(pool):
    import threading

    actions.import_seeds(pool, [SeedTask(f"Write a limerick about the number {i}.") for i in range(3)],
                         origin="t", actor="t")
    seen = []

    def worker():
        seen.append(pool.counts().seeds)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [3] * 8
