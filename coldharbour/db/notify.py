"""NOTIFY payloads: the push contract with the UI (docs/spec.md §6).

Payloads are JSON with decimals as JSON numbers (exact: msgspec writes the Decimal's digits)
and times as ISO-8601 strings. Row payloads (``{"row": …}``, ``{"op": "batch", …}``,
``{"op": "insert", …}``) are assembled in SQL — only there — from each row's ``to_json`` text by
the statement that wrote the rows (``db.upserts``), so only rows that really changed are
announced; no payload exceeds ``MAX_PAYLOAD_BYTES`` (batches are split, a row that cannot fit is
announced as ``{"op": "refetch", ...}``, docs/defects.md D51). Here: the JSON encoding and the payloads without rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, NamedTuple

import msgspec

# PostgreSQL's limit is 8000 bytes including the channel name; keep a margin.
MAX_PAYLOAD_BYTES: Final = 7900
_JSON: Final = msgspec.json.Encoder(decimal_format="number")


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


def metrics_changed(channel: str, updated_at: datetime) -> Notification:
    """Return ``{"op": "metrics", "updated_at": ...}``."""
    return Notification(channel, to_json({"op": "metrics", "updated_at": updated_at}))
