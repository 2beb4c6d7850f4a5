"""`scripts/bench [--quick] [--only a,b]`: set everything up, print one JSON line per figure.

``accounts_scale`` (three whole stacks of 1, 10 and 100 accounts: several minutes) runs in a full
run or when named with ``--only``; ``--quick`` leaves it out unless named.

It reports; it does not judge: the exit code is 0 unless the harness itself broke. A figure
that cannot be measured prints ``{"name": ..., "value": null, "error": "..."}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable

from scripts.benchmarks import stack

Figure = Callable[[str, bool], None]
NOT_QUICK = ("accounts_scale",)  # capacity, not a hot path: too long for the quick run


def _figures() -> dict[str, Figure]:
    from scripts.benchmarks import accounts, alpaca_feed, dashboard, feed, fills, flush, memory, rebuild, ticks

    return {
        "feed_ingest": feed.run,
        "alpaca_feed_ingest": alpaca_feed.run,
        "tick_to_mark": ticks.run,
        "fill_to_notify": fills.run,
        "flush_10k": flush.run,
        "rebuild_1m": rebuild.run,
        "rss_idle": memory.run_idle,
        "rss_100k_lots": memory.run_lots,
        "accounts_scale": accounts.run,
        "notify_to_browser": dashboard.run,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks."""
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, same code paths (< 2 minutes)")
    parser.add_argument("--only", default="", help="comma-separated figure names")
    args = parser.parse_args(argv)
    figures = _figures()
    wanted = [n for n in args.only.split(",") if n] or [n for n in figures if not (args.quick and n in NOT_QUICK)]
    unknown = [n for n in wanted if n not in figures]
    if unknown:
        print(f"scripts/bench: unknown figure(s) {unknown} (known: {', '.join(figures)})", file=sys.stderr)
        return 2
    with stack.cluster() as pg:
        for name in wanted:
            database = pg.create_database()
            try:
                figures[name](pg.dsn(database).reveal(), args.quick)
            except Exception as e:  # one broken figure must not hide the others
                traceback.print_exc()
                print(json.dumps({"name": name, "value": None, "unit": None, "baseline": None, "ratio": None,
                                  "error": f"{type(e).__name__}: {e}"}), flush=True)
            finally:
                pg.drop_database(database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
