"""NOTIFY payloads: the push contract with the UI (SPEC.md §6).

Payloads are JSON with decimals as JSON numbers (exact: msgspec writes the Decimal's digits)
and times as ISO-8601 strings. No payload exceeds ``MAX_PAYLOAD_BYTES``: batches are split, and
a single row that cannot fit is announced as ``{"op": "refetch", ...}`` (fixes D51).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final, NamedTuple

import msgspec

# PostgreSQL's limit is 8000 bytes including the channel name; keep a margin.
MAX_PAYLOAD_BYTES: Final = 7900
_JSON: Final = msgspec.json.Encoder(decimal_format="number")

Row = Mapping[str, object]


class Notification(NamedTuple):
    """One ``pg_notify(channel, payload)`` to send in the commit that it announces."""

    channel: str
    payload: str


def to_json(value: object) -> str:
    """Return ``value`` as compact JSON (Decimal → number, datetime → ISO-8601)."""
    return _JSON.encode(value).decode()


def heartbeat(channel: str, now: datetime) -> Notification:
    """Return the UI heartbeat ``{"op": "heartbeat", "version": "<ISO UTC>"}``."""
    return Notification(channel, to_json({"op": "heartbeat", "version": now}))


def _split(items: Sequence[object], wrap: str, extra: Mapping[str, object]) -> list[list[object]]:
    """Greedily group ``items`` so that each ``{..extra, wrap: group}`` fits the limit."""
    overhead = len(to_json({**extra, wrap: []}).encode())
    groups: list[list[object]] = []
    current: list[object] = []
    size = overhead
    for item in items:
        item_size = len(to_json(item).encode()) + 1  # +1 for the comma
        if current and size + item_size > MAX_PAYLOAD_BYTES:
            groups.append(current)
            current, size = [], overhead
        current.append(item)
        size += item_size
    if current:
        groups.append(current)
    return groups


def position_changes(
    channel: str, rows: Sequence[Row], deletes: Sequence[str], *, key: str = "parent_id"
) -> list[Notification]:
    """Return the notifications announcing upserted ``rows`` and deleted keys on ``channel``."""
    if not rows and not deletes:
        return []
    if len(rows) + len(deletes) == 1:
        payload = to_json({"row": rows[0]}) if rows else to_json({"op": "delete", key: deletes[0]})
        if len(payload.encode()) <= MAX_PAYLOAD_BYTES:
            return [Notification(channel, payload)]
        return [Notification(channel, to_json({"op": "refetch", key: rows[0][key]}))]
    notes: list[Notification] = []
    fitting: list[Row] = []
    for row in rows:
        if len(to_json({"op": "batch", "rows": [row], "deletes": []}).encode()) > MAX_PAYLOAD_BYTES:
            notes.append(Notification(channel, to_json({"op": "refetch", key: row[key]})))
        else:
            fitting.append(row)
    for group in _split(fitting, "rows", {"op": "batch", "deletes": []}):
        notes.append(Notification(channel, to_json({"op": "batch", "rows": group, "deletes": []})))
    for group in _split(list(deletes), "deletes", {"op": "batch", "rows": []}):
        notes.append(Notification(channel, to_json({"op": "batch", "rows": [], "deletes": group})))
    return notes


def closed_inserted(channel: str, rows: Sequence[Row]) -> list[Notification]:
    """Return ``{"op": "insert", "rows": [...]}`` notifications for final closed slices."""
    return [
        Notification(channel, to_json({"op": "insert", "rows": group}))
        for group in _split(list(rows), "rows", {"op": "insert"})
    ]


def metrics_changed(channel: str, updated_at: datetime) -> Notification:
    """Return ``{"op": "metrics", "updated_at": ...}``."""
    return Notification(channel, to_json({"op": "metrics", "updated_at": updated_at}))
