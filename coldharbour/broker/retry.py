"""Capped exponential backoff with equal jitter, shared by the REST adapter and the stream.

Attempt ``n`` (from 1) sleeps a random time in ``[c/2, c]`` with ``c = min(cap, base·2^(n-1))``:
the same shape alpaca-py 0.44 uses for its stream (ALPACA.md §4), so a fleet of restarted
clients spreads out instead of hammering the broker in lockstep.
"""

from __future__ import annotations

import random
from typing import Final

_RANDOM: Final = random.Random()  # noqa: S311 - jitter, not cryptography


def backoff_delay_s(attempt: int, base_s: float, cap_s: float, rng: random.Random = _RANDOM) -> float:
    """Return the delay before retry ``attempt`` (1-based), in seconds, with equal jitter."""
    ceiling = min(cap_s, base_s * 2 ** max(0, min(attempt - 1, 30)))
    return float(ceiling / 2 + rng.uniform(0, ceiling / 2))
