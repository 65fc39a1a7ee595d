"""The pool: one DuckDB file, and the only module in the project that knows SQL.

Everything a run produces lives here: seed tasks, runs, rounds, every raw request
and response, every candidate instruction (accepted or rejected, with its reason
and evidence), instances, quality studies with their labels, and an audit log of
every human action.

Concurrency model (DuckDB allows one writing process per file): a process opens
the file once (`Pool.open`) and every thread works through its own cursor
(`Pool.cursor()`), so the app's background job and its pages can share a pool.
A second process gets `PoolLockedError` with the holder's PID.
"""
from __future__ import annotations

import json
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import duckdb

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB_PATH = PACKAGE_ROOT / "data" / "pool.duckdb"
DB_ENV_VAR = "SELFINSTRUCT_DB"


def default_db_path() -> Path:
    """`$SELFINSTRUCT_DB` when set, else data/pool.duckdb beside the package."""
    env = os.environ.get(DB_ENV_VAR, "").strip()
    return Path(env).expanduser() if env else DEFAULT_DB_PATH


class PoolError(Exception):
    """A problem with the pool file, in words a user can act on."""


class PoolLockedError(PoolError):
    def __init__(self, path: Path, pid: int | None, holder: str | None):
        self.path, self.pid, self.holder = path, pid, holder
        who = f"PID {pid}" if pid else "another process"
        if holder:
            who += f" ({holder})"
        super().__init__(
            f"The pool {path} is open in another selfinstruct process, {who}. "
            "DuckDB lets one process write a file at a time: stop that process "
            "(for example the running app), or use another pool file with --db."
        )


class SchemaTooNewError(PoolError):
    pass


# ---------------------------------------------------------------------------
# Schema. Each entry upgrades the file from version N-1 to N inside one transaction.
# Never edit a released migration: add a new one.
# ---------------------------------------------------------------------------
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE SEQUENCE seq_seed_tasks START 1""",
        """CREATE TABLE seed_tasks (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_seed_tasks'),
            source_id VARCHAR,
            name VARCHAR,
            instruction VARCHAR NOT NULL,
            is_classification BOOLEAN NOT NULL DEFAULT FALSE,
            origin VARCHAR,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            updated_at TIMESTAMP
        )""",
        """CREATE SEQUENCE seq_runs START 1""",
        """CREATE TABLE runs (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_runs'),
            name VARCHAR,
            status VARCHAR NOT NULL,
            config JSON NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            started_at TIMESTAMP,
            finished_at TIMESTAMP,
            updated_at TIMESTAMP,
            stop_reason VARCHAR,
            error VARCHAR
        )""",
        """CREATE SEQUENCE seq_rounds START 1""",
        """CREATE TABLE rounds (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_rounds'),
            run_id BIGINT NOT NULL,
            number INTEGER NOT NULL,
            step VARCHAR NOT NULL,
            started_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            finished_at TIMESTAMP,
            stats JSON
        )""",
        """CREATE SEQUENCE seq_requests START 1""",
        """CREATE TABLE requests (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_requests'),
            run_id BIGINT NOT NULL,
            round_id BIGINT NOT NULL,
            stage VARCHAR NOT NULL,
            position INTEGER NOT NULL,
            prompt_version VARCHAR,
            model VARCHAR,
            mode VARCHAR,
            prompt VARCHAR NOT NULL,
            meta JSON,
            response VARCHAR,
            finish_reason VARCHAR,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cost_usd DOUBLE,
            latency_s DOUBLE,
            attempts INTEGER,
            error VARCHAR,
            error_kind VARCHAR,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            completed_at TIMESTAMP
        )""",
        """CREATE SEQUENCE seq_candidates START 1""",
        """CREATE TABLE candidates (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_candidates'),
            run_id BIGINT,
            round_id BIGINT,
            request_id BIGINT,
            position INTEGER,
            instruction VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            reason VARCHAR,
            details JSON,
            max_rouge DOUBLE,
            nearest_text VARCHAR,
            is_classification BOOLEAN,
            decided_by VARCHAR NOT NULL DEFAULT 'filter',
            review VARCHAR,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            updated_at TIMESTAMP
        )""",
        """CREATE SEQUENCE seq_instances START 1""",
        """CREATE TABLE instances (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_instances'),
            seed_id BIGINT,
            candidate_id BIGINT,
            request_id BIGINT,
            position INTEGER NOT NULL,
            input VARCHAR NOT NULL,
            output VARCHAR NOT NULL,
            status VARCHAR NOT NULL DEFAULT 'kept',
            reason VARCHAR,
            details JSON,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )""",
        """CREATE SEQUENCE seq_audit START 1""",
        """CREATE TABLE audit_log (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_audit'),
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            actor VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            target_kind VARCHAR,
            target_id BIGINT,
            reason VARCHAR,
            before JSON,
            after JSON,
            undone_by BIGINT
        )""",
    ],
    2: [
        """CREATE SEQUENCE seq_studies START 1""",
        """CREATE TABLE quality_studies (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_studies'),
            name VARCHAR NOT NULL,
            sample_size INTEGER NOT NULL,
            seed BIGINT NOT NULL,
            config JSON,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )""",
        """CREATE SEQUENCE seq_study_items START 1""",
        """CREATE TABLE study_items (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_study_items'),
            study_id BIGINT NOT NULL,
            position INTEGER NOT NULL,
            candidate_id BIGINT NOT NULL,
            instance_id BIGINT
        )""",
        """CREATE SEQUENCE seq_labels START 1""",
        """CREATE TABLE labels (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_labels'),
            study_id BIGINT NOT NULL,
            item_id BIGINT NOT NULL,
            annotator VARCHAR NOT NULL,
            valid_task VARCHAR,
            input_ok VARCHAR,
            output_ok VARCHAR,
            note VARCHAR,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            updated_at TIMESTAMP
        )""",
    ],
}
SCHEMA_VERSION = max(MIGRATIONS)

_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<holder>.*?) \(PID (?P<pid>\d+)\)")


def _open_connection(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        match = _LOCK_RE.search(str(exc))
        if match or "lock" in str(exc).lower():
            pid = int(match["pid"]) if match else None
            holder = match["holder"] if match else None
            raise PoolLockedError(path, pid, holder) from None
        raise PoolError(f"Could not open the pool {path}: {exc}") from None
    except duckdb.Error as exc:
        raise PoolError(
            f"{path} is not a pool file DuckDB can read ({exc.__class__.__name__}: {exc})."
        ) from None


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _loads(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    return json.loads(value)


@dataclass(frozen=True)
class PoolCounts:
    seeds: int
    accepted: int
    rejected: int
    rescued: int
    instances: int
    runs: int
    rounds: int
    requests: int
    request_errors: int
    labeled: int
    studies: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Pool:
    """An open pool file. Create with `Pool.open(path)`; close with `.close()`."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection, read_only: bool):
        self.path = path
        self.read_only = read_only
        self._con = con
        self._local = threading.local()
        self._closed = False

    # -- lifecycle -----------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path | None = None, *, read_only: bool = False,
             migrate_to: int | None = None) -> "Pool":
        """Open (creating if needed) and upgrade the pool at `path`.

        `migrate_to` stops the upgrade at an older schema version (tests use it
        to make old files)."""
        path = Path(path).expanduser() if path else default_db_path()
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise PoolError(f"No pool file at {path}.")
        pool = cls(path, _open_connection(path, read_only), read_only)
        try:
            pool._migrate(migrate_to or SCHEMA_VERSION)
        except BaseException:
            pool.close()
            raise
        return pool

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._con.close()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections are not shareable across threads)."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            if self._closed:
                raise PoolError(f"The pool {self.path} is closed.")
            cur = self._local.cur = self._con.cursor()
        return cur

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing block on this thread's cursor; nests as one transaction."""
        cur = self.cursor()
        depth = getattr(self._local, "tx_depth", 0)
        if depth:
            self._local.tx_depth = depth + 1
            try:
                yield cur
            finally:
                self._local.tx_depth = depth
            return
        cur.execute("BEGIN TRANSACTION")
        self._local.tx_depth = 1
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            self._local.tx_depth = 0

    def _q(self, sql: str, params: Sequence[Any] | None = None) -> duckdb.DuckDBPyConnection:
        return self.cursor().execute(sql, params or [])

    def _rows(self, sql: str, params: Sequence[Any] | None = None) -> list[dict]:
        cur = self._q(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def _scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        row = self._q(sql, params).fetchone()
        return row[0] if row else None

    def _frame(self, sql: str, params: Sequence[Any] | None = None):
        return self._q(sql, params).df()

    # -- schema --------------------------------------------------------------
    def schema_version(self) -> int:
        exists = self._scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        )
        if not exists:
            return 0
        return int(self._scalar("SELECT coalesce(max(version), 0) FROM schema_version"))

    def _migrate(self, target: int) -> None:
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"The pool {self.path} was written by a newer selfinstruct (schema version "
                f"{current}; this version understands up to {SCHEMA_VERSION}). Upgrade "
                "selfinstruct to open it; the file was not changed."
            )
        if current >= target:
            return
        if self.read_only:
            raise PoolError(
                f"The pool {self.path} uses schema version {current} and needs an upgrade "
                f"to {SCHEMA_VERSION}; open it once without read-only."
            )
        with self.transaction() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
            )
            for version in range(current + 1, target + 1):
                for statement in MIGRATIONS[version]:
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_version (version) VALUES (?)", [version])

    # -- counts --------------------------------------------------------------
    def counts(self) -> PoolCounts:
        row = self._q(
            """SELECT
                (SELECT count(*) FROM seed_tasks),
                (SELECT count(*) FROM candidates WHERE status = 'accepted'),
                (SELECT count(*) FROM candidates WHERE status = 'rejected'),
                (SELECT count(*) FROM candidates WHERE review = 'rescued' AND status = 'accepted'),
                (SELECT count(*) FROM instances WHERE status = 'kept'),
                (SELECT count(*) FROM runs),
                (SELECT count(*) FROM rounds),
                (SELECT count(*) FROM requests WHERE response IS NOT NULL OR error IS NOT NULL),
                (SELECT count(*) FROM requests WHERE error IS NOT NULL),
                (SELECT count(DISTINCT item_id) FROM labels),
                (SELECT count(*) FROM quality_studies)
            """
        ).fetchone()
        return PoolCounts(*[int(v) for v in row])

    # -- seeds ---------------------------------------------------------------
    def add_seed_tasks(self, tasks: Iterable[Any], *, origin: str, actor: str = "user") -> list[int]:
        """Insert seed tasks (objects with instruction, instances, is_classification,
        name, source_id) and their instances in one transaction."""
        ids: list[int] = []
        tasks = list(tasks)
        with self.transaction() as cur:
            for task in tasks:
                cur.execute(
                    "INSERT INTO seed_tasks (source_id, name, instruction, is_classification, origin) "
                    "VALUES (?, ?, ?, ?, ?) RETURNING id",
                    [task.source_id, task.name, task.instruction, bool(task.is_classification), origin],
                )
                seed_id = cur.fetchone()[0]
                ids.append(seed_id)
                self._insert_seed_instances(cur, seed_id, task.instances)
            self._audit(cur, actor, "import_seeds", "seed_tasks", None, None,
                        None, {"origin": origin, "count": len(tasks)})
        return ids

    @staticmethod
    def _insert_seed_instances(cur, seed_id: int, instances: Sequence[dict]) -> None:
        if instances:
            cur.executemany(
                "INSERT INTO instances (seed_id, position, input, output) VALUES (?, ?, ?, ?)",
                [[seed_id, i, inst["input"], inst["output"]] for i, inst in enumerate(instances)],
            )

    def seed_tasks(self) -> list[dict]:
        """Every seed task with its instances, in id order."""
        tasks = self._rows(
            "SELECT id, source_id, name, instruction, is_classification, origin "
            "FROM seed_tasks ORDER BY id"
        )
        by_id = {t["id"]: t for t in tasks}
        for t in tasks:
            t["instances"] = []
        for row in self._q(
            "SELECT seed_id, input, output FROM instances WHERE seed_id IS NOT NULL "
            "ORDER BY seed_id, position"
        ).fetchall():
            if row[0] in by_id:
                by_id[row[0]]["instances"].append({"input": row[1], "output": row[2]})
        return tasks

    def seed_table(self):
        """One row per seed for editing: the first instance inline, the count of the rest."""
        return self._frame(
            """SELECT s.id, s.name, s.instruction,
                      coalesce(first_inst.input, '') AS input,
                      coalesce(first_inst.output, '') AS output,
                      s.is_classification,
                      (SELECT count(*) FROM instances i WHERE i.seed_id = s.id) AS instances
               FROM seed_tasks s
               LEFT JOIN (SELECT seed_id, input, output FROM instances
                          WHERE seed_id IS NOT NULL AND position = 0) first_inst
                      ON first_inst.seed_id = s.id
               ORDER BY s.id"""
        )

    def update_seed_task(self, seed_id: int, *, actor: str = "user", **changes: Any) -> None:
        """Change instruction, name, is_classification, and/or the first instance
        (`input`, `output`) of one seed; audited with before and after."""
        allowed = {"instruction", "name", "is_classification", "input", "output"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"Cannot change {sorted(unknown)} of a seed task.")
        with self.transaction() as cur:
            before = self._seed_row(cur, seed_id)
            if before is None:
                raise PoolError(f"There is no seed task {seed_id}.")
            task_fields = {k: v for k, v in changes.items() if k in {"instruction", "name", "is_classification"}}
            if task_fields:
                assignments = ", ".join(f"{k} = ?" for k in task_fields)
                cur.execute(
                    f"UPDATE seed_tasks SET {assignments}, updated_at = current_timestamp WHERE id = ?",
                    [*task_fields.values(), seed_id],
                )
            if "input" in changes or "output" in changes:
                new_input = changes.get("input", before["input"]) or ""
                new_output = changes.get("output", before["output"]) or ""
                if before["instances"]:
                    cur.execute(
                        "UPDATE instances SET input = ?, output = ? WHERE seed_id = ? AND position = 0",
                        [new_input, new_output, seed_id],
                    )
                else:
                    self._insert_seed_instances(cur, seed_id, [{"input": new_input, "output": new_output}])
            after = self._seed_row(cur, seed_id)
            self._audit(cur, actor, "edit_seed", "seed_task", seed_id, None, before, after)

    def delete_seed_tasks(self, seed_ids: Iterable[int], *, actor: str = "user") -> int:
        ids = [int(i) for i in seed_ids]
        if not ids:
            return 0
        with self.transaction() as cur:
            for seed_id in ids:
                before = self._seed_row(cur, seed_id)
                if before is None:
                    continue
                cur.execute("DELETE FROM instances WHERE seed_id = ?", [seed_id])
                cur.execute("DELETE FROM seed_tasks WHERE id = ?", [seed_id])
                self._audit(cur, actor, "delete_seed", "seed_task", seed_id, None, before, None)
        return len(ids)

    @staticmethod
    def _seed_row(cur, seed_id: int) -> dict | None:
        row = cur.execute(
            "SELECT id, name, instruction, is_classification FROM seed_tasks WHERE id = ?", [seed_id]
        ).fetchone()
        if row is None:
            return None
        instances = cur.execute(
            "SELECT input, output FROM instances WHERE seed_id = ? ORDER BY position", [seed_id]
        ).fetchall()
        first = instances[0] if instances else ("", "")
        return {
            "id": row[0], "name": row[1], "instruction": row[2], "is_classification": row[3],
            "input": first[0], "output": first[1],
            "instances": [{"input": i, "output": o} for i, o in instances],
        }

    def pool_instructions(self) -> list[str]:
        """The novelty pool: seeds then accepted candidates, in insertion order."""
        return [r[0] for r in self._q(
            "SELECT instruction FROM (SELECT 0 AS k, id, instruction FROM seed_tasks "
            "UNION ALL SELECT 1 AS k, id, instruction FROM candidates WHERE status = 'accepted') "
            "ORDER BY k, id"
        ).fetchall()]

    def existing_instructions(self, texts: Iterable[str]) -> set[str]:
        """Which of `texts` are already in the pool (seeds or accepted), exact match."""
        wanted = list({t for t in texts})
        if not wanted:
            return set()
        found: set[str] = set()
        for start in range(0, len(wanted), 5000):
            chunk = wanted[start:start + 5000]
            found.update(r[0] for r in self._q(
                "SELECT instruction FROM seed_tasks WHERE instruction IN (SELECT unnest(?)) "
                "UNION SELECT instruction FROM candidates WHERE status = 'accepted' "
                "AND instruction IN (SELECT unnest(?))",
                [chunk, chunk],
            ).fetchall())
        return found

    # -- audit ---------------------------------------------------------------
    @staticmethod
    def _audit(cur, actor: str, action: str, target_kind: str | None, target_id: int | None,
               reason: str | None, before: Any, after: Any) -> int:
        cur.execute(
            "INSERT INTO audit_log (actor, action, target_kind, target_id, reason, before, after) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [actor, action, target_kind, target_id, reason, _dumps(before), _dumps(after)],
        )
        return cur.fetchone()[0]

    def audit_entries(self, limit: int = 100, action: str | None = None) -> list[dict]:
        sql = "SELECT * FROM audit_log"
        params: list[Any] = []
        if action:
            sql += " WHERE action = ?"
            params.append(action)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = self._rows(sql, params)
        for row in rows:
            row["before"], row["after"] = _loads(row["before"]), _loads(row["after"])
        return rows

    # -- runs ------------------------------------------------------------------
    def create_run(self, config: dict, *, name: str | None = None, actor: str = "user") -> int:
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO runs (name, status, config, started_at, updated_at) "
                "VALUES (?, 'created', ?, current_timestamp, current_timestamp) RETURNING id",
                [name, _dumps(config)],
            )
            run_id = cur.fetchone()[0]
            self._audit(cur, actor, "create_run", "run", run_id, None, None, {"name": name})
        return run_id

    def run(self, run_id: int) -> dict | None:
        rows = self._rows("SELECT * FROM runs WHERE id = ?", [run_id])
        if not rows:
            return None
        rows[0]["config"] = _loads(rows[0]["config"])
        return rows[0]

    def runs(self) -> list[dict]:
        rows = self._rows(
            """SELECT r.*,
                 (SELECT count(*) FROM rounds WHERE run_id = r.id AND step = 'done') AS rounds_done,
                 (SELECT count(*) FROM candidates WHERE run_id = r.id AND status = 'accepted') AS accepted,
                 (SELECT count(*) FROM candidates WHERE run_id = r.id AND status = 'rejected') AS rejected,
                 (SELECT coalesce(sum(cost_usd), 0) FROM requests WHERE run_id = r.id) AS cost_usd
               FROM runs r ORDER BY r.id DESC"""
        )
        for row in rows:
            row["config"] = _loads(row["config"])
        return rows

    def set_run_status(self, run_id: int, status: str, *, stop_reason: str | None = None,
                       error: str | None = None) -> None:
        finished = status in {"finished", "stopped", "failed"}
        self._q(
            "UPDATE runs SET status = ?, stop_reason = coalesce(?, stop_reason), error = ?, "
            "updated_at = current_timestamp, "
            "finished_at = CASE WHEN ? THEN current_timestamp ELSE NULL END WHERE id = ?",
            [status, stop_reason, error, finished, run_id],
        )

    def mark_interrupted_runs(self) -> list[int]:
        """Runs still marked running when nothing runs them (the process died)."""
        ids = [r[0] for r in self._q("SELECT id FROM runs WHERE status = 'running'").fetchall()]
        for run_id in ids:
            self.set_run_status(run_id, "interrupted", stop_reason="interrupted")
        return ids

    def run_usage(self, run_id: int) -> dict:
        row = self._q(
            "SELECT count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
            "coalesce(sum(cost_usd), 0.0), count(*) FILTER (WHERE error IS NOT NULL) "
            "FROM requests WHERE run_id = ? AND (response IS NOT NULL OR error IS NOT NULL)",
            [run_id],
        ).fetchone()
        return {"requests": row[0], "prompt_tokens": int(row[1]), "completion_tokens": int(row[2]),
                "tokens": int(row[1]) + int(row[2]), "cost_usd": float(row[3]), "errors": row[4]}

    def accepted_count(self, run_id: int | None = None) -> int:
        if run_id is None:
            return int(self._scalar("SELECT count(*) FROM candidates WHERE status = 'accepted'"))
        return int(self._scalar(
            "SELECT count(*) FROM candidates WHERE status = 'accepted' AND run_id = ?", [run_id]))

    # -- rounds ------------------------------------------------------------------
    def create_round(self, run_id: int, number: int, step: str) -> int:
        return self._scalar(
            "INSERT INTO rounds (run_id, number, step) VALUES (?, ?, ?) RETURNING id",
            [run_id, number, step],
        )

    def open_round(self, run_id: int) -> dict | None:
        rows = self._rows(
            "SELECT * FROM rounds WHERE run_id = ? AND step <> 'done' ORDER BY number DESC LIMIT 1",
            [run_id],
        )
        return rows[0] if rows else None

    def rounds_done(self, run_id: int) -> int:
        return int(self._scalar(
            "SELECT count(*) FROM rounds WHERE run_id = ? AND step = 'done'", [run_id]))

    def last_round_number(self, run_id: int) -> int:
        return int(self._scalar("SELECT coalesce(max(number), 0) FROM rounds WHERE run_id = ?", [run_id]))

    def set_round_step(self, round_id: int, step: str) -> None:
        self._q(
            "UPDATE rounds SET step = ?, finished_at = CASE WHEN ? = 'done' THEN current_timestamp "
            "ELSE finished_at END WHERE id = ?",
            [step, step, round_id],
        )

    def round_summaries(self, run_id: int):
        """One row per round: requests, errors, candidates, accepted, rejections by
        reason, instances, tokens, cost and duration; derived from the rows, never cached."""
        frame = self._frame(
            """WITH req AS (
                 SELECT round_id, count(*) FILTER (WHERE response IS NOT NULL OR error IS NOT NULL) AS requests,
                        count(*) FILTER (WHERE error IS NOT NULL) AS errors,
                        coalesce(sum(prompt_tokens), 0) + coalesce(sum(completion_tokens), 0) AS tokens,
                        coalesce(sum(cost_usd), 0) AS cost_usd
                 FROM requests WHERE run_id = ? GROUP BY round_id),
               cand AS (
                 SELECT round_id, count(*) AS candidates,
                        count(*) FILTER (WHERE status = 'accepted') AS accepted,
                        count(*) FILTER (WHERE status = 'rejected') AS rejected
                 FROM candidates WHERE run_id = ? GROUP BY round_id),
               inst AS (
                 SELECT c.round_id, count(*) FILTER (WHERE i.status = 'kept') AS instances,
                        count(*) FILTER (WHERE i.status = 'rejected') AS instances_rejected
                 FROM instances i JOIN candidates c ON c.id = i.candidate_id
                 WHERE c.run_id = ? GROUP BY c.round_id)
               SELECT r.number AS round, r.step, r.id AS round_id,
                      coalesce(req.requests, 0) AS requests, coalesce(req.errors, 0) AS errors,
                      coalesce(cand.candidates, 0) AS candidates, coalesce(cand.accepted, 0) AS accepted,
                      coalesce(cand.rejected, 0) AS rejected,
                      coalesce(inst.instances, 0) AS instances,
                      coalesce(inst.instances_rejected, 0) AS instances_rejected,
                      coalesce(req.tokens, 0) AS tokens, coalesce(req.cost_usd, 0) AS cost_usd,
                      epoch(coalesce(r.finished_at, current_timestamp::TIMESTAMP) - r.started_at) AS seconds
               FROM rounds r
               LEFT JOIN req ON req.round_id = r.id
               LEFT JOIN cand ON cand.round_id = r.id
               LEFT JOIN inst ON inst.round_id = r.id
               WHERE r.run_id = ? ORDER BY r.number""",
            [run_id, run_id, run_id, run_id],
        )
        frame["acceptance"] = (frame["accepted"] / frame["candidates"].where(frame["candidates"] > 0)).fillna(0.0)
        return frame

    def reject_reasons_by_round(self, run_id: int):
        return self._frame(
            "SELECT r.number AS round, c.reason, count(*) AS n FROM candidates c "
            "JOIN rounds r ON r.id = c.round_id WHERE c.run_id = ? AND c.status = 'rejected' "
            "GROUP BY r.number, c.reason ORDER BY r.number, c.reason",
            [run_id],
        )

    # -- requests ----------------------------------------------------------------
    def add_requests(self, run_id: int, round_id: int, stage: str, planned: Sequence[dict]) -> list[int]:
        """Store planned requests before any is sent, so a restart sends each once.
        Each item: position, prompt_version, model, mode, prompt, meta."""
        with self.transaction() as cur:
            ids = []
            for item in planned:
                cur.execute(
                    "INSERT INTO requests (run_id, round_id, stage, position, prompt_version, model, "
                    "mode, prompt, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    [run_id, round_id, stage, item["position"], item.get("prompt_version"),
                     item.get("model"), item.get("mode"), item["prompt"], _dumps(item.get("meta"))],
                )
                ids.append(cur.fetchone()[0])
        return ids

    def requests_for(self, round_id: int, stage: str, *, pending_only: bool = False) -> list[dict]:
        sql = "SELECT * FROM requests WHERE round_id = ? AND stage = ?"
        if pending_only:
            sql += " AND response IS NULL AND error IS NULL"
        rows = self._rows(sql + " ORDER BY position", [round_id, stage])
        for row in rows:
            row["meta"] = _loads(row["meta"]) or {}
        return rows

    def record_response(self, request_id: int, *, response: str | None, finish_reason: str | None,
                        prompt_tokens: int, completion_tokens: int, cost_usd: float, latency_s: float,
                        attempts: int, error: str | None = None, error_kind: str | None = None) -> None:
        self._q(
            "UPDATE requests SET response = ?, finish_reason = ?, prompt_tokens = ?, "
            "completion_tokens = ?, cost_usd = ?, latency_s = ?, attempts = ?, error = ?, "
            "error_kind = ?, completed_at = current_timestamp WHERE id = ?",
            [None if error else response, finish_reason, prompt_tokens, completion_tokens, cost_usd,
             latency_s, attempts, error, error_kind, request_id],
        )

    def request_history(self, stage: str, model: str | None = None, limit: int = 500) -> dict:
        """Medians of recent answered requests, for estimates."""
        row = self._q(
            "SELECT count(*), median(prompt_tokens), median(completion_tokens), median(latency_s) "
            "FROM (SELECT * FROM requests WHERE stage = ? AND response IS NOT NULL "
            "AND (? IS NULL OR model = ?) ORDER BY id DESC LIMIT ?)",
            [stage, model, model, limit],
        ).fetchone()
        return {"n": row[0], "prompt_tokens": row[1], "completion_tokens": row[2], "latency_s": row[3]}

    def error_summary(self, run_id: int) -> list[dict]:
        return self._rows(
            "SELECT error_kind, any_value(error) AS example, count(*) AS n FROM requests "
            "WHERE run_id = ? AND error IS NOT NULL GROUP BY error_kind ORDER BY n DESC",
            [run_id],
        )

    # -- candidates and instances --------------------------------------------------
    def add_candidates(self, run_id: int, round_id: int, rows: Sequence[dict], *,
                       next_step: str | None = None) -> list[int]:
        """Insert a round's decided candidates (and, for batch mode, their instances)
        and move the round on, in one transaction."""
        ids = []
        with self.transaction() as cur:
            for row in rows:
                cur.execute(
                    "INSERT INTO candidates (run_id, round_id, request_id, position, instruction, status, "
                    "reason, details, max_rouge, nearest_text, is_classification) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    [run_id, round_id, row.get("request_id"), row["position"], row["instruction"],
                     row["status"], row.get("reason"), _dumps(row.get("details")), row.get("max_rouge"),
                     row.get("nearest_text"), row.get("is_classification")],
                )
                candidate_id = cur.fetchone()[0]
                ids.append(candidate_id)
                if row.get("instances"):
                    self._insert_instances(cur, candidate_id, row.get("request_id"), row["instances"])
            if next_step:
                cur.execute("UPDATE rounds SET step = ?, finished_at = CASE WHEN ? = 'done' "
                            "THEN current_timestamp ELSE NULL END WHERE id = ?",
                            [next_step, next_step, round_id])
        return ids

    @staticmethod
    def _insert_instances(cur, candidate_id: int, request_id: int | None, instances: Sequence[dict]) -> None:
        cur.executemany(
            "INSERT INTO instances (candidate_id, request_id, position, input, output, status, reason, details) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [[candidate_id, request_id, i, inst["input"], inst["output"], inst.get("status", "kept"),
              inst.get("reason"), _dumps(inst.get("details"))] for i, inst in enumerate(instances)],
        )

    def round_candidates(self, round_id: int, status: str | None = None) -> list[dict]:
        sql = "SELECT * FROM candidates WHERE round_id = ?"
        params: list[Any] = [round_id]
        if status:
            sql += " AND status = ?"
            params.append(status)
        rows = self._rows(sql + " ORDER BY position", params)
        for row in rows:
            row["details"] = _loads(row["details"])
        return rows

    def set_classifications(self, round_id: int, labels: dict[int, bool], *, next_step: str) -> None:
        with self.transaction() as cur:
            if labels:
                cur.executemany(
                    "UPDATE candidates SET is_classification = ? WHERE id = ?",
                    [[bool(v), k] for k, v in labels.items()],
                )
            cur.execute("UPDATE rounds SET step = ? WHERE id = ?", [next_step, round_id])

    def add_instances(self, round_id: int, by_candidate: dict[int, tuple[int | None, list[dict]]], *,
                      next_step: str) -> None:
        """Instances per candidate (request id, rows with status/reason/details),
        written with the round's next step in one transaction."""
        with self.transaction() as cur:
            for candidate_id, (request_id, rows) in by_candidate.items():
                cur.execute("DELETE FROM instances WHERE candidate_id = ?", [candidate_id])
                if rows:
                    self._insert_instances(cur, candidate_id, request_id, rows)
            cur.execute(
                "UPDATE rounds SET step = ?, finished_at = CASE WHEN ? = 'done' THEN current_timestamp "
                "ELSE finished_at END WHERE id = ?",
                [next_step, next_step, round_id],
            )

    def machine_instructions(self, limit: int | None = None) -> list[str]:
        sql = "SELECT instruction FROM candidates WHERE status = 'accepted' ORDER BY id"
        return [r[0] for r in self._q(sql + (" LIMIT ?" if limit else ""),
                                      [limit] if limit else []).fetchall()]

    def newest_accepted(self, run_id: int, limit: int = 10) -> list[dict]:
        return self._rows(
            "SELECT c.id, r.number AS round, c.instruction, c.max_rouge, c.is_classification "
            "FROM candidates c JOIN rounds r ON r.id = c.round_id "
            "WHERE c.run_id = ? AND c.status = 'accepted' ORDER BY c.id DESC LIMIT ?",
            [run_id, limit],
        )

    def rouge_scores(self, run_id: int, round_number: int | None = None):
        sql = ("SELECT r.number AS round, c.status, c.reason, c.max_rouge FROM candidates c "
               "JOIN rounds r ON r.id = c.round_id WHERE c.run_id = ? AND c.max_rouge IS NOT NULL")
        params: list[Any] = [run_id]
        if round_number is not None:
            sql += " AND r.number = ?"
            params.append(round_number)
        return self._frame(sql, params)

    def run_candidates(self, run_id: int):
        """Every candidate of a run in decision order (for re-filtering and checks)."""
        rows = self._rows(
            "SELECT c.*, r.number AS round FROM candidates c JOIN rounds r ON r.id = c.round_id "
            "WHERE c.run_id = ? ORDER BY r.number, c.position", [run_id])
        for row in rows:
            row["details"] = _loads(row["details"])
        return rows

    def pool_instructions_before_run(self, run_id: int) -> list[str]:
        """The novelty pool as a run saw it when it began: seeds and what earlier runs accepted."""
        return [r[0] for r in self._q(
            "SELECT instruction FROM (SELECT 0 AS k, id, instruction FROM seed_tasks "
            "UNION ALL SELECT 1 AS k, id, instruction FROM candidates WHERE status = 'accepted' "
            "AND run_id < ?) ORDER BY k, id", [run_id]).fetchall()]

    def redecide_candidates(self, run_id: int, decisions: dict[int, dict], *, actor: str) -> int:
        """Apply re-filter decisions ({candidate id: {status, reason, details, max_rouge,
        nearest_text}}) to candidates the filters decided; audited."""
        changed = 0
        with self.transaction() as cur:
            for candidate_id, new in decisions.items():
                before = cur.execute(
                    "SELECT status, reason, max_rouge FROM candidates WHERE id = ? AND run_id = ? "
                    "AND decided_by = 'filter'", [candidate_id, run_id]).fetchone()
                if before is None:
                    continue
                cur.execute(
                    "UPDATE candidates SET status = ?, reason = ?, details = ?, max_rouge = ?, "
                    "nearest_text = ?, updated_at = current_timestamp WHERE id = ?",
                    [new["status"], new.get("reason"), _dumps(new.get("details")), new.get("max_rouge"),
                     new.get("nearest_text"), candidate_id],
                )
                self._audit(cur, actor, "refilter", "candidate", candidate_id, new.get("why"),
                            {"status": before[0], "reason": before[1], "max_rouge": before[2]},
                            {"status": new["status"], "reason": new.get("reason"),
                             "max_rouge": new.get("max_rouge")})
                changed += 1
        return changed
