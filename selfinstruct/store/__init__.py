"""The pool: one DuckDB file. This package is the only place in the project that knows SQL.

`core` holds the connection, transactions, schema migrations and counts (`PoolBase`); every other
module is one area of the product, a `Queries` object reached from the pool by its name:

    pool.seeds.seed_tasks()        pool.runs.get(run_id)          pool.requests.open_requests(run_id)
    pool.review.reject_rows(...)   pool.quality.study(study_id)   pool.judge.verdicts(judge_run_id)
    pool.evaluations.all()         pool.explore.pool_browse(...)  pool.audit.entries()
    pool.embeddings.count(name)    pool.topics.latest_set()       pool.bulk.bulk_insert(...)
"""
from functools import cached_property

from .core import (DB_ENV_VAR, DEFAULT_DB_PATH, MIGRATIONS, PACKAGE_ROOT, SCHEMA_VERSION, PoolBase,
                   PoolCounts, PoolDamagedError, PoolError, PoolLockedError, Queries, SchemaTooNewError,
                   damage_error, default_db_path)
from .audit import AuditQueries
from .bulk import BulkQueries
from .embeddings import EmbeddingQueries, PoolVectors
from .evaluate import EvaluateQueries
from .explore import ExploreQueries
from .judge import JudgeQueries
from .quality import QualityQueries
from .requests import RequestQueries
from .review import ReviewQueries
from .runs import RunQueries
from .seeds import SeedQueries
from .topics import TopicQueries


class Pool(PoolBase):
    """An open pool file. Create with `Pool.open(path)`; close with `.close()`. Its own methods are
    the file's (open, close, cursor, transaction, schema_version, counts); queries live in its areas."""

    @cached_property
    def seeds(self) -> SeedQueries:
        """Seed tasks: import, staging and the seed table (store/seeds.py)."""
        return SeedQueries(self)

    @cached_property
    def runs(self) -> RunQueries:
        """Runs and their rounds: settings, status, progress, what they produced (store/runs.py)."""
        return RunQueries(self)

    @cached_property
    def requests(self) -> RequestQueries:
        """Requests, batches, and the candidates and instances answers yield (store/requests.py)."""
        return RequestQueries(self)

    @cached_property
    def review(self) -> ReviewQueries:
        """The Rejects page: reasons, rows, details and what-ifs (store/review.py)."""
        return ReviewQueries(self)

    @cached_property
    def quality(self) -> QualityQueries:
        """Quality studies: samples, leases, labels (store/quality.py)."""
        return QualityQueries(self)

    @cached_property
    def judge(self) -> JudgeQueries:
        """Judge runs and their verdicts (store/judge.py)."""
        return JudgeQueries(self)

    @cached_property
    def evaluations(self) -> EvaluateQueries:
        """Evaluations of models: answers, ratings, pre-ratings (store/evaluate.py)."""
        return EvaluateQueries(self)

    @cached_property
    def explore(self) -> ExploreQueries:
        """The Pool page's browsing and the export's reads (store/explore.py)."""
        return ExploreQueries(self)

    @cached_property
    def audit(self) -> AuditQueries:
        """Each target's state and the audit log (store/audit.py)."""
        return AuditQueries(self)

    @cached_property
    def embeddings(self) -> EmbeddingQueries:
        """Sentence vectors, one row per (embedder, text) (store/embeddings.py)."""
        return EmbeddingQueries(self)

    @cached_property
    def topics(self) -> TopicQueries:
        """Topic sets, marks and steered rounds' snapshots (store/topics.py)."""
        return TopicQueries(self)

    @cached_property
    def bulk(self) -> BulkQueries:
        """Fast bulk writes and reads for benchmarks and fixtures (store/bulk.py)."""
        return BulkQueries(self)


AREAS = tuple(name for name, value in vars(Pool).items() if isinstance(value, cached_property))

__all__ = ["AREAS", "DB_ENV_VAR", "DEFAULT_DB_PATH", "MIGRATIONS", "PACKAGE_ROOT", "SCHEMA_VERSION", "Pool",
           "PoolCounts", "PoolVectors", "PoolDamagedError", "PoolError", "PoolLockedError", "Queries",
           "SchemaTooNewError", "damage_error", "default_db_path"]
