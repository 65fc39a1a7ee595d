"""The pool: one DuckDB file. This package is the only place in the project that knows SQL.

`core` holds the connection, transactions, schema migrations and counts; each other
module holds the queries of one part of the product, and `Pool` combines them.
"""
from functools import cached_property

from .core import (DB_ENV_VAR, DEFAULT_DB_PATH, MIGRATIONS, PACKAGE_ROOT, SCHEMA_VERSION, PoolBase,
                   PoolCounts, PoolDamagedError, PoolError, PoolLockedError, SchemaTooNewError, damage_error,
                   default_db_path)
from .audit import AuditQueries
from .bulk import BulkQueries
from .embeddings import EmbeddingQueries, PoolVectors
from .evaluate import EvaluateQueries
from .explore import ExploreQueries
from .judge import JudgeQueries
from .quality import QualityQueries
from .review import ReviewQueries
from .requests import RequestQueries
from .runs import RunQueries
from .seeds import SeedQueries
from .topics import TopicQueries


class Pool(SeedQueries,
           PoolBase):
    """An open pool file. Create with `Pool.open(path)`; close with `.close()`."""

    @cached_property
    def runs(self) -> RunQueries:
        """Runs and their rounds: settings, status, progress, what they produced (store/runs.py)."""
        return RunQueries(self)

    @cached_property
    def evaluations(self) -> EvaluateQueries:
        """Evaluations of models: answers, ratings, pre-ratings (store/evaluate.py)."""
        return EvaluateQueries(self)

    @cached_property
    def judge(self) -> JudgeQueries:
        """Judge runs and their verdicts (store/judge.py)."""
        return JudgeQueries(self)

    @cached_property
    def quality(self) -> QualityQueries:
        """Quality studies: samples, leases, labels (store/quality.py)."""
        return QualityQueries(self)

    @cached_property
    def review(self) -> ReviewQueries:
        """The Rejects page: reasons, rows, details and what-ifs (store/review.py)."""
        return ReviewQueries(self)

    @cached_property
    def explore(self) -> ExploreQueries:
        """The Pool page's browsing and the export's reads (store/explore.py)."""
        return ExploreQueries(self)

    @cached_property
    def bulk(self) -> BulkQueries:
        """Fast bulk writes and reads for benchmarks and fixtures (store/bulk.py)."""
        return BulkQueries(self)

    @cached_property
    def seeds(self) -> SeedQueries:
        """Seed tasks: import, staging and the seed table (store/seeds.py)."""
        return SeedQueries(self)

    @cached_property
    def requests(self) -> RequestQueries:
        """Requests, batches, and the candidates and instances answers yield (store/requests.py)."""
        return RequestQueries(self)

    @cached_property
    def audit(self) -> AuditQueries:
        """Each target's state and the audit log (store/audit.py)."""
        return AuditQueries(self)

    @property
    def embeddings(self) -> EmbeddingQueries:
        """Sentence vectors (store/embeddings.py)."""
        return EmbeddingQueries(self)

    @property
    def topics(self) -> TopicQueries:
        """Topic sets, marks and steered rounds' snapshots (store/topics.py)."""
        return TopicQueries(self)


__all__ = ["DB_ENV_VAR", "DEFAULT_DB_PATH", "MIGRATIONS", "PACKAGE_ROOT", "SCHEMA_VERSION", "Pool",
           "PoolCounts", "PoolVectors", "PoolDamagedError", "PoolError", "PoolLockedError", "SchemaTooNewError",
           "damage_error", "default_db_path"]
