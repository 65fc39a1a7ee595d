"""Quality studies: samples, labels and their statistics' raw data (issue 7)."""
from __future__ import annotations


class QualityQueries:
    pass
