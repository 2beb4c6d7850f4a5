"""The SQL of every change kind (``domain.changes``), and how several become one statement.

Used only by ``db.writer``. Each change is one **part**: the common table expressions that write
its rows (``ctes``) and two counts it adds to the statement's one result row — rows changed and
notifications sent. A commit's parts are joined into **one statement**
(``WITH <every part's CTEs> SELECT <Σ changed>, <Σ notified>``), composed once per sequence of
part kinds, cached and prepared server-side; on the autocommit writer connection that one
statement is the whole transaction, one round trip. Two parts that write the same table never
share a statement (a row could be touched twice; ``Statements.group`` starts a new one, and the
writer then sends them in one pipelined transaction).

Inside a part: the rows travel as one JSON parameter (an array of row arrays, encoded in one C
call; psycopg's per-column array dumpers cost more Python than the rest of a commit) and are
cast to their column types server-side; the upsert writes only when the stored row differs
(``ON CONFLICT … DO UPDATE … WHERE … IS DISTINCT FROM …``, docs/architecture.md §7) and the
``pg_notify`` calls are made in the same statement from its ``RETURNING`` rows, so replaying a
message writes nothing and notifies nothing, and a commit needs no second round trip.
``updated_at``/``ingested_at`` are never part of a comparison. Every CTE name carries its part's
prefix (``c0_``, ``c1_``…): parts never see each other's rows.

NOTIFY payloads (docs/spec.md §6) are built here, in SQL, from each row's JSON text (computed by
the writer with ``db.notify.to_json``): a single changed open row is ``{"row": …}`` or ``{"op": "delete", …}``;
several are ``{"op": "batch", …}`` groups that stay under ``notify.MAX_PAYLOAD_BYTES``; a row
that cannot fit is ``{"op": "refetch", …}``. Grouping is by running size in buckets of half the
room (``_grouped``): an element never straddles more than one bucket boundary, so a group
never exceeds the room. The notifications of a statement go out in the order of its parts.

Column lists, types and keys come from the table descriptions (``db.tables``) only; identifiers are ``psycopg.sql``; the
channel names are validated identifiers passed as literals.
"""

# SQL text here is assembled from fixed literals, column constants and numbers, never input:
# ruff: noqa: S608
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from psycopg import sql

from coldharbour.db import tables as t
from coldharbour.db.names import AccountNames, SharedNames, Table
from coldharbour.db.notify import MAX_PAYLOAD_BYTES

MAX_PARTS: Final = 16  # parts per statement: a plan over many accounts becomes a few statements
CACHE_MAX: Final = 512  # composed statements kept (one per sequence of part kinds seen)


@dataclass(frozen=True, slots=True)
class Part:
    """One change's SQL: its CTEs and the ``changed``/``notified`` counts it adds.

    Placeholders are ``%s`` in the order of the part's parameters: the CTEs' first, then
    ``changed``'s, then ``notified``'s.
    """

    ctes: tuple[str, ...]
    changed: str
    notified: str = "0"


@dataclass(frozen=True, slots=True)
class Spec:
    """What a statement needs of a change: a cache ``key``, the ``table`` it writes, its ``build``."""

    key: tuple[object, ...]
    table: str
    build: Callable[[str], Part]  # the CTE name prefix → the part


def _key(table: Table) -> str:
    return f"{table.schema}.{table.name}"


def _text(composable: sql.Composable) -> str:
    return composable.as_string()


def _ids(names: Sequence[str], prefix: str = "") -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL(prefix) + sql.Identifier(n) for n in names)


def _input(p: str, columns: Sequence[str], types: Sequence[str], extra: Sequence[tuple[str, str]] = (),
           *, single: bool = False) -> str:
    """Return ``<p>input AS (SELECT (v->>0)::t0 AS c0, … , ord FROM jsonb_array_elements(%s::jsonb) …)``.

    The rows travel as **one** JSON parameter, an array of row arrays (``db.writer`` encodes it
    with msgspec in one C call: decimals as exact numbers, times as ISO-8601); PostgreSQL casts
    each element to its column type. ``extra`` columns follow the table's, as text. ``single``:
    the parameter is one row array (no array of rows to unnest: a stream fill's commit).
    """
    names = [*columns, *(n for n, _ in extra)]
    casts = [*types, *(t for _, t in extra)]
    # The types are fixed literals from ``db.rows``, never input.
    fields = sql.SQL(", ").join(
        sql.SQL("(v->>" + str(i) + ")::" + t + " AS ") + sql.Identifier(n)
        for i, (n, t) in enumerate(zip(names, casts, strict=True))
    )
    source = ("1::bigint AS ord FROM (SELECT %s::jsonb AS v) AS e" if single
              else "ord FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(v, ord)")
    return _text(sql.SQL(p + "input AS (SELECT {f}, " + source + ")").format(f=fields))


def _upsert_cte(p: str, table: Table, columns: Sequence[str], key: Sequence[str], *,
                compare: Sequence[str] | None = None, stamp: str | None = "updated_at") -> str:
    """Return ``<p>up AS (INSERT … FROM <p>input ON CONFLICT (key) DO UPDATE … WHERE distinct RETURNING key)``."""
    updated = [c for c in columns if c not in key]
    compared = list(compare) if compare is not None else [c for c in updated if c != stamp]
    sets = [sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updated]
    if stamp is not None and stamp not in columns:
        sets.append(sql.SQL("{c} = now()").format(c=sql.Identifier(stamp)))
    return _text(sql.SQL(
        p + "up AS (INSERT INTO {t} AS cur ({cols}) SELECT {cols} FROM " + p + "input ON CONFLICT ({key}) "
        "DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new}) RETURNING {ret})"
    ).format(
        t=table.ident, cols=_ids(columns), key=_ids(key), sets=sql.SQL(", ").join(sets),
        old=_ids(compared, "cur."), new=_ids(compared, "EXCLUDED."), ret=_ids(key, "cur."),
    ))  # fmt: skip


def _count_only(p: str, *ctes: str) -> Part:
    return Part(ctes, f"(SELECT count(*) FROM {p}up)")


def _grouped(p: str, wraps: Sequence[tuple[str, str]], refetch: str, where: str) -> str:
    """Return the SELECT of grouped payloads from ``<p>sized(part, ord, j, k, l)`` (``l``: bytes + 1).

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
        f"SELECT 1 AS s, ord AS o, {refetch} AS payload FROM {p}sized WHERE {where} AND part = 0 AND l > {room} "
        f"UNION ALL SELECT 2 + part, min(ord), CASE part {wrapped} END FROM (SELECT part, ord, j, "
        f"CASE WHEN l > {half} THEN -ord ELSE floor(sum(l) OVER (PARTITION BY part, l > {half} ORDER BY ord) / {half}) "
        f"END AS g FROM {p}sized WHERE {where} AND NOT (part = 0 AND l > {room})) AS x GROUP BY part, g"
    )


def _notified(p: str, channel: str) -> str:
    """Return the count of ``pg_notify(channel, payload)`` over ``<p>notes``, in order."""
    return _text(sql.SQL("(SELECT count(pg_notify(") + sql.Literal(channel)
                 + sql.SQL(", payload)) FROM (SELECT payload FROM " + p + "notes ORDER BY s, o) AS ordered)"))


def _numbered(pieces: Sequence[str], first: int) -> tuple[list[str], int]:
    """Return ``pieces`` with their ``%s`` numbered ``$first``, ``$first+1``… in order, and the next number.

    No other ``%`` may occur (PostgreSQL's own ``$n`` are then sent as is: psycopg does not parse
    the text on every execute).
    """
    out, n = [], first
    for piece in pieces:
        parts = piece.split("%s")
        if "%" in "".join(parts):
            raise ValueError("a statement holds a literal % besides its placeholders")
        text = parts[0]
        for rest in parts[1:]:
            text += f"${n}" + rest
            n += 1
        out.append(text)
    return out, n


def compose(parts: Sequence[Part]) -> str:
    """Return the one statement of ``parts`` (each built with its own prefix), placeholders numbered."""
    ctes: list[str] = []
    changed: list[str] = []
    notified: list[str] = []
    n = 1
    for part in parts:
        pieces, n = _numbered([*part.ctes, part.changed, part.notified], n)
        ctes += pieces[:-2]
        changed.append(pieces[-2])
        notified.append(pieces[-1])
    head = "WITH " + ", ".join(ctes) + " " if ctes else ""
    return head + "SELECT " + " + ".join(changed) + ", " + " + ".join(notified)


class Statements:
    """Every part of the write path, and the statements they join into (composed once, then cached)."""

    def __init__(self, shared: SharedNames) -> None:
        self.shared = shared
        self._cache: OrderedDict[tuple[tuple[object, ...], ...], bytes] = OrderedDict()

    def statement(self, specs: Sequence[Spec]) -> bytes:
        """Return the text of the one statement made of ``specs`` (in order; see ``group``), encoded."""
        key = tuple(spec.key for spec in specs)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = compose([spec.build(f"c{i}_") for i, spec in enumerate(specs)]).encode()
            if len(self._cache) > CACHE_MAX:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return found

    @staticmethod
    def group(specs: Sequence[Spec]) -> list[range]:
        """Return consecutive runs of ``specs`` that may share a statement (no table twice, ≤ ``MAX_PARTS``)."""
        runs: list[range] = []
        start, tables = 0, set[str]()
        for i, spec in enumerate(specs):
            if spec.table in tables or i - start >= MAX_PARTS:
                runs.append(range(start, i))
                start, tables = i, set()
            tables.add(spec.table)
        if start < len(specs):
            runs.append(range(start, len(specs)))
        return runs

    # -- open positions and closed slices (announced) ------------------------------------------

    def positions(self, names: AccountNames, *, upserts: bool, deletes: bool, announce: bool) -> Spec:
        """The positions part; params: the row columns (+ row JSON), then the deleted ids."""
        return Spec(("positions", names.slug, upserts, deletes, announce), _key(names.positions),
                    lambda p: _positions(p, names, upserts=upserts, deletes=deletes, announce=announce))

    def position(self, names: AccountNames, *, announce: bool) -> Spec:
        """One upserted open row (a stream fill's commit); params: the row, then its JSON if ``announce``.

        The one-row part reads one row array (no array to unnest, no payload grouping): replayed
        single-fill commits measured backend CPU 0.60-0.74 -> 0.42-0.52 ms and wall p50 0.92-1.26
        -> 0.71-0.86 ms. Its payload is ``_open_row_payload``, as the general part's for one row,
        sent only if the row changed.
        """
        return Spec(("position", names.slug, announce), _key(names.positions),
                    lambda p: _position(p, names, announce=announce))

    def closed(self, names: AccountNames, *, upserts: bool, deletes: bool) -> Spec:
        """The closed-slices part; params: the deleted keys, then the slice columns, JSON and announce flags."""
        return Spec(("closed", names.slug, upserts, deletes), _key(names.closed),
                    lambda p: _closed(p, names, upserts=upserts, deletes=deletes))

    def metrics(self, names: AccountNames) -> Spec:
        """The KPI document write; params: payload, updated_at, notification payload."""
        return Spec(("metrics", names.slug), _key(names.metrics), lambda p: _metrics(p, names))

    def heartbeat(self, names: AccountNames) -> Spec:
        """The UI heartbeat; params: the payload."""
        return Spec(("heartbeat", names.slug), f"heartbeat {names.slug}", lambda p: Part(
            (), "0", _text(sql.SQL("(SELECT count(pg_notify({c}, %s)))").format(c=sql.Literal(names.pos_channel)))))

    # -- raw records and analytics (not announced) -----------------------------------------------

    def raw_orders(self, names: AccountNames, *, single: bool = False) -> Spec:
        """The raw-order upsert; an older ``updated_at`` never overwrites (docs/defects.md D38); ``single``: one row."""
        return Spec(("raw_orders", names.slug, single), _key(names.raw_orders),
                    lambda p: _raw_orders(p, names.raw_orders, single=single))

    def raw_activities(self, names: AccountNames, *, by_execution: bool, single: bool = False) -> Spec:
        """The raw-activity upsert (FILLs by ``execution_id`` or every kind by ``id``). ``single``: one row array."""
        return Spec(("raw_activities", names.slug, by_execution, single), _key(names.raw_activities),
                    lambda p: _raw_activities(p, names.raw_activities, by_execution=by_execution, single=single))

    def reconciliations(self, names: AccountNames, *, single: bool = False) -> Spec:
        """The reconciliation-fill upsert (by ``id``; the columns of ``raw_activities``)."""
        return Spec(("reconciliations", names.slug, single), _key(names.reconciliations),
                    lambda p: _raw_activities(p, names.reconciliations, by_execution=False, single=single))

    def simple(self, spec: t.TableSpec, names: AccountNames | SharedNames) -> Spec:
        """The plain upsert of a described table (cash flows, daily and intraday equity, schedule): its rows."""
        table = spec.table(names)
        key = ("simple", table.schema, table.name, spec.names, spec.types, spec.key)  # a changed description: anew
        stamp = "updated_at" if "updated_at" in {column[0] for column in spec.stored} else None  # now() on update
        return Spec(key, _key(table), lambda p: _count_only(
            p, _input(p, spec.names, spec.types), _upsert_cte(p, table, spec.names, spec.key, stamp=stamp)))

    def _one(self, key: tuple[object, ...], table: Table, template: str) -> Spec:
        """A part of one data-modifying CTE: ``template`` is ``DELETE FROM {t} … RETURNING …`` or an INSERT."""
        return Spec(key, _key(table), lambda p: _count_only(
            p, _text(sql.SQL(p + "up AS (" + template + ")").format(t=table.ident))))

    def delete_daily_except(self, names: AccountNames) -> Spec:
        """The delete of daily rows not in the given dates; params: the dates."""
        return self._one(("daily_keep", names.slug), names.equity_full,
                            "DELETE FROM {t} WHERE NOT (date = ANY(%s::date[])) RETURNING date")

    def delete_cash_flows(self, names: AccountNames) -> Spec:
        """The delete of cash flows by id (activities the broker canceled); params: the ids."""
        return self._one(("cash_flows_delete", names.slug), names.cash_flows,
                            "DELETE FROM {t} WHERE id = ANY(%s::text[]) RETURNING id")

    def replace_schedule(self) -> Spec:
        """The delete of sessions in a refreshed range that the refresh no longer has.

        Params: the first and last date of the range, the dates the refresh keeps.
        """
        return self._one(("replace_schedule",), self.shared.market_schedule,
                            "DELETE FROM {t} WHERE session_date BETWEEN %s::date AND %s::date "
                            "AND NOT (session_date = ANY(%s::date[])) RETURNING session_date")

    def prune_schedule(self) -> Spec:
        """The delete of sessions dated before a date; params: the date."""
        return self._one(("prune_schedule",), self.shared.market_schedule,
                            "DELETE FROM {t} WHERE session_date < %s::date RETURNING session_date")

    def latest_prices(self) -> Spec:
        """The latest-prices upsert; an older ``ts`` never wins."""
        table = self.shared.latest_prices
        return Spec(("latest_prices",), _key(table), lambda p: _count_only(
            p, _input(p, t.LATEST_PRICES.names, t.LATEST_PRICES.types), _text(sql.SQL(
                p + "up AS (INSERT INTO {t} AS cur (symbol, price, ts) SELECT symbol, price, ts FROM " + p + "input "
                "ON CONFLICT (symbol) DO UPDATE SET price = EXCLUDED.price, ts = EXCLUDED.ts "
                "WHERE EXCLUDED.ts >= cur.ts AND (cur.price, cur.ts) IS DISTINCT FROM (EXCLUDED.price, EXCLUDED.ts) "
                "RETURNING cur.symbol)").format(t=table.ident))))

    def price_bars(self) -> Spec:
        """The 1-minute bar merge: a stored bar keeps its open, highs and lows widen."""
        table = self.shared.price_bars_1min
        return Spec(("price_bars",), _key(table), lambda p: _count_only(
            p, _input(p, t.PRICE_BARS.names, t.PRICE_BARS.types), _text(sql.SQL(
                p + "up AS (INSERT INTO {t} AS cur (symbol, ts, open, high, low, close, volume) "
                "SELECT symbol, ts, open, high, low, close, volume FROM " + p + "input "
                "ON CONFLICT (symbol, ts) DO UPDATE SET high = greatest(cur.high, EXCLUDED.high), "
                "low = least(cur.low, EXCLUDED.low), close = EXCLUDED.close, "
                "volume = greatest(cur.volume, EXCLUDED.volume) "
                "WHERE (cur.high, cur.low, cur.close, cur.volume) IS DISTINCT FROM (greatest(cur.high, EXCLUDED.high), "
                "least(cur.low, EXCLUDED.low), EXCLUDED.close, greatest(cur.volume, EXCLUDED.volume)) "
                "RETURNING cur.symbol)").format(t=table.ident))))

    def quarantine(self) -> Spec:
        """The insert of one quarantined change; params: account, kind, key, raw, error."""
        return self._one(("quarantine",), self.shared.quarantine,
                            "INSERT INTO {t} (account, kind, key, raw, error) VALUES (%s, %s, %s, %s, %s) RETURNING id")




def _positions(p: str, names: AccountNames, *, upserts: bool, deletes: bool, announce: bool) -> Part:
    table = names.positions
    ctes: list[str] = []
    if upserts:
        ctes.append(_input(p, t.POSITIONS.names, t.POSITIONS.types, [("j", "text")] if announce else []))
        ctes.append(_upsert_cte(p, table, t.POSITIONS.names, t.POSITIONS.key))
    else:
        ctes.append(f"{p}up AS (SELECT NULL::text AS parent_id WHERE false)")
    if deletes:
        ctes.append(_text(sql.SQL(p + "del AS (DELETE FROM {t} WHERE parent_id = ANY(%s::text[]) "
                                  "RETURNING parent_id)").format(t=table.ident)))
    else:
        ctes.append(f"{p}del AS (SELECT NULL::text AS parent_id WHERE false)")
    counts = f"(SELECT count(*) FROM {p}up) + (SELECT count(*) FROM {p}del)"
    if not announce:
        return Part(tuple(ctes), counts)
    rows = (f"SELECT 0 AS part, i.ord, i.j, i.parent_id AS k FROM {p}up JOIN {p}input i USING (parent_id)" if upserts
            else "SELECT 0 AS part, 0::bigint AS ord, NULL::text AS j, NULL::text AS k WHERE false")
    items = (rows + " UNION ALL SELECT 1, row_number() OVER (ORDER BY parent_id), "
             f"to_json(parent_id)::text, parent_id FROM {p}del")
    single = ("SELECT 0 AS s, 0::bigint AS o, CASE WHEN part = 1 THEN '{\"op\":\"delete\",\"parent_id\":' || j || '}' "
              f"ELSE {_open_row_payload('j', 'k')} END AS payload "
              f"FROM {p}sized WHERE (SELECT count(*) FROM {p}items) = 1")
    wraps = [('{"op":"batch","rows":[', '],"deletes":[]}'), ('{"op":"batch","rows":[],"deletes":[', "]}")]
    grouped = _grouped(p, wraps, _refetch_open_row("k"), f"(SELECT count(*) FROM {p}items) > 1")
    ctes += [f"{p}items AS ({items})", f"{p}sized AS (SELECT part, ord, j, k, octet_length(j) + 1 AS l FROM {p}items)",
             f"{p}notes AS ({single} UNION ALL {grouped})"]
    return Part(tuple(ctes), counts, _notified(p, names.pos_channel))


def _refetch_open_row(k: str) -> str:
    """The SQL of the payload asking the UI to read open row ``k`` itself (its row cannot fit, D51)."""
    return "'{\"op\":\"refetch\",\"parent_id\":' || to_json(" + k + ")::text || '}'"


def _open_row_payload(j: str, k: str) -> str:
    """The SQL of the payload announcing one changed open row: ``{"row": j}``, or a refetch when it cannot fit.

    ``j`` is the row's JSON text (``db.writer``), ``k`` its ``parent_id``. The one place this
    payload is built: the general positions part and the one-row part both use it.
    """
    return (f"CASE WHEN octet_length({j}) + 8 <= {MAX_PAYLOAD_BYTES} THEN '{{\"row\":' || {j} || '}}' "
            f"ELSE {_refetch_open_row(k)} END")


def _position(p: str, names: AccountNames, *, announce: bool) -> Part:
    ctes = (_input(p, t.POSITIONS.names, t.POSITIONS.types, single=True),
            _upsert_cte(p, names.positions, t.POSITIONS.names, t.POSITIONS.key))
    if not announce:
        return _count_only(p, *ctes)
    channel = sql.Literal(names.pos_channel)
    payload = _open_row_payload(p + "row.j", p + "up.parent_id")
    return Part((*ctes, f"{p}row AS (SELECT %s::text AS j)"), f"(SELECT count(*) FROM {p}up)",
                _text(sql.SQL("(SELECT count(pg_notify(") + channel
                      + sql.SQL(", " + payload + ")) FROM " + p + "up, " + p + "row)")))


def _closed(p: str, names: AccountNames, *, upserts: bool, deletes: bool) -> Part:
    table = names.closed
    ctes: list[str] = []
    if deletes:
        ctes.append(_text(sql.SQL(
            p + "del AS (DELETE FROM {t} AS c USING unnest(%s::text[], %s::text[]) AS k(lot, exit) "
            "WHERE c.entry_lot_id = k.lot AND c.exit_order_id = k.exit RETURNING c.entry_lot_id)"
        ).format(t=table.ident)))
    else:
        ctes.append(f"{p}del AS (SELECT NULL::text AS entry_lot_id WHERE false)")
    if not upserts:
        return Part(tuple(ctes), f"(SELECT count(*) FROM {p}del)")
    ctes.append(_input(p, t.CLOSED.names, t.CLOSED.types, [("j", "text"), ("ann", "text")]))
    ctes.append(_upsert_cte(p, table, t.CLOSED.names, t.CLOSED.key))
    items = ("SELECT 0 AS part, i.ord, i.j, '{\"op\":\"refetch\",\"entry_lot_id\":' || to_json(i.entry_lot_id) || "
             f"',\"exit_order_id\":' || to_json(i.exit_order_id) || '}}' AS k FROM {p}input i "
             "WHERE i.ann = 'always' OR (i.ann = 'if_changed' AND EXISTS "
             f"(SELECT 1 FROM {p}up WHERE {p}up.entry_lot_id = i.entry_lot_id "
             f"AND {p}up.exit_order_id = i.exit_order_id))")
    grouped = _grouped(p, [('{"op":"insert","rows":[', "]}")], "k", "true")
    ctes += [f"{p}items AS ({items})", f"{p}sized AS (SELECT part, ord, j, k, octet_length(j) + 1 AS l FROM {p}items)",
             f"{p}notes AS ({grouped})"]
    return Part(tuple(ctes), f"(SELECT count(*) FROM {p}up) + (SELECT count(*) FROM {p}del)",
                _notified(p, names.closed_channel))


def _metrics(p: str, names: AccountNames) -> Part:
    """The comparison ignores ``as_of`` (the computation time): a document is new only when a KPI changed."""
    up = _text(sql.SQL(
        p + "up AS (INSERT INTO {t} AS cur (id, metrics_payload, updated_at) "
        "VALUES ('latest', %s::text, %s::timestamptz) "
        "ON CONFLICT (id) DO UPDATE SET metrics_payload = EXCLUDED.metrics_payload, updated_at = EXCLUDED.updated_at "
        "WHERE (cur.metrics_payload::jsonb - 'as_of') IS DISTINCT FROM (EXCLUDED.metrics_payload::jsonb - 'as_of') "
        "RETURNING 1)"
    ).format(t=names.metrics.ident))
    notified = _text(sql.SQL("(SELECT count(pg_notify({c}, %s::text)) FROM " + p + "up)").format(
        c=sql.Literal(names.metrics_channel)))
    return Part((up,), f"(SELECT count(*) FROM {p}up)", notified)


def _raw_orders(p: str, table: Table, *, single: bool) -> Part:
    """Links and legs a version lacks (a stream payload without ``legs``/``parent_id``) keep their stored value."""
    keep = {"parent_id", "replaced_by", "replaces", "legs"}
    updated = [c for c in t.RAW_ORDERS.names if c != "id"]
    template = {True: "coalesce(EXCLUDED.{c}, cur.{c})", False: "EXCLUDED.{c}"}
    sets = [sql.SQL("{c} = " + template[c in keep]).format(c=sql.Identifier(c)) for c in updated]
    sets.append(sql.Composed([sql.SQL("ingested_at = now()")]))
    incoming = [sql.SQL(template[c in keep]).format(c=sql.Identifier(c)) for c in updated]
    up = _text(sql.SQL(
        p + "up AS (INSERT INTO {t} AS cur ({cols}) SELECT {cols} FROM " + p + "input ON CONFLICT (id) DO UPDATE "
        "SET {sets} WHERE (cur.updated_at IS NULL OR EXCLUDED.updated_at >= cur.updated_at) "
        "AND ({old}) IS DISTINCT FROM ({new}) RETURNING cur.id)"
    ).format(
        t=table.ident, cols=_ids(t.RAW_ORDERS.names), sets=sql.SQL(", ").join(sets),
        old=_ids(updated, "cur."), new=sql.SQL(", ").join(incoming),
    ))  # fmt: skip
    return _count_only(p, _input(p, t.RAW_ORDERS.names, t.RAW_ORDERS.types, single=single), up)


def _raw_activities(p: str, table: Table, *, by_execution: bool, single: bool) -> Part:
    """FILLs with an ``execution_id`` conflict on the partial unique index (one row per execution); D39."""
    if by_execution:
        key = sql.SQL("(execution_id) WHERE activity_type = 'FILL' AND execution_id IS NOT NULL")
    else:
        key = sql.SQL("(id)")
    updated = [c for c in t.RAW_ACTIVITIES.names if c != "id" and (c != "execution_id" or not by_execution)]
    up = _text(sql.SQL(
        p + "up AS (INSERT INTO {t} AS cur ({cols}) SELECT {cols} FROM " + p + "input ON CONFLICT {key} "
        "DO UPDATE SET {sets}, ingested_at = now() WHERE ({old}) IS DISTINCT FROM ({new}) RETURNING cur.id)"
    ).format(
        t=table.ident, cols=_ids(t.RAW_ACTIVITIES.names), key=key,
        sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updated),
        old=_ids(updated, "cur."), new=_ids(updated, "EXCLUDED."),
    ))  # fmt: skip
    return _count_only(p, _input(p, t.RAW_ACTIVITIES.names, t.RAW_ACTIVITIES.types, single=single), up)
