"""NOTIFY payloads: the UI contract shapes and the 7,900-byte limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from coldharbour.db import notify


def _row(parent_id: str, pad: int = 0) -> dict[str, object]:
    return {"parent_id": parent_id, "symbol": "AAPL", "qty": Decimal("10.5"), "mkt_px": Decimal("187.2500"),
            "updated_at": datetime(2026, 1, 5, 15, tzinfo=UTC), "note": "x" * pad}


def test_notify_single_row_is_row_payload_with_exact_decimals() -> None:
    [note] = notify.position_changes("pos_channel_demo", [_row("p1")], [])

    payload = json.loads(note.payload)
    assert note.channel == "pos_channel_demo"
    assert payload["row"]["qty"] == 10.5
    assert '"mkt_px":187.2500' in note.payload
    assert payload["row"]["updated_at"] == "2026-01-05T15:00:00Z"


def test_notify_single_delete() -> None:
    [note] = notify.position_changes("c", [], ["p1"])

    assert json.loads(note.payload) == {"op": "delete", "parent_id": "p1"}


def test_notify_large_batch_is_split_under_limit_and_loses_nothing() -> None:
    rows = [_row(f"p{i}", pad=300) for i in range(100)]
    deletes = [f"d{i}" for i in range(500)]

    notes = notify.position_changes("c", rows, deletes)

    payloads = [json.loads(n.payload) for n in notes]
    assert all(len(n.payload.encode()) <= notify.MAX_PAYLOAD_BYTES for n in notes)
    assert len(notes) > 2
    assert [r["parent_id"] for p in payloads for r in p["rows"]] == [f"p{i}" for i in range(100)]
    assert [d for p in payloads for d in p["deletes"]] == deletes
    assert {p["op"] for p in payloads} == {"batch"}


def test_notify_oversized_row_becomes_refetch() -> None:
    [single] = notify.position_changes("c", [_row("big", pad=9000)], [])
    batch = notify.position_changes("c", [_row("big", pad=9000), _row("small")], [])

    assert json.loads(single.payload) == {"op": "refetch", "parent_id": "big"}
    assert json.loads(batch[0].payload) == {"op": "refetch", "parent_id": "big"}
    assert json.loads(batch[1].payload)["rows"][0]["parent_id"] == "small"


def test_notify_nothing_changed_sends_nothing() -> None:
    assert notify.position_changes("c", [], []) == []
    assert notify.closed_inserted("c", []) == []
