"""Parser versions: every applied answer stores the version of the parser that read it, and
re-filter reads it again with that version, refuses a version this code lacks (saying which one
it needs, changing nothing), and treats rows from before versions (NULL) as the first version."""
import duckdb
import pytest

from selfinstruct import parsing, prompts
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, refilter, start_run
from selfinstruct.store import SCHEMA_VERSION, Pool
from tests.conftest import run_cli

FAST = dict(timeout_s=5.0, max_retries=3)
V1 = "instructions-parse-v1"
CURRENT = parsing.PARSER_VERSIONS[prompts.STAGE_INSTRUCTIONS]
TEST_VERSION = "instructions-parse-vtest"


def run_rounds(pool, server, rounds=2):
    run_id = start_run(pool, RunConfig(base_url=server.base_url, rounds=rounds, seed=3, **FAST))
    outcome = Runner(pool, run_id).run()
    assert outcome.status == "finished"
    return run_id


def state(pool):
    cur = pool.cursor()
    return {
        "candidates": cur.execute("SELECT id, status, reason, details, max_rouge FROM candidates ORDER BY id").fetchall(),
        "requests": cur.execute("SELECT id, parser_version, applied_at FROM requests ORDER BY id").fetchall(),
        "audit": cur.execute("SELECT count(*) FROM audit_log").fetchone()[0],
    }


def versions(pool, run_id):
    return dict(pool.cursor().execute(
        "SELECT stage, list(DISTINCT parser_version) FROM requests WHERE run_id = ? AND applied_at IS NOT NULL "
        "GROUP BY stage", [run_id]).fetchall())


def test_every_stage_has_a_current_registered_version():
    for stage in prompts.STAGES:
        current = parsing.PARSER_VERSIONS[stage]
        assert parsing.has_parser(stage, current) and parsing.has_parser(stage, parsing.PRE_VERSION_PARSERS[stage])
        assert current in parsing.known_parser_versions(stage)
    assert not parsing.has_parser(prompts.STAGE_CLASSIFY, V1)     # a version belongs to one stage
    with pytest.raises(parsing.UnknownParserVersion, match="instructions-parse-v99"):
        parsing.parse_answer(prompts.STAGE_INSTRUCTIONS, "9. Name a river.", version="instructions-parse-v99")


def test_applying_an_answer_stores_the_parser_version(seeded, server):
    run_id = run_rounds(seeded, server)
    got = versions(seeded, run_id)
    assert set(got) == {prompts.STAGE_INSTRUCTIONS, prompts.STAGE_CLASSIFY, prompts.STAGE_INSTANCES}
    for stage, stored in got.items():
        assert stored == [parsing.PARSER_VERSIONS[stage]]


@pytest.fixture
def other_parser(monkeypatch):
    """A second instructions parser, registered as TEST_VERSION: it keeps only the first three
    items of each answer (so it reads answers differently from v1), and records its calls."""
    calls = []
    v1 = parsing.PARSERS[V1][1]

    def first_three(text, prompt, **kwargs):
        calls.append(text)
        parsed = v1(text, prompt, **kwargs)
        parsed.items = parsed.items[:3]
        return parsed

    monkeypatch.setitem(parsing.PARSERS, TEST_VERSION, (prompts.STAGE_INSTRUCTIONS, first_three))
    return calls


def test_refilter_reads_a_run_with_the_version_it_was_applied_with(seeded, server, other_parser, monkeypatch):
    # The run is parsed (and stored) with TEST_VERSION as the current parser...
    with monkeypatch.context() as m:
        m.setitem(parsing.PARSER_VERSIONS, prompts.STAGE_INSTRUCTIONS, TEST_VERSION)
        run_id = run_rounds(seeded, server)
    assert versions(seeded, run_id)[prompts.STAGE_INSTRUCTIONS] == [TEST_VERSION]
    assert parsing.PARSER_VERSIONS[prompts.STAGE_INSTRUCTIONS] == CURRENT   # ...then today's is current again
    answered = seeded.cursor().execute(
        "SELECT count(*) FROM requests WHERE run_id = ? AND stage = 'instructions' AND response IS NOT NULL",
        [run_id]).fetchone()[0]
    other_parser.clear()
    same = refilter(seeded, run_id)
    assert same.changed == [] and same.before == same.after
    assert len(other_parser) == answered          # every answer went through the stored version
    stricter = refilter(seeded, run_id, threshold=0.3, apply=True)
    assert stricter.changed and stricter.applied == len(stricter.changed)
    # Had re-filter used today's parser, the answers would not line up with the stored candidates.
    seeded.cursor().execute("UPDATE requests SET parser_version = ? WHERE run_id = ? AND stage = 'instructions'",
                            [V1, run_id])
    with pytest.raises(RuntimeError, match="no longer match"):
        refilter(seeded, run_id)


def test_unknown_version_is_refused_with_the_version_needed_and_nothing_changes(seeded, server, db_path):
    run_id = run_rounds(seeded, server)
    seeded.cursor().execute(
        "UPDATE requests SET parser_version = 'instructions-parse-v99' WHERE run_id = ? AND stage = 'instructions'",
        [run_id])
    before = state(seeded)
    with pytest.raises(parsing.UnknownParserVersion) as refused:
        refilter(seeded, run_id, threshold=0.3, keywords=["list"], apply=True)
    sentence = (f"Run {run_id} cannot be re-filtered by this version of selfinstruct: its answers were read "
                f"with parser instructions-parse-v99, and this version has only {V1}, {CURRENT}. Re-filter it with a "
                "selfinstruct version that has instructions-parse-v99, or leave its decisions as they are; "
                "nothing was changed.")
    assert str(refused.value) == sentence
    assert refused.value.version == "instructions-parse-v99"
    assert state(seeded) == before
    seeded.close()
    done = run_cli("refilter", "--db", str(db_path), str(run_id), "--threshold", "0.3", "--apply")
    assert done.returncode == 2 and sentence in done.stderr, (done.stdout, done.stderr)
    with Pool.open(db_path) as again:
        assert state(again) == before


def test_rows_from_before_versions_read_with_the_first_version(seeded, server):
    run_id = run_rounds(seeded, server)
    seeded.cursor().execute("UPDATE requests SET parser_version = NULL WHERE run_id = ?", [run_id])
    assert parsing.parser_version_of(prompts.STAGE_INSTRUCTIONS, None, applied=True) == V1
    same = refilter(seeded, run_id)
    assert same.changed == [] and same.before == same.after
    stricter = refilter(seeded, run_id, threshold=0.3, apply=True)
    assert stricter.changed and stricter.applied == len(stricter.changed)


COPIED = ("seed_tasks", "runs", "rounds", "requests", "candidates", "instances")


def test_a_schema_5_file_migrates_and_its_runs_refilter(tmp_path, server):
    """A pool written before schema 6: its requests get parser_version NULL and re-filter as before."""
    new_path, old_path = tmp_path / "new.duckdb", tmp_path / "old.duckdb"
    with Pool.open(new_path) as pool:
        from selfinstruct import seeds
        seeds.load_starter_seeds(pool)
        run_id = run_rounds(pool, server)
        expected = refilter(pool, run_id, threshold=0.3)
    with Pool.open(old_path, migrate_to=5) as old:
        assert old.schema_version() == 5
        columns = [r[0] for r in old.cursor().execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'requests'").fetchall()]
        assert "parser_version" not in columns
    # The same run, written into the schema-5 file as that version stored it (no parser_version).
    con = duckdb.connect(str(old_path))
    con.execute(f"ATTACH '{new_path}' AS src (READ_ONLY)")
    for table in COPIED:
        select = "* EXCLUDE (parser_version)" if table == "requests" else "*"
        con.execute(f"INSERT INTO {table} SELECT {select} FROM src.{table}")
    con.execute("DETACH src")
    con.close()
    with Pool.open(old_path) as pool:
        assert pool.schema_version() == SCHEMA_VERSION >= 6
        nulls = pool.cursor().execute(
            "SELECT count(*) FILTER (WHERE parser_version IS NULL), count(*) FROM requests").fetchone()
        assert nulls[0] == nulls[1] > 0
        same = refilter(pool, run_id)
        assert same.changed == [] and same.before == same.after
        got = refilter(pool, run_id, threshold=0.3, apply=True)
        assert (got.before, got.after, got.changed) == (expected.before, expected.after, expected.changed)
        assert got.applied == len(got.changed) > 0

