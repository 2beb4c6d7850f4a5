"""NOTIFY payloads built in Python: exact decimals, ISO times, the row-less shapes.

The row payloads (single row, batch split under 7,900 bytes, refetch, closed insert) are built
in SQL by the statement that wrote the rows: ``tests/db/test_writer.py`` checks them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from coldharbour.db import notify


def test_notify_json_keeps_exact_decimals_and_iso_times() -> None:
    text = notify.to_json({"row": {"qty": Decimal("10.5"), "mkt_px": Decimal("187.2500"),
                                   "updated_at": datetime(2026, 1, 5, 15, tzinfo=UTC)}})

    assert text == '{"row":{"qty":10.5,"mkt_px":187.2500,"updated_at":"2026-01-05T15:00:00Z"}}'


def test_notify_heartbeat_and_metrics_shapes() -> None:
    at = datetime(2026, 1, 5, 15, 0, 0, 123456, tzinfo=UTC)

    beat = notify.heartbeat("pos_channel_demo", at)
    metrics = notify.metrics_changed("metrics_channel_demo", at)

    assert beat.channel == "pos_channel_demo"
    assert json.loads(beat.payload) == {"op": "heartbeat", "version": "2026-01-05T15:00:00.123456Z"}
    assert json.loads(metrics.payload) == {"op": "metrics", "updated_at": "2026-01-05T15:00:00.123456Z"}
