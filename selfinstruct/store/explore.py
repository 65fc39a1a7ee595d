"""The curated pool: browsing, editing, and the rows exports stream (issue 8)."""
from __future__ import annotations


class ExploreQueries:
    pass
