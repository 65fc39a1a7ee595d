"""The pool: one DuckDB file. This package is the only place in the project that knows SQL.

`core` holds the connection, transactions, schema migrations and counts; each other
module holds the queries of one part of the product, and `Pool` combines them.
"""
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
from .runs import RunQueries
from .seeds import SeedQueries
from .topics import TopicQueries


class Pool(ReviewQueries, QualityQueries, JudgeQueries, EvaluateQueries, ExploreQueries, RunQueries, SeedQueries,
           AuditQueries, BulkQueries, PoolBase):
    """An open pool file. Create with `Pool.open(path)`; close with `.close()`."""

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
