"""Broker account activities as cash flows: one classification, one sign rule, everywhere.

Every activity becomes a ``CashFlow`` row (fills included: the UI finds the first trade date in
the cash-flow table). The category decides what a flow means downstream, and it is decided
here only (the original had three classifications, docs/defects.md D19; the full catalogue is docs/spec.md §8):

- ``trade``: FILL, OPTRD (the cash side of an execution; positions come from the executions);
- ``income``: dividends, their withholding and fees (DIV…, DIVWH, DIVFT, DIVTW, DIVFEE);
- ``interest``: INT, INTNRA, INTTW, INTPNL;
- ``fee``: FEE, CFEE, PTC, PTR;  ``tax``: WH;
- ``external``: deposits, withdrawals, journals, ACATS transfers — the only category removed
  from returns;
- ``corporate``: splits, spin-offs, mergers, symbol changes, cash in lieu, option events
  (the positions side is a ledger event, ``domain/corporate.py``; the cash side is P&L);
- ``other``: MISC, SWP, FXTRD;
- ``unclassified``: a code not in the catalogue. It stays part of returns (never a deposit);
  the caller counts it and logs each new code once (``unclassified_codes``).

Amounts keep the broker's sign (positive = cash into the account). A FILL without
``net_amount`` gets ``-side·qty·price`` (a buy takes cash out). A fee paid in coin (CFEE with
``net_amount`` 0 and ``qty`` < 0) is worth ``qty·price`` at the activity's price.

Pure: no I/O, no clock, no logging. Bad input is returned as a ``Rejection`` with a reason.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final

import msgspec

from coldharbour.domain.money import InvalidMoney, to_decimal, to_decimal_or_none
from coldharbour.domain.schedule import NEW_YORK


class Category(StrEnum):
    """What a cash flow means for returns: ``cash_flows.category``."""

    TRADE = "trade"
    INCOME = "income"
    INTEREST = "interest"
    FEE = "fee"
    TAX = "tax"
    EXTERNAL = "external"
    CORPORATE = "corporate"
    OTHER = "other"
    UNCLASSIFIED = "unclassified"


DIVIDEND_TYPES: Final = frozenset(
    {"DIV", "DIVCGL", "DIVCGS", "DIVNRA", "DIVROC", "DIVTXEX", "DIVWH", "DIVFT", "DIVTW", "DIVFEE"}
)
INTEREST_TYPES: Final = frozenset({"INT", "INTNRA", "INTTW", "INTPNL"})
INCOME_TYPES: Final = DIVIDEND_TYPES
FEE_TYPES: Final = frozenset({"FEE", "CFEE", "PTC", "PTR"})
TAX_TYPES: Final = frozenset({"WH"})
EXTERNAL_TYPES: Final = frozenset({"CSD", "CSW", "JNLC", "JNLS", "ACATC", "ACATS"})
CORPORATE_TYPES: Final = frozenset(
    {"SPLIT", "SSP", "SPIN", "SSO", "MA", "NC", "SC", "REORG", "CIL", "OPASN", "OPEXC", "OPEXP", "OPCA"}
)
OTHER_TYPES: Final = frozenset({"MISC", "SWP", "FXTRD"})
# PARTIAL_FILL is not an Alpaca activity code today, but the original ingester stored it; it
# must never be mistaken for an external flow (that would read a trade as a deposit).
FILL_TYPES: Final = frozenset({"FILL", "PARTIAL_FILL"})
TRADE_TYPES: Final = FILL_TYPES | {"OPTRD"}
_CATEGORIES: Final[Mapping[str, Category]] = {
    **dict.fromkeys(TRADE_TYPES, Category.TRADE),
    **dict.fromkeys(INCOME_TYPES, Category.INCOME),
    **dict.fromkeys(INTEREST_TYPES, Category.INTEREST),
    **dict.fromkeys(FEE_TYPES, Category.FEE),
    **dict.fromkeys(TAX_TYPES, Category.TAX),
    **dict.fromkeys(EXTERNAL_TYPES, Category.EXTERNAL),
    **dict.fromkeys(CORPORATE_TYPES, Category.CORPORATE),
    **dict.fromkeys(OTHER_TYPES, Category.OTHER),
}
KNOWN_TYPES: Final = frozenset(_CATEGORIES)
SIDE_SIGN: Final[Mapping[str, int]] = {"buy": 1, "sell": -1, "sell_short": -1}


class CashFlow(msgspec.Struct, frozen=True, kw_only=True):
    """One ``cash_flows`` row: an activity with its signed amount and category."""

    id: str
    ts: datetime
    amount: Decimal
    type: str
    category: Category
    description: str = ""


class Execution(msgspec.Struct, frozen=True, kw_only=True):
    """One fill as the equity replay needs it: ``qty`` signed (+ bought, − sold), ``price`` per share."""

    id: str
    ts: datetime
    symbol: str
    qty: Decimal
    price: Decimal


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """An activity that could not be converted, and why (the caller counts and logs it)."""

    id: str | None
    reason: str


def classify(activity_type: str) -> Category:
    """Return the category of an activity code (case and surrounding blanks ignored)."""
    return _CATEGORIES.get(activity_type.strip().upper(), Category.UNCLASSIFIED)


def unclassified_codes(flows: Iterable[CashFlow], known: Container[str] = frozenset()) -> list[str]:
    """Return the unknown activity codes among ``flows`` not yet in ``known``, each once, sorted.

    The caller counts every ``unclassified`` flow and logs each code this returns once.
    """
    return sorted({f.type for f in flows if f.category is Category.UNCLASSIFIED and f.type not in known})


def is_dividend(activity_type: str) -> bool:
    """Return True for the dividend codes (withholding ``DIVWH`` included)."""
    return activity_type.strip().upper() in DIVIDEND_TYPES


def is_interest(activity_type: str) -> bool:
    """Return True for the interest codes (``INT``, ``INTNRA``, ``INTTW``, ``INTPNL``)."""
    return activity_type.strip().upper() in INTEREST_TYPES


def parse_activity_time(value: object) -> datetime:
    """Return an aware UTC instant from an activity's ``transaction_time`` or ``date``.

    A bare date (non-trade activities carry ``"2024-02-15"``) means that NY calendar day, so
    it is placed at 00:00 New York, never 00:00 UTC (which is the previous NY day: D13).
    A timestamp without an offset is rejected rather than guessed.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=NEW_YORK).astimezone(UTC)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, time(0), tzinfo=NEW_YORK).astimezone(UTC)
        parsed = datetime.fromisoformat(text)
    else:
        raise ValueError(f"expected an ISO time or date, found {value!r}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"time without an offset: {value!r}")
    return parsed.astimezone(UTC)


def _fill_terms(activity: Mapping[str, object]) -> tuple[int, Decimal, Decimal]:
    """(side sign, unsigned qty, price) of a fill; raise ``ValueError`` naming the bad field."""
    side = str(activity.get("side") or "").strip().lower()
    if side not in SIDE_SIGN:
        raise ValueError(f"side: expected buy, sell or sell_short, found {activity.get('side')!r}")
    qty = to_decimal(activity.get("qty"), field="qty")
    price = to_decimal(activity.get("price"), field="price")
    return SIDE_SIGN[side], abs(qty), price


def _fill_amount(activity: Mapping[str, object]) -> Decimal:
    sign, qty, price = _fill_terms(activity)
    return -sign * qty * price


def _coin_fee(activity: Mapping[str, object]) -> Decimal | None:
    """``qty·price`` of a fee paid in coin (CFEE, ``net_amount`` 0, ``qty`` < 0), else None."""
    qty = to_decimal_or_none(activity.get("qty"), field="qty")
    if qty is None or qty >= 0:
        return None
    price = to_decimal_or_none(activity.get("price"), field="price")
    if price is None:
        raise InvalidMoney("price: a fee paid in coin needs the coin's price")
    return qty * abs(price)


def _amount(activity: Mapping[str, object], category: Category, code: str) -> Decimal:
    amount = to_decimal_or_none(activity.get("net_amount"), field="net_amount")
    if code == "CFEE" and not amount:
        coin = _coin_fee(activity)
        if coin is not None:
            return coin
    if amount is not None:
        return amount
    if category is Category.TRADE:
        return _fill_amount(activity)
    raise InvalidMoney("net_amount: missing")


def _description(activity: Mapping[str, object]) -> str:
    for key in ("description", "symbol"):
        value = activity.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def to_cash_flow(activity: Mapping[str, object]) -> CashFlow | Rejection:
    """Return the cash-flow row of one raw activity, or a ``Rejection`` saying what is wrong.

    Canceled activities (``status: canceled``) never moved cash and are rejected.
    """
    raw_id = activity.get("id")
    activity_id = raw_id.strip() if isinstance(raw_id, str) else ""
    if not activity_id:
        return Rejection(id=None, reason=f"id: expected a non-empty string, found {raw_id!r}")
    raw_type = activity.get("activity_type")
    if not isinstance(raw_type, str) or not raw_type.strip():
        return Rejection(id=activity_id, reason=f"activity_type: missing, found {raw_type!r}")
    if str(activity.get("status") or "").strip().lower() == "canceled":
        return Rejection(id=activity_id, reason="status: canceled activity moved no cash")
    code = raw_type.strip().upper()
    category = classify(code)
    raw_time = activity.get("transaction_time") or activity.get("date")
    try:
        ts = parse_activity_time(raw_time)
        amount = _amount(activity, category, code)
    except ValueError as e:  # InvalidMoney is a ValueError
        return Rejection(id=activity_id, reason=str(e))
    return CashFlow(
        id=activity_id,
        ts=ts,
        amount=amount,
        type=code,
        category=category,
        description=_description(activity),
    )


def to_execution(activity: Mapping[str, object]) -> Execution | Rejection:
    """Return the execution of a FILL activity (symbol, signed qty, price, time), or a ``Rejection``."""
    result = to_cash_flow(activity)
    if isinstance(result, Rejection):
        return result
    if result.type not in FILL_TYPES:
        return Rejection(id=result.id, reason=f"activity_type: expected FILL, found {result.type}")
    symbol = activity.get("symbol")
    if not isinstance(symbol, str) or not symbol.strip():
        return Rejection(id=result.id, reason=f"symbol: expected a non-empty string, found {symbol!r}")
    try:
        sign, qty, price = _fill_terms(activity)
    except ValueError as e:
        return Rejection(id=result.id, reason=str(e))
    return Execution(id=result.id, ts=result.ts, symbol=symbol.strip(), qty=sign * qty, price=price)


def convert_activities(
    activities: Iterable[Mapping[str, object]],
) -> tuple[list[CashFlow], list[Rejection]]:
    """Return the converted rows (sorted by id, duplicates collapsed) and the rejections."""
    rows: dict[str, CashFlow] = {}
    rejected: list[Rejection] = []
    for activity in activities:
        result = to_cash_flow(activity)
        if isinstance(result, Rejection):
            rejected.append(result)
        else:
            rows[result.id] = result
    return [rows[key] for key in sorted(rows)], rejected


def activity_id_time(activity_id: str) -> datetime | None:
    """Return the UTC instant encoded in an Alpaca activity id (``YYYYMMDDHHMMSSmmm::uuid``).

    The stamp is New York wall-clock time: the docs' sample FILL ``20190524113406977::…`` has
    ``transaction_time`` ``2019-05-24T15:34:06.977Z`` (account-activities page). None when the
    id does not have that shape.
    """
    head = activity_id.split("::", 1)[0]
    if len(head) != 17 or not head.isdigit():
        return None
    try:
        base = datetime.strptime(head[:14], "%Y%m%d%H%M%S").replace(tzinfo=NEW_YORK)
    except ValueError:
        return None
    return (base + timedelta(milliseconds=int(head[14:]))).astimezone(UTC)


def query_after(last_id: str | None, overlap: timedelta = timedelta(days=7)) -> datetime | None:
    """Return the ``after`` instant for the next activities query, or None for a full pull.

    Ids sort by the time they encode, but a non-trade activity is dated by its business date,
    so one booked late (a dividend posted two days after its date) sorts *before* ids already
    seen. Asking again from ``overlap`` before the newest seen id and dropping known ids
    (``select_new``) catches those; the upsert on ``id`` keeps repeats harmless anyway.
    """
    if last_id is None:
        return None
    instant = activity_id_time(last_id)
    return None if instant is None else instant - overlap


def select_new(flows: Iterable[CashFlow], seen_ids: Container[str]) -> list[CashFlow]:
    """Return the flows whose id is not in ``seen_ids``, oldest id first, each id once."""
    fresh: dict[str, CashFlow] = {}
    for flow in flows:
        if flow.id not in seen_ids:
            fresh[flow.id] = flow
    return [fresh[key] for key in sorted(fresh)]


def newest_id(flows: Iterable[CashFlow], last_id: str | None = None) -> str | None:
    """Return the largest id among ``flows`` and ``last_id`` (the incremental cursor)."""
    best = last_id
    for flow in flows:
        if best is None or flow.id > best:
            best = flow.id
    return best


class FlowChanges(msgspec.Struct, frozen=True, kw_only=True):
    """What a page of activities does to the stored cash flows: rows to write and ids to drop."""

    upserts: tuple[CashFlow, ...] = ()
    deletes: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()


def is_canceled(activity: Mapping[str, object]) -> bool:
    """Return True for an activity the broker canceled (``status`` ``canceled``)."""
    return str(activity.get("status") or "").strip().lower() == "canceled"


def flow_changes(activities: Iterable[Mapping[str, object]], stored: Mapping[str, CashFlow]) -> FlowChanges:
    """Return the changes that bring ``stored`` (id -> row) in line with ``activities`` (docs/spec.md §8).

    A new id is written; a known id seen again with another amount, time or category replaces
    its row (a correction); a known id now ``canceled`` is deleted (KPIs follow the rows); an
    unchanged one is left alone (replaying a page changes nothing). A canceled id never stored
    is nothing to do.
    """
    upserts: dict[str, CashFlow] = {}
    deletes: set[str] = set()
    rejected: list[Rejection] = []
    for activity in activities:
        raw_id = activity.get("id")
        activity_id = raw_id.strip() if isinstance(raw_id, str) else ""
        if activity_id and is_canceled(activity):
            upserts.pop(activity_id, None)
            if activity_id in stored:
                deletes.add(activity_id)
            continue
        result = to_cash_flow(activity)
        if isinstance(result, Rejection):
            rejected.append(result)
        elif stored.get(result.id) != result:
            deletes.discard(result.id)
            upserts[result.id] = result
    return FlowChanges(
        upserts=tuple(upserts[k] for k in sorted(upserts)), deletes=tuple(sorted(deletes)), rejected=tuple(rejected)
    )


def commission_flow(order_id: str, symbol: str, commission: Decimal, ts: datetime) -> CashFlow | None:
    """Return the ``fee`` cash flow of an order's ``commission`` (docs/spec.md §8), or None when zero.

    Keyed ``commission:<order id>`` so each order books it once. Crypto pairs (``BTC/USD``)
    return None: Alpaca charges their fees as CFEE activities, which are booked already.
    """
    if not commission or "/" in symbol:
        return None
    return CashFlow(
        id=f"commission:{order_id}", ts=ts, amount=-abs(commission), type="FEE", category=Category.FEE,
        description=f"commission {symbol}",
    )


# Corporate-action legs that move shares (SPLIT/SC/NC/MA/SPIN/CIL and the former SSP/SSO).
SHARE_LEG_TYPES: Final = frozenset({"SPLIT", "SSP", "SC", "NC", "MA", "SPIN", "SSO", "CIL", "REORG"})


def to_corporate_execution(activity: Mapping[str, object]) -> Execution | Rejection | None:
    """Return the share movement of a corporate-action leg as a zero-price ``Execution``.

    For the equity replay, which holds positions as the sum of executions: a 2:1 split's SPLIT
    pair (−10, +20) leaves 20 shares at an unchanged cash balance; a cash merger's MA leg (−10)
    empties the position while its ``net_amount`` (a ``corporate`` cash flow) pays the cash; CIL
    and spin-off legs likewise. None for activities that move no shares (no ``qty``/``symbol``,
    another code, canceled).
    """
    code = str(activity.get("activity_type") or "").strip().upper()
    if code not in SHARE_LEG_TYPES or is_canceled(activity):
        return None
    symbol = activity.get("symbol")
    raw_qty = activity.get("qty")
    if not isinstance(symbol, str) or not symbol.strip() or raw_qty in (None, ""):
        return None
    raw_id = activity.get("id")
    activity_id = raw_id.strip() if isinstance(raw_id, str) else ""
    try:
        qty = to_decimal(raw_qty, field="qty")
        when = activity.get("transaction_time") or activity.get("date")
        ts = activity_id_time(activity_id) or parse_activity_time(when)
    except ValueError as e:
        return Rejection(id=activity_id or None, reason=str(e))
    return Execution(id=activity_id, ts=ts, symbol=symbol.strip().upper(), qty=qty, price=Decimal(0))
