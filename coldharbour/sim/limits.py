"""The fake broker's REST rate limits and request counts, per API key (docs/broker-budget.md).

Alpaca answers at most 200 REST requests a minute per key; beyond that it answers HTTP 429
``{"code": 42910000, "message": "rate limit exceeded"}``. Every answer carries the key's window
in three headers: ``X-RateLimit-Limit`` (requests a minute), ``X-RateLimit-Remaining`` (left in
the window) and ``X-RateLimit-Reset`` (Unix seconds when the window has room again).

``RestLimits`` keeps, per key and per host kind (``trading``: ``/v2`` account, orders,
positions, activities…; ``data``: the market-data routes ``/v2/stocks/…``, ``/v1beta3/crypto/…``
that Alpaca serves on ``data.alpaca.markets`` and counts apart), the times of the requests of the
last minute (a sliding window), every request's time since the start (for measurements:
``GET /sim/requests?since=<unix s>``, also split by the client's ``User-Agent`` product, e.g.
``coldharbour-rest`` or ``APCA-PY``) and how many were refused. The limits change at run time
through ``POST /sim/config`` (``rest_limit_per_min``, ``data_limit_per_min``; 0 = no limit).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Final

DEFAULT_REST_LIMIT_PER_MIN: Final = 200  # Alpaca's trading API, per key
DEFAULT_DATA_LIMIT_PER_MIN: Final = 200  # Alpaca's market-data API, Basic plan, per key
WINDOW_S: Final = 60.0
KEPT_TIMES: Final = 200_000  # request times kept per key and kind for /sim/requests
DATA_PREFIXES: Final = ("/v2/stocks/", "/v1beta3/crypto/", "/v1beta1/")
KINDS: Final = ("trading", "data")


def kind_of(path: str) -> str:
    """Return ``data`` for a market-data route, else ``trading``."""
    return "data" if path.startswith(DATA_PREFIXES) else "trading"


@dataclass
class _KeyWindow:
    recent: deque[float] = field(default_factory=deque)  # times of the last WINDOW_S, oldest first
    times: deque[float] = field(default_factory=lambda: deque(maxlen=KEPT_TIMES))
    refused: int = 0


@dataclass(frozen=True)
class Verdict:
    """Whether one request may pass, and the rate-limit headers of its answer."""

    allowed: bool
    headers: dict[str, str]


class RestLimits:
    """Sliding one-minute windows per (key, kind); see the module docstring."""

    def __init__(
        self, rest_per_min: int = DEFAULT_REST_LIMIT_PER_MIN, data_per_min: int = DEFAULT_DATA_LIMIT_PER_MIN
    ) -> None:
        self.per_min: dict[str, int] = {"trading": rest_per_min, "data": data_per_min}
        self._windows: dict[tuple[str, str], _KeyWindow] = {}
        self._agent_times: dict[tuple[str, str, str], deque[float]] = {}

    def check(self, key_id: str, path: str, now: float, agent: str = "") -> Verdict:
        """Count one request of ``key_id`` on ``path`` at ``now`` (Unix s); refuse it over the limit."""
        kind = kind_of(path)
        limit = self.per_min[kind]
        window = self._windows.setdefault((key_id, kind), _KeyWindow())
        recent = window.recent
        while recent and recent[0] <= now - WINDOW_S:
            recent.popleft()
        allowed = limit <= 0 or len(recent) < limit
        if allowed:
            recent.append(now)
            window.times.append(now)
            product = agent.split("/")[0].strip() or "unknown"
            self._agent_times.setdefault((key_id, kind, product), deque(maxlen=KEPT_TIMES)).append(now)
        else:
            window.refused += 1
        shown_limit = limit if limit > 0 else 0
        remaining = max(0, limit - len(recent)) if limit > 0 else 0
        # The window starts again (its oldest request leaves it) a minute after that request.
        reset = recent[0] + WINDOW_S if recent else now
        headers = {
            "X-RateLimit-Limit": str(shown_limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }
        return Verdict(allowed, headers)

    def counts(self, since: float, until: float = math.inf) -> dict[str, dict[str, object]]:
        """Return, per key, the requests let through in ``[since, until)`` per kind and the refusals so far."""
        result: dict[str, Counter[str]] = {}
        for (key_id, kind), window in self._windows.items():
            times = list(window.times)
            counted = bisect.bisect_left(times, until) - bisect.bisect_left(times, since)
            entry = result.setdefault(key_id, Counter())
            entry[kind] += counted
            entry[f"{kind}_refused"] += window.refused
        answer: dict[str, dict[str, object]] = {
            key: {k: entry[k] for k in (*KINDS, *(f"{k}_refused" for k in KINDS))} for key, entry in result.items()
        }
        for (key_id, kind, product), kept in self._agent_times.items():
            times = list(kept)
            counted = bisect.bisect_left(times, until) - bisect.bisect_left(times, since)
            agents = answer[key_id].setdefault("agents", {})
            assert isinstance(agents, dict)
            agents.setdefault(product, {"trading": 0, "data": 0})[kind] = counted
        return answer

    def config(self) -> dict[str, int]:
        """Return the limits as ``POST /sim/config`` takes them."""
        return {"rest_limit_per_min": self.per_min["trading"], "data_limit_per_min": self.per_min["data"]}
