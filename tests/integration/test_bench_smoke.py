"""`scripts/bench --quick` prints every figure as a JSON line with the contract keys.

It checks only that each figure was produced (docs/architecture.md §8), never its value: targets live in
the bench output, not in tests.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIGURES = (
    "feed_ingest", "alpaca_feed_ingest", "tick_to_mark", "fill_to_notify", "flush_10k", "rebuild_1m", "rss_idle",
    "rss_100k_lots", "notify_to_browser", "notify_to_browser_sse_clients",
)  # fmt: skip
KEYS = {"name", "value", "unit", "baseline", "ratio"}


def test_bench_quick_prints_every_figure() -> None:
    done = subprocess.run([str(ROOT / "scripts" / "bench"), "--quick"], cwd=ROOT, capture_output=True, text=True,
                          timeout=280, check=False)  # fmt: skip

    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    by_name = {line["name"]: line for line in lines}
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(by_name) == sorted(FIGURES), done.stderr[-2000:]
    for name in FIGURES:
        assert set(by_name[name]) >= KEYS, name
        assert "error" not in by_name[name], (name, by_name[name]["error"], done.stderr[-2000:])
        assert by_name[name]["value"] is not None, (name, done.stderr[-2000:])
    assert by_name["fill_to_notify"]["floor_p99_ms"] is not None  # the hop floor beside it
    assert by_name["fill_to_notify"]["ratio_p99_to_floor"] is not None
    assert by_name["fill_to_notify"]["cpu_over_floor_ms"] is not None
