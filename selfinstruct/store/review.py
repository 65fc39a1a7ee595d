"""Rejected candidates: paged browsing, rescue, confirm and undo (issue 6)."""
from __future__ import annotations


class ReviewQueries:
    pass
