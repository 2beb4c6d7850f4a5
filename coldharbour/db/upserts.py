"""The SQL of every change kind (``domain.changes``): composed once per table and variant.

Used only by ``db.writer``. Each change is **one statement** returning one row
``(changed, notified)``: the rows travel as one JSON parameter (an array of row arrays, encoded
in one C call; psycopg's per-column array dumpers cost more Python than the rest of a commit)
and are cast to their column types server-side; the upsert writes only when the stored row differs
(``ON CONFLICT … DO UPDATE … WHERE … IS DISTINCT FROM …``, STYLE §2.5 rule 4) and the
``pg_notify`` calls are made in the same statement from its ``RETURNING`` rows, so replaying a
message writes nothing and notifies nothing, and a commit needs no second round trip.
``updated_at``/``ingested_at`` are never part of a comparison.

NOTIFY payloads (SPEC §6) are built in SQL from each row's JSON text (computed by the writer
with ``db.notify``): a single changed open row is ``{"row": …}`` or ``{"op": "delete", …}``;
several are ``{"op": "batch", …}`` groups that stay under ``notify.MAX_PAYLOAD_BYTES``; a row
that cannot fit is ``{"op": "refetch", …}``. Grouping is by running size in buckets of half the
room (``_grouped``): an element never straddles more than one bucket boundary, so a group
never exceeds the room.

Column lists come from ``db.rows`` constants only; identifiers are ``psycopg.sql``; the
channel names are validated identifiers passed as literals.
"""

# SQL text here is assembled from fixed literals, column constants and numbers, never input:
# ruff: noqa: S608
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from psycopg import sql

from coldharbour.db import rows as r
from coldharbour.db.names import AccountNames, SharedNames, Table
from coldharbour.db.notify import MAX_PAYLOAD_BYTES
from coldharbour.domain.types import CLOSED_COLUMNS

_POSITION_KEY: Final = ("parent_id",)
_CLOSED_KEY: Final = ("entry_lot_id", "exit_order_id")


def _ids(names: Sequence[str], prefix: str = "") -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL(prefix) + sql.Identifier(n) for n in names)


def _input(columns: Sequence[str], types: Sequence[str], extra: Sequence[tuple[str, str]] = ()) -> sql.Composed:
    """Return ``input AS (SELECT (v->>0)::t0 AS c0, … , ord FROM jsonb_array_elements(%s::jsonb) …)``.

    The rows travel as **one** JSON parameter, an array of row arrays (``db.writer`` encodes it
    with msgspec in one C call: decimals as exact numbers, times as ISO-8601); PostgreSQL casts
    each element to its column type. ``extra`` columns follow the table's, as text.
    """
    names = [*columns, *(n for n, _ in extra)]
    casts = [*types, *(t for _, t in extra)]
    # The types are fixed literals from ``db.rows``, never input.
    fields = sql.SQL(", ").join(
        sql.SQL("(v->>" + str(i) + ")::" + t + " AS ") + sql.Identifier(n)
        for i, (n, t) in enumerate(zip(names, casts, strict=True))
    )
    return sql.SQL(
        "input AS (SELECT {f}, ord FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(v, ord))"
    ).format(f=fields)


def _upsert_cte(table: Table, columns: Sequence[str], key: Sequence[str], *, compare: Sequence[str] | None = None,
                stamp: str | None = "updated_at") -> sql.Composed:
    """Return ``up AS (INSERT … SELECT … FROM input ON CONFLICT (key) DO UPDATE … WHERE distinct RETURNING key)``."""
    updated = [c for c in columns if c not in key]
    compared = list(compare) if compare is not None else [c for c in updated if c != stamp]
    sets = [sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updated]
    if stamp is not None and stamp not in columns:
        sets.append(sql.SQL("{c} = now()").format(c=sql.Identifier(stamp)))
    return sql.SQL(
        "up AS (INSERT INTO {t} AS cur ({cols}) SELECT {cols} FROM input ON CONFLICT ({key}) DO UPDATE SET {sets} "
        "WHERE ({old}) IS DISTINCT FROM ({new}) RETURNING {ret})"
    ).format(
        t=table.ident, cols=_ids(columns), key=_ids(key), sets=sql.SQL(", ").join(sets),
        old=_ids(compared, "cur."), new=_ids(compared, "EXCLUDED."), ret=_ids(key, "cur."),
    )  # fmt: skip


def _count_only(*ctes: sql.Composable) -> sql.Composed:
    return sql.SQL("WITH {ctes} SELECT (SELECT count(*) FROM up), 0").format(ctes=sql.SQL(", ").join(ctes))


def _grouped(wraps: Sequence[tuple[str, str]], refetch: str, where: str) -> str:
    """Return the SELECT of grouped payloads from ``sized(part, ord, j, k, l)`` (``l``: bytes + 1).

    ``wraps[part]`` is the (prefix, suffix) around part ``part``'s elements (every wrapper has
    the same length); ``refetch`` is the payload expression for a row (part 0) too big for any
    group; ``where`` selects the multi-change case. Columns: ``s`` (1 refetch, 2+ groups), ``o``, ``payload``.
    """
    room = MAX_PAYLOAD_BYTES - len(wraps[0][0]) - len(wraps[0][1]) + 1  # each element counted with a comma
    half = room // 2
    agg = "string_agg(j, ',' ORDER BY ord)"
    wrapped = " ".join(f"WHEN {part} THEN '{prefix}' || {agg} || '{suffix}'"
                       for part, (prefix, suffix) in enumerate(wraps))
    return (
        f"SELECT 1 AS s, ord AS o, {refetch} AS payload FROM sized WHERE {where} AND part = 0 AND l > {room} "
        f"UNION ALL SELECT 2 + part, min(ord), CASE part {wrapped} END FROM (SELECT part, ord, j, "
        f"CASE WHEN l > {half} THEN -ord ELSE floor(sum(l) OVER (PARTITION BY part, l > {half} ORDER BY ord) / {half}) "
        f"END AS g FROM sized WHERE {where} AND NOT (part = 0 AND l > {room})) AS x GROUP BY part, g"
    )


def _announced(ctes: list[sql.Composable], body: str, counts: str, channel: str) -> sql.Composed:
    """Return ``WITH ctes, body SELECT counts, count(pg_notify(channel, payload)) FROM notes`` (in order)."""
    return (sql.SQL("WITH ") + sql.SQL(", ").join(ctes) + sql.SQL(", " + body + " SELECT " + counts)
            + sql.SQL(", count(pg_notify(") + sql.Literal(channel)
            + sql.SQL(", payload)) FROM (SELECT payload FROM notes ORDER BY s, o) AS ordered"))


def _numbered(text: str) -> str:
    """Return ``text`` with its ``%s`` placeholders numbered ``$1``, ``$2``… (no other ``%`` occurs)."""
    parts = text.split("%s")
    if "%" in "".join(parts):
        raise ValueError("a statement holds a literal % besides its placeholders")
    return "".join(part + (f"${i}" if i < len(parts) else "") for i, part in enumerate(parts, 1))


class Statements:
    """Every statement of the write path, composed once per table and variant, then cached."""

    def __init__(self, shared: SharedNames) -> None:
        self.shared = shared
        self._cache: dict[tuple[object, ...], sql.SQL] = {}

    def _get(self, key: tuple[object, ...], build: Callable[[], sql.Composable]) -> sql.SQL:
        """Return the cached statement text of ``key`` (composed on first use, never again).

        Placeholders become PostgreSQL's own ``$1…$n`` (the writer uses a raw cursor): psycopg
        then sends the text as is instead of parsing it on every execute (it caches its
        parse only for statements under 4 KB; the announced ones are longer).
        """
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = sql.SQL(_numbered(build().as_string()))
        return found

    # -- open positions and closed slices (announced) ------------------------------------------

    def positions(self, names: AccountNames, *, upserts: bool, deletes: bool, announce: bool) -> sql.SQL:
        """Return the positions statement; params: the row columns (+ row JSON), then the deleted ids."""
        return self._get(("positions", names.slug, upserts, deletes, announce),
                         lambda: _positions(names, upserts=upserts, deletes=deletes, announce=announce))

    def closed(self, names: AccountNames, *, upserts: bool, deletes: bool) -> sql.SQL:
        """Return the closed-slices statement; params: the slice columns, JSON, announce flags, then deleted keys."""
        return self._get(("closed", names.slug, upserts, deletes),
                         lambda: _closed(names, upserts=upserts, deletes=deletes))

    def metrics(self, names: AccountNames) -> sql.SQL:
        """Return the KPI document write; params: payload, updated_at, notification payload."""
        return self._get(("metrics", names.slug), lambda: _metrics(names))

    def heartbeat(self, names: AccountNames) -> sql.SQL:
        """Return the UI heartbeat; params: the payload."""
        return self._get(("heartbeat", names.slug), lambda: sql.SQL("SELECT 0, count(pg_notify({c}, %s))").format(
            c=sql.Literal(names.pos_channel)))

    # -- raw records and analytics (not announced) -----------------------------------------------

    def raw_orders(self, names: AccountNames) -> sql.SQL:
        """Return the raw-order upsert; an older ``updated_at`` never overwrites (D38)."""
        return self._get(("raw_orders", names.slug), lambda: _raw_orders(names.raw_orders))

    def raw_activities(self, names: AccountNames, *, by_execution: bool) -> sql.SQL:
        """Return the raw-activity upsert (FILLs by ``execution_id`` or every kind by ``id``)."""
        return self._get(("raw_activities", names.slug, by_execution),
                         lambda: _raw_activities(names.raw_activities, by_execution=by_execution))

    def simple(self, kind: str, table: Table) -> sql.SQL:
        """Return the plain upsert of ``kind`` (cash_flows, daily, intraday, schedule) into ``table``."""
        columns, types, key = _SIMPLE[kind]
        return self._get(("simple", kind, table.schema, table.name),
                         lambda: _count_only(_input(columns, types), _upsert_cte(table, columns, key)))

    def delete_daily_except(self, names: AccountNames) -> sql.SQL:
        """Return the delete of daily rows not in the given dates; params: the dates."""
        return self._get(("daily_keep", names.slug), lambda: sql.SQL(
            "WITH up AS (DELETE FROM {t} WHERE NOT (date = ANY(%s::date[])) RETURNING date) "
            "SELECT (SELECT count(*) FROM up), 0").format(t=names.equity_full.ident))

    def delete_cash_flows(self, names: AccountNames) -> sql.SQL:
        """Return the delete of cash flows by id (activities the broker canceled); params: the ids."""
        return self._get(("cash_flows_delete", names.slug), lambda: sql.SQL(
            "WITH up AS (DELETE FROM {t} WHERE id = ANY(%s::text[]) RETURNING id) "
            "SELECT (SELECT count(*) FROM up), 0").format(t=names.cash_flows.ident))

    def replace_schedule(self) -> sql.SQL:
        """Return the delete of sessions in a refreshed range that the refresh no longer has.

        Params: the first and last date of the range, the dates the refresh keeps.
        """
        return self._get(("replace_schedule",), lambda: sql.SQL(
            "WITH up AS (DELETE FROM {t} WHERE session_date BETWEEN %s::date AND %s::date "
            "AND NOT (session_date = ANY(%s::date[])) RETURNING session_date) "
            "SELECT (SELECT count(*) FROM up), 0").format(t=self.shared.market_schedule.ident))

    def prune_schedule(self) -> sql.SQL:
        """Return the delete of sessions dated before a date; params: the date."""
        return self._get(("prune_schedule",), lambda: sql.SQL(
            "WITH up AS (DELETE FROM {t} WHERE session_date < %s::date RETURNING session_date) "
            "SELECT (SELECT count(*) FROM up), 0").format(t=self.shared.market_schedule.ident))

    def latest_prices(self) -> sql.SQL:
        """Return the latest-prices upsert; an older ``ts`` never wins."""
        return self._get(("latest_prices",), lambda: sql.SQL(
            "WITH {input}, up AS (INSERT INTO {t} AS cur (symbol, price, ts) SELECT symbol, price, ts FROM input "
            "ON CONFLICT (symbol) DO UPDATE SET price = EXCLUDED.price, ts = EXCLUDED.ts "
            "WHERE EXCLUDED.ts >= cur.ts AND (cur.price, cur.ts) IS DISTINCT FROM (EXCLUDED.price, EXCLUDED.ts) "
            "RETURNING cur.symbol) SELECT (SELECT count(*) FROM up), 0").format(
                t=self.shared.latest_prices.ident, input=_input(_PRICE_COLUMNS, _PRICE_TYPES)))

    def price_bars(self) -> sql.SQL:
        """Return the 1-minute bar merge: a stored bar keeps its open, highs and lows widen."""
        return self._get(("price_bars",), lambda: sql.SQL(
            "WITH {input}, up AS (INSERT INTO {t} AS cur (symbol, ts, open, high, low, close, volume) "
            "SELECT symbol, ts, open, high, low, close, volume FROM input "
            "ON CONFLICT (symbol, ts) DO UPDATE SET high = greatest(cur.high, EXCLUDED.high), "
            "low = least(cur.low, EXCLUDED.low), close = EXCLUDED.close, "
            "volume = greatest(cur.volume, EXCLUDED.volume) "
            "WHERE (cur.high, cur.low, cur.close, cur.volume) IS DISTINCT FROM (greatest(cur.high, EXCLUDED.high), "
            "least(cur.low, EXCLUDED.low), EXCLUDED.close, greatest(cur.volume, EXCLUDED.volume)) "
            "RETURNING cur.symbol) "
            "SELECT (SELECT count(*) FROM up), 0").format(
                t=self.shared.price_bars_1min.ident, input=_input(_BAR_COLUMNS, _BAR_TYPES)))

    def quarantine(self) -> sql.SQL:
        """Return the insert of one quarantined change; params: account, kind, key, raw, error."""
        return self._get(("quarantine",), lambda: sql.SQL(
            "WITH up AS (INSERT INTO {t} (account, kind, key, raw, error) VALUES (%s, %s, %s, %s, %s) RETURNING id) "
            "SELECT (SELECT count(*) FROM up), 0").format(t=self.shared.quarantine.ident))


_PRICE_COLUMNS: Final = ("symbol", "price", "ts")
_PRICE_TYPES: Final = ("text", "numeric", "timestamptz")
_BAR_COLUMNS: Final = ("symbol", "ts", "open", "high", "low", "close", "volume")
_BAR_TYPES: Final = ("text", "timestamptz", "numeric", "numeric", "numeric", "numeric", "numeric")
_SIMPLE: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]] = {
    "cash_flows": (r.CASH_FLOW_COLUMNS, r.CASH_FLOW_TYPES, ("id",)),
    "daily": (r.DAILY_COLUMNS, r.DAILY_TYPES, ("date",)),
    "intraday": (r.INTRADAY_COLUMNS, r.INTRADAY_TYPES, ("ts",)),
    "schedule": (r.SESSION_COLUMNS, r.SESSION_TYPES, ("session_date",)),
}


def _positions(names: AccountNames, *, upserts: bool, deletes: bool, announce: bool) -> sql.Composed:
    table = names.positions
    ctes: list[sql.Composable] = []
    if upserts:
        ctes.append(_input(r.POSITION_COLUMNS, r.POSITION_TYPES, [("j", "text")] if announce else []))
        ctes.append(_upsert_cte(table, r.POSITION_COLUMNS, _POSITION_KEY))
    else:
        ctes.append(sql.SQL("up AS (SELECT NULL::text AS parent_id WHERE false)"))
    if deletes:
        ctes.append(sql.SQL("del AS (DELETE FROM {t} WHERE parent_id = ANY(%s::text[]) RETURNING parent_id)").format(
            t=table.ident))
    else:
        ctes.append(sql.SQL("del AS (SELECT NULL::text AS parent_id WHERE false)"))
    counts = sql.SQL("(SELECT count(*) FROM up) + (SELECT count(*) FROM del)")
    if not announce:
        return sql.SQL("WITH {ctes} SELECT {n}, 0").format(ctes=sql.SQL(", ").join(ctes), n=counts)
    rows = ("SELECT 0 AS part, i.ord, i.j, i.parent_id AS k FROM up JOIN input i USING (parent_id)" if upserts
            else "SELECT 0 AS part, 0::bigint AS ord, NULL::text AS j, NULL::text AS k WHERE false")
    items = (rows + " UNION ALL SELECT 1, row_number() OVER (ORDER BY parent_id), "
             "to_json(parent_id)::text, parent_id FROM del")
    refetch = "'{\"op\":\"refetch\",\"parent_id\":' || to_json(k)::text || '}'"
    single = ("SELECT 0 AS s, 0::bigint AS o, CASE WHEN part = 1 THEN '{\"op\":\"delete\",\"parent_id\":' || j || '}' "
              f"WHEN l + 7 <= {MAX_PAYLOAD_BYTES} THEN '{{\"row\":' || j || '}}' ELSE {refetch} END AS payload "
              "FROM sized WHERE (SELECT count(*) FROM items) = 1")
    grouped = _grouped([('{"op":"batch","rows":[', '],"deletes":[]}'), ('{"op":"batch","rows":[],"deletes":[', "]}")],
                       refetch, "(SELECT count(*) FROM items) > 1")
    body = (f"items AS ({items}), sized AS (SELECT part, ord, j, k, octet_length(j) + 1 AS l FROM items), "
            f"notes AS ({single} UNION ALL {grouped})")
    return _announced(ctes, body, "(SELECT count(*) FROM up) + (SELECT count(*) FROM del)", names.pos_channel)


def _closed(names: AccountNames, *, upserts: bool, deletes: bool) -> sql.Composed:
    table = names.closed
    ctes: list[sql.Composable] = []
    if deletes:
        ctes.append(sql.SQL(
            "del AS (DELETE FROM {t} AS c USING unnest(%s::text[], %s::text[]) AS k(lot, exit) "
            "WHERE c.entry_lot_id = k.lot AND c.exit_order_id = k.exit RETURNING c.entry_lot_id)"
        ).format(t=table.ident))
    else:
        ctes.append(sql.SQL("del AS (SELECT NULL::text AS entry_lot_id WHERE false)"))
    if not upserts:
        return sql.SQL("WITH {ctes} SELECT (SELECT count(*) FROM del), 0").format(ctes=sql.SQL(", ").join(ctes))
    ctes.append(_input(CLOSED_COLUMNS, r.CLOSED_TYPES, [("j", "text"), ("ann", "text")]))
    ctes.append(_upsert_cte(table, CLOSED_COLUMNS, _CLOSED_KEY))
    items = ("SELECT 0 AS part, i.ord, i.j, '{\"op\":\"refetch\",\"entry_lot_id\":' || to_json(i.entry_lot_id) || "
             "',\"exit_order_id\":' || to_json(i.exit_order_id) || '}' AS k FROM input i "
             "WHERE i.ann = 'always' OR (i.ann = 'if_changed' AND EXISTS "
             "(SELECT 1 FROM up WHERE up.entry_lot_id = i.entry_lot_id AND up.exit_order_id = i.exit_order_id))")
    grouped = _grouped([('{"op":"insert","rows":[', "]}")], "k", "true")
    body = (f"items AS ({items}), sized AS (SELECT part, ord, j, k, octet_length(j) + 1 AS l FROM items), "
            f"notes AS ({grouped})")
    return _announced(ctes, body, "(SELECT count(*) FROM up) + (SELECT count(*) FROM del)", names.closed_channel)


def _metrics(names: AccountNames) -> sql.Composed:
    """The comparison ignores ``as_of`` (the computation time): a document is new only when a KPI changed."""
    return sql.SQL(
        "WITH up AS (INSERT INTO {t} AS cur (id, metrics_payload, updated_at) "
        "VALUES ('latest', %s::text, %s::timestamptz) "
        "ON CONFLICT (id) DO UPDATE SET metrics_payload = EXCLUDED.metrics_payload, updated_at = EXCLUDED.updated_at "
        "WHERE (cur.metrics_payload::jsonb - 'as_of') IS DISTINCT FROM (EXCLUDED.metrics_payload::jsonb - 'as_of') "
        "RETURNING 1) SELECT (SELECT count(*) FROM up), (SELECT count(pg_notify({c}, %s::text)) FROM up)"
    ).format(t=names.metrics.ident, c=sql.Literal(names.metrics_channel))


def _raw_orders(table: Table) -> sql.Composed:
    """Links and legs a version lacks (a stream payload without ``legs``/``parent_id``) keep their stored value."""
    keep = {"parent_id", "replaced_by", "replaces", "legs"}
    updated = [c for c in r.ORDER_COLUMNS if c != "id"]
    template = {True: "coalesce(EXCLUDED.{c}, cur.{c})", False: "EXCLUDED.{c}"}
    sets = [sql.SQL("{c} = " + template[c in keep]).format(c=sql.Identifier(c)) for c in updated]
    sets.append(sql.Composed([sql.SQL("ingested_at = now()")]))
    incoming = [sql.SQL(template[c in keep]).format(c=sql.Identifier(c)) for c in updated]
    up = sql.SQL(
        "up AS (INSERT INTO {t} AS cur ({cols}) SELECT {cols} FROM input ON CONFLICT (id) DO UPDATE SET {sets} "
        "WHERE (cur.updated_at IS NULL OR EXCLUDED.updated_at >= cur.updated_at) "
        "AND ({old}) IS DISTINCT FROM ({new}) RETURNING cur.id)"
    ).format(
        t=table.ident, cols=_ids(r.ORDER_COLUMNS), sets=sql.SQL(", ").join(sets),
        old=_ids(updated, "cur."), new=sql.SQL(", ").join(incoming),
    )  # fmt: skip
    return _count_only(_input(r.ORDER_COLUMNS, r.ORDER_TYPES), up)


def _raw_activities(table: Table, *, by_execution: bool) -> sql.Composed:
    """FILLs with an ``execution_id`` conflict on the partial unique index (one row per execution); D39."""
    if by_execution:
        key = sql.SQL("(execution_id) WHERE activity_type = 'FILL' AND execution_id IS NOT NULL")
    else:
        key = sql.SQL("(id)")
    updated = [c for c in r.ACTIVITY_COLUMNS if c != "id" and (c != "execution_id" or not by_execution)]
    up = sql.SQL(
        "up AS (INSERT INTO {t} AS cur ({cols}) SELECT {cols} FROM input ON CONFLICT {key} DO UPDATE SET {sets}, "
        "ingested_at = now() WHERE ({old}) IS DISTINCT FROM ({new}) RETURNING cur.id)"
    ).format(
        t=table.ident, cols=_ids(r.ACTIVITY_COLUMNS), key=key,
        sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updated),
        old=_ids(updated, "cur."), new=_ids(updated, "EXCLUDED."),
    )  # fmt: skip
    return _count_only(_input(r.ACTIVITY_COLUMNS, r.ACTIVITY_TYPES), up)
