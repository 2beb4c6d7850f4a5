"""Idempotent write statements (used only through ``db.writer`` by ``state``).

Every upsert writes only when the stored row differs (``ON CONFLICT … DO UPDATE … WHERE …
IS DISTINCT FROM …``) and ``RETURNING`` reports the rows that really changed, so replaying a
message writes nothing and notifies nothing (STYLE.md §2.5 rule 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from psycopg import sql

from coldharbour.db.names import Table
from coldharbour.db.writer import Step


def latest_prices(table: Table, prices: Sequence[tuple[str, Decimal, datetime]]) -> Step:
    """Return one statement upserting (symbol, price, ts) rows; an older ``ts`` never wins."""
    statement = sql.SQL(
        """INSERT INTO {t} AS cur (symbol, price, ts)
           SELECT * FROM unnest(%s::text[], %s::numeric[], %s::timestamptz[])
           ON CONFLICT (symbol) DO UPDATE SET price = EXCLUDED.price, ts = EXCLUDED.ts
           WHERE EXCLUDED.ts >= cur.ts AND (cur.price, cur.ts) IS DISTINCT FROM (EXCLUDED.price, EXCLUDED.ts)
           RETURNING symbol"""
    ).format(t=table.ident)
    return Step(statement, ([p[0] for p in prices], [p[1] for p in prices], [p[2] for p in prices]))
