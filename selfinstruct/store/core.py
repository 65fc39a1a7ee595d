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
from typing import Any, Iterator, Sequence

import duckdb

from ..datadir import PACKAGE_ROOT, data_dir
from ..model import SQL, instance_in_pool_sql, rescued_sql, round_done_sql

DEFAULT_DB_PATH = PACKAGE_ROOT / "data" / "pool.duckdb"
DB_ENV_VAR = "SELFINSTRUCT_DB"


def default_db_path() -> Path:
    """`$SELFINSTRUCT_DB` when set, else pool.duckdb in the data directory (datadir.py)."""
    env = os.environ.get(DB_ENV_VAR, "").strip()
    return Path(env).expanduser() if env else data_dir() / "pool.duckdb"


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


class PoolDamagedError(PoolError):
    """The file cannot be read back: cut short, or a block that fails its checksum."""


_DAMAGE_SIGNS = ("Corrupt database file", "Could not read enough bytes", "checksum")


def damage_error(exc: BaseException, path: str | Path) -> PoolDamagedError | None:
    """The plain-words error for a DuckDB error that means the file itself is damaged (None for
    any other error)."""
    text = str(exc)
    if not isinstance(exc, duckdb.Error) or not any(sign in text for sign in _DAMAGE_SIGNS):
        return None
    return PoolDamagedError(
        f"The pool file {path} is damaged and cannot be read ({text.splitlines()[0][:200]}). "
        "The pool was not changed. Restore it from a copy, or work on another pool file with --db.")


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
    3: [
        # Engine v2: a request is planned (response NULL), answered, then applied (its
        # candidates, classification or instances written). Errors no longer end a request:
        # one without a response is sent again.
        """ALTER TABLE requests ADD COLUMN candidate_id BIGINT""",
        """ALTER TABLE requests ADD COLUMN applied_at TIMESTAMP""",
        """ALTER TABLE requests ADD COLUMN oversize BOOLEAN NOT NULL DEFAULT FALSE""",
        """ALTER TABLE requests ADD COLUMN failures INTEGER NOT NULL DEFAULT 0""",
        """ALTER TABLE requests ADD COLUMN batch_id BIGINT""",
        """UPDATE requests SET candidate_id = TRY_CAST(json_extract_string(meta, '$.candidate_id') AS BIGINT)
           WHERE meta IS NOT NULL""",
        # Answered requests were applied; the old engine gave up on failed requests of finished
        # rounds (their candidates get follow-ups again in the next run).
        """UPDATE requests SET applied_at = coalesce(completed_at, created_at)
           WHERE response IS NOT NULL OR round_id IN (SELECT id FROM rounds WHERE step = 'done')""",
        """CREATE SEQUENCE seq_batches START 1""",
        """CREATE TABLE batches (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_batches'),
            run_id BIGINT NOT NULL,
            kind VARCHAR NOT NULL,
            remote_id VARCHAR,
            input_file_id VARCHAR,
            output_file_id VARCHAR,
            error_file_id VARCHAR,
            endpoint VARCHAR,
            status VARCHAR NOT NULL,
            requests INTEGER NOT NULL DEFAULT 0,
            error VARCHAR,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            updated_at TIMESTAMP,
            finished_at TIMESTAMP
        )""",
    ],
    4: [
        # Structured output: whether a request asked for JSON matching a schema (NULL: the
        # text layout), and how many items its answer yielded once applied (parse health).
        """ALTER TABLE requests ADD COLUMN structured BOOLEAN""",
        """ALTER TABLE requests ADD COLUMN items INTEGER""",
        # How a run's chat requests go, decided once per run (setting or probe; NULL: not decided
        # yet, or completion mode), and how it was decided, in plain words for the Generate page.
        """ALTER TABLE runs ADD COLUMN structured BOOLEAN""",
        """ALTER TABLE runs ADD COLUMN structured_note VARCHAR""",
    ],
    5: [
        # A team of annotators: each item of a study is labeled by `overlap` annotators (1: one
        # label per item is enough); older studies keep today's meaning, one label per item.
        """ALTER TABLE quality_studies ADD COLUMN overlap INTEGER NOT NULL DEFAULT 1""",
    ],
    6: [
        # The version of the parser that read a request's answer when it was applied
        # (parsing.PARSERS), so re-filter reads it again with the same one. NULL: applied before
        # versions were stored, which parsing.PRE_VERSION_PARSERS maps to each stage's first one.
        """ALTER TABLE requests ADD COLUMN parser_version VARCHAR""",
    ],
    7: [
        # The model judge (issue 17): a judge run answers the quality questions for a study's items
        # or the pool's, one verdict row per item (planned with the run, answered once). Verdicts
        # live apart from `labels`: a judge is never counted as a person.
        """CREATE SEQUENCE seq_judge_runs START 1""",
        """CREATE TABLE judge_runs (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_judge_runs'),
            name VARCHAR,
            status VARCHAR NOT NULL,
            scope VARCHAR NOT NULL,
            study_id BIGINT,
            config JSON NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            started_at TIMESTAMP,
            finished_at TIMESTAMP,
            updated_at TIMESTAMP,
            stop_reason VARCHAR,
            error VARCHAR,
            structured BOOLEAN,
            structured_note VARCHAR
        )""",
        """CREATE SEQUENCE seq_judge_verdicts START 1""",
        """CREATE TABLE judge_verdicts (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_judge_verdicts'),
            judge_run_id BIGINT NOT NULL,
            position INTEGER NOT NULL,
            candidate_id BIGINT NOT NULL,
            instance_id BIGINT,
            study_item_id BIGINT,
            prompt VARCHAR,
            prompt_version VARCHAR,
            parser_version VARCHAR,
            structured BOOLEAN,
            response VARCHAR,
            finish_reason VARCHAR,
            valid_task VARCHAR,
            input_ok VARCHAR,
            output_ok VARCHAR,
            reason VARCHAR,
            unparseable VARCHAR,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cost_usd DOUBLE,
            latency_s DOUBLE,
            attempts INTEGER,
            failures INTEGER NOT NULL DEFAULT 0,
            error VARCHAR,
            error_kind VARCHAR,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            answered_at TIMESTAMP
        )""",
    ],
    # 8: the paper's evaluation of models (issue 17): instructions, each model's answer, people's
    # A-D ratings (one per rater per answer) and a judge's pre-ratings, stored apart from them.
    8: [
        """CREATE SEQUENCE seq_evaluations START 1""",
        """CREATE TABLE evaluations (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_evaluations'),
            name VARCHAR,
            status VARCHAR NOT NULL,
            config JSON NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            started_at TIMESTAMP,
            finished_at TIMESTAMP,
            updated_at TIMESTAMP,
            stop_reason VARCHAR,
            error VARCHAR,
            judge_config JSON,
            judge_status VARCHAR,
            judge_stop_reason VARCHAR,
            judge_error VARCHAR,
            judge_structured BOOLEAN
        )""",
        """CREATE SEQUENCE seq_eval_instructions START 1""",
        """CREATE TABLE eval_instructions (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_eval_instructions'),
            evaluation_id BIGINT NOT NULL,
            position INTEGER NOT NULL,
            instruction VARCHAR NOT NULL,
            input VARCHAR NOT NULL DEFAULT '',
            source VARCHAR
        )""",
        """CREATE SEQUENCE seq_eval_answers START 1""",
        """CREATE TABLE eval_answers (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_eval_answers'),
            evaluation_id BIGINT NOT NULL,
            instruction_id BIGINT NOT NULL,
            model_index INTEGER NOT NULL,
            prompt VARCHAR,
            prompt_version VARCHAR,
            response VARCHAR,
            finish_reason VARCHAR,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cost_usd DOUBLE,
            latency_s DOUBLE,
            attempts INTEGER,
            failures INTEGER NOT NULL DEFAULT 0,
            error VARCHAR,
            error_kind VARCHAR,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            answered_at TIMESTAMP
        )""",
        """CREATE SEQUENCE seq_eval_ratings START 1""",
        """CREATE TABLE eval_ratings (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_eval_ratings'),
            evaluation_id BIGINT NOT NULL,
            answer_id BIGINT NOT NULL,
            rater VARCHAR NOT NULL,
            rating VARCHAR NOT NULL,
            note VARCHAR,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            updated_at TIMESTAMP
        )""",
        """CREATE SEQUENCE seq_eval_prerates START 1""",
        """CREATE TABLE eval_prerates (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_eval_prerates'),
            evaluation_id BIGINT NOT NULL,
            answer_id BIGINT NOT NULL,
            judge_model VARCHAR NOT NULL,
            prompt VARCHAR,
            prompt_version VARCHAR,
            parser_version VARCHAR,
            structured BOOLEAN,
            response VARCHAR,
            finish_reason VARCHAR,
            rating VARCHAR,
            reason VARCHAR,
            unparseable VARCHAR,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cost_usd DOUBLE,
            latency_s DOUBLE,
            attempts INTEGER,
            failures INTEGER NOT NULL DEFAULT 0,
            error VARCHAR,
            error_kind VARCHAR,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            answered_at TIMESTAMP
        )""",
    ],
    # Label leases (issue 22): the item on an annotator's screen is held for them until the
    # lease ends (UTC, naive), so a team's members are offered different items. One lease per
    # annotator per study; a save or a move releases it.
    9: [
        """CREATE TABLE label_leases (
            study_id BIGINT NOT NULL,
            item_id BIGINT NOT NULL,
            annotator VARCHAR NOT NULL,
            expires_at TIMESTAMP NOT NULL,
            PRIMARY KEY (study_id, annotator)
        )""",
    ],
    # Sentence vectors (issue 24, store/embeddings.py): one row per (embedder, text), shared by
    # every item with that text; each embedder's name, kind and dimension are kept in `embedders`.
    10: [
        """CREATE TABLE embedders (
            name VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            dim INTEGER NOT NULL,
            spec JSON,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )""",
        """CREATE TABLE embeddings (
            embedder VARCHAR NOT NULL,
            text VARCHAR NOT NULL,
            vector FLOAT[] NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (embedder, text)
        )""",
    ],
    # Topics (issue 25, store/topics.py): a set of topics per (embedder, settings, pool state),
    # each item's topic and map position in it, marks a person puts on a topic ("avoid"; carried
    # to later sets by the nearest centroid), and the set each steered round drew its examples by.
    11: [
        """CREATE SEQUENCE seq_topic_sets START 1""",
        """CREATE TABLE topic_sets (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_topic_sets'),
            embedder VARCHAR NOT NULL,
            settings JSON NOT NULL,
            settings_key VARCHAR NOT NULL,
            pool_state VARCHAR NOT NULL,
            fitted INTEGER NOT NULL,
            items INTEGER NOT NULL,
            k INTEGER NOT NULL,
            projection JSON,
            silhouettes JSON,
            run_id BIGINT,
            round_number INTEGER,
            seconds DOUBLE,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )""",
        """CREATE TABLE topics (
            set_id BIGINT NOT NULL,
            topic INTEGER NOT NULL,
            size INTEGER NOT NULL,
            name VARCHAR NOT NULL,
            pairs JSON,
            words JSON,
            centroid FLOAT[],
            model_name VARCHAR,
            model_prompt_version VARCHAR,
            model VARCHAR,
            PRIMARY KEY (set_id, topic)
        )""",
        """CREATE TABLE topic_members (
            set_id BIGINT NOT NULL,
            kind VARCHAR NOT NULL,
            item_id BIGINT NOT NULL,
            topic INTEGER NOT NULL,
            fitted BOOLEAN NOT NULL,
            x FLOAT,
            y FLOAT
        )""",
        """CREATE SEQUENCE seq_topic_marks START 1""",
        """CREATE TABLE topic_marks (
            id BIGINT PRIMARY KEY DEFAULT nextval('seq_topic_marks'),
            embedder VARCHAR NOT NULL,
            mark VARCHAR NOT NULL,
            name VARCHAR,
            centroid FLOAT[] NOT NULL,
            set_id BIGINT,
            topic INTEGER,
            active BOOLEAN NOT NULL DEFAULT TRUE,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )""",
        """CREATE TABLE topic_rounds (
            run_id BIGINT NOT NULL,
            round_number INTEGER NOT NULL,
            set_id BIGINT NOT NULL,
            avoid JSON,
            PRIMARY KEY (run_id, round_number)
        )""",
    ],
    # The dataset card's topic map and table, rendered once per topic set (store/topics.py).
    12: [
        """ALTER TABLE topic_sets ADD COLUMN card JSON""",
    ],
}
SCHEMA_VERSION = max(MIGRATIONS)

_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<holder>.*?) \(PID (?P<pid>\d+)\)")


def _open_connection(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        damaged = damage_error(exc, path)
        if damaged is not None:
            raise damaged from None
        if isinstance(exc, duckdb.IOException):
            match = _LOCK_RE.search(str(exc))
            if match or "lock" in str(exc).lower():
                pid = int(match["pid"]) if match else None
                holder = match["holder"] if match else None
                raise PoolLockedError(path, pid, holder) from None
            raise PoolError(f"Could not open the pool {path}: {exc}") from None
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
    rounds: int            # rounds done (model.round_done_sql), in every run
    requests: int
    request_errors: int
    labeled: int
    studies: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Queries:
    """One area's queries over a pool, reached as `pool.<area>` (`pool.runs`, `pool.judge`, ...).

    Data only, like the rest of the store: SQL in, rows out. An area that needs another one asks
    for it through the pool (`self.pool.audit.read_state(...)`), so every such dependency shows."""

    def __init__(self, pool: "PoolBase"):
        self.pool = pool


class PoolBase:
    """Connection, transactions, schema and counts. `Pool` adds the areas."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection, read_only: bool):
        self.path = path
        self.read_only = read_only
        self._con = con
        self._local = threading.local()
        self._closed = False

    # -- lifecycle -----------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path | None = None, *, read_only: bool = False,
             migrate_to: int | None = None) -> "PoolBase":
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
            try:
                self._con.close()
            except duckdb.Error as exc:
                # Closing writes the log into the file: a full disk shows up here. What was
                # committed is still in the .wal file beside it and is replayed on the next open.
                raise PoolError(
                    f"Could not finish writing the pool {self.path} ({exc}). Nothing committed is "
                    f"lost: it stays in {self.path}.wal and is applied when the pool is next opened, "
                    "once there is room on the disk.") from None

    def __enter__(self) -> "PoolBase":
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
    # One count per PoolCounts field, in order, run as one UNION ALL. The same eleven counts as
    # scalar subqueries of one SELECT took DuckDB ~23 ms on a 150K-candidate pool (the cost grows
    # with the number of subqueries, not with the rows); this form takes ~3 ms. Every page and
    # the sidebar ask for the counts on every run.
    _COUNT_SQL = (
        "SELECT count(*) FROM seed_tasks",
        f"SELECT count(*) FROM candidates WHERE status = {SQL.ACCEPTED}",
        f"SELECT count(*) FROM candidates WHERE status = {SQL.REJECTED}",
        f"SELECT count(*) FROM candidates c WHERE {rescued_sql('c')}",
        f"SELECT count(*) FROM instances i WHERE {instance_in_pool_sql('i')}",
        "SELECT count(*) FROM runs",
        f"SELECT count(*) FROM rounds WHERE {round_done_sql()}",
        "SELECT count(*) FROM requests WHERE response IS NOT NULL OR error IS NOT NULL",
        "SELECT count(*) FROM requests WHERE error IS NOT NULL",
        "SELECT count(DISTINCT item_id) FROM labels",
        "SELECT count(*) FROM quality_studies",
    )

    def counts(self) -> PoolCounts:
        rows = self._q(
            " UNION ALL ".join(f"SELECT {k} AS k, * FROM ({sql})" for k, sql in enumerate(self._COUNT_SQL))
        ).fetchall()
        by_key = {int(k): int(n) for k, n in rows}
        return PoolCounts(*[by_key[k] for k in range(len(self._COUNT_SQL))])

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
