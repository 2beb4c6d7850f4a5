"""Output contract (docs/architecture.md §8): one JSON object per line with value, baseline and ratio."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit(name: str, value: float | None, unit: str, baseline: float | None = None, **extra: Any) -> None:
    """Print one figure; ``ratio`` = value / baseline (None when either is missing)."""
    ratio = None if value is None or not baseline else round(value / baseline, 4)
    record = {"name": name, "value": _round(value), "unit": unit, "baseline": _round(baseline), "ratio": ratio}
    record.update({k: _round(v) if isinstance(v, float) else v for k, v in extra.items()})
    print(json.dumps(record), flush=True)


def note(message: str) -> None:
    """Progress on stderr (stdout stays pure JSON lines)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def percentile(values: list[float], pct: float) -> float:
    """Return the ``pct`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]
