"""Issue 22, item 3: a key quoted back by an endpoint is never stored, printed or logged.

A gateway that answers 500 quoting the caller's Authorization header (the offline server's
`leak_auth` fault: the header, the bare key and its last 10 characters) is asked by generation,
batch mode, the judge and an evaluation, each sending a canary key. Afterwards no piece of the
canary (8 characters or more) is in any text column of the pool, in the pool's file bytes or in
what the command printed; the library's log records are checked too.
"""
from __future__ import annotations

import logging

import duckdb
import pytest

from selfinstruct import evaluate, redact, seeds
from selfinstruct.evaluate import EvalModel
from selfinstruct.llm import LLMConfig
from selfinstruct.offline import OfflineServer
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.store import Pool
from tests.conftest import run_cli

CANARY = "sk-canary-7f3a9c2e5b1d4f60a8e2c7b9d1f3a5e7QZ"
PIECES = [CANARY[i:i + redact.MIN_PIECE] for i in range(len(CANARY) - redact.MIN_PIECE + 1)]


def leaks(text: str) -> list[str]:
    return [p for p in PIECES if p in text]


def stored_leaks(db_path) -> list[str]:
    """Pieces of the canary in any text column of any table, or in the file's bytes."""
    found = []
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        columns = con.execute("SELECT table_name, column_name FROM information_schema.columns "
                              "WHERE table_schema = 'main' AND data_type IN ('VARCHAR', 'JSON')").fetchall()
        for table, column in columns:
            for (value,) in con.execute(f'SELECT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL').fetchall():
                if leaks(str(value)):
                    found.append(f"{table}.{column}: {str(value)[:200]}")
    finally:
        con.close()
    raw = db_path.read_bytes()
    wal = db_path.with_name(db_path.name + ".wal")
    raw += wal.read_bytes() if wal.exists() else b""
    found += [f"file bytes: {p}" for p in PIECES if p.encode() in raw]
    return found


def test_the_rule_removes_the_key_its_pieces_and_any_authorization_value():
    key = "sk-proj-ABCDEFGHIJKLMNOPQRSTUV0123456789"
    text = (f"refused: Authorization: Bearer {key}\n{{'authorization': 'Bearer other-token-xyz'}} "
            f"key {key}; tail ...{key[-10:]}; middle {key[5:14]}; authorization=abc123; Bearer tok.en-1")
    out = redact.redact(text, [key])
    for i in range(len(key) - 7):
        assert key[i:i + 8] not in out
    assert "other-token-xyz" not in out and "abc123" not in out and "tok.en-1" not in out
    assert out.count(redact.MASK) >= 6
    # Short pieces and ordinary words stay; the placeholder key is not a secret.
    assert redact.redact("retry in 2s: server busy", [key]) == "retry in 2s: server busy"
    assert redact.redact("sent not-needed", ["not-needed"]) == "sent not-needed"
    assert redact.redact(None) is None
    # A key is remembered by the config that sends it.
    LLMConfig(base_url="http://127.0.0.1:1/v1", model="m", api_key="sk-remembered-0123456789")
    assert "remembered" not in redact.redact("echo sk-remembered-0123456789 and -0123456789")


@pytest.fixture
def leaky():
    with OfflineServer(seed=3, faults=None) as srv:
        srv.faults.set_rates({"leak_auth": 1.0}, seed=1)
        yield srv


def test_generate_stores_and_prints_no_key(leaky, db_path):
    done = run_cli("generate", "--base-url", leaky.base_url, "--model", "selfinstruct-demo", "--structured", "off",
                   "--max-retries", "1", "--rounds", "1", "--db", str(db_path),
                   env={"OPENAI_API_KEY": CANARY})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "failed" in done.stderr and redact.MASK in done.stderr
    assert not leaks(done.stdout + done.stderr), done.stderr
    with Pool.open(db_path) as pool:
        errors = pool.cursor().execute("SELECT count(*) FROM requests WHERE error IS NOT NULL").fetchone()[0]
        assert errors >= 3 and pool.runs.get(1)["error"]
    assert not stored_leaks(db_path)


def test_batch_mode_stores_and_prints_no_key(leaky, db_path):
    leaky.batch_faults(fail_rate=1.0, leak_auth=True, delay_s=0.1)
    done = run_cli("generate", "--batch", "--batch-poll", "0.1", "--base-url", leaky.base_url,
                   "--model", "selfinstruct-demo", "--structured", "off", "--rounds", "1", "--db", str(db_path),
                   env={"OPENAI_API_KEY": CANARY})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "failed in 3 batches" in done.stderr and redact.MASK in done.stderr
    assert not leaks(done.stdout + done.stderr), done.stderr
    assert not stored_leaks(db_path)


def test_judge_stores_and_prints_no_key(leaky, demo_db_path):
    done = run_cli("judge", "--pool", "--limit", "6", "--base-url", leaky.base_url, "--model", "selfinstruct-demo",
                   "--structured", "off", "--max-retries", "1", "--db", str(demo_db_path),
                   env={"OPENAI_API_KEY": CANARY})
    assert done.returncode == 2, done.stdout + done.stderr
    assert redact.MASK in done.stderr and not leaks(done.stdout + done.stderr), done.stderr
    assert not stored_leaks(demo_db_path)


def test_evaluation_stores_and_prints_no_key(leaky, db_path):
    models = [EvalModel(backend="openai-compatible", base_url=leaky.base_url, model="selfinstruct-demo",
                        label=name, max_retries=1, concurrency=2) for name in ("a", "b")]
    with Pool.open(db_path) as pool:
        evaluation_id = evaluate.create_evaluation(
            pool, models, [{"instruction": f"Say something about topic {k}.", "input": ""} for k in range(6)])
    done = run_cli("evaluate", "collect", str(evaluation_id), "--db", str(db_path), env={"OPENAI_API_KEY": CANARY})
    assert done.returncode == 2, done.stdout + done.stderr
    assert redact.MASK in done.stderr and not leaks(done.stdout + done.stderr), done.stderr
    assert not stored_leaks(db_path)


def test_log_records_carry_no_key(leaky, db_path, caplog):
    caplog.set_level(logging.DEBUG)
    with Pool.open(db_path) as pool:
        seeds.load_starter_seeds(pool)
        run_id = start_run(pool, RunConfig(backend="openai-compatible", base_url=leaky.base_url,
                                           model="selfinstruct-demo", structured="off", max_retries=2, rounds=1))
        outcome = Runner(pool, run_id, api_key=CANARY).run()
    assert outcome.status == "failed" and not leaks(outcome.error)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "retrying" in logged and not leaks(logged)
