"""Value types shared by the ledger modules: orders, fills, lots, closed slices, open rows.

Conventions that hold for every type here:

* **Money and quantities** are ``Decimal`` (never float). Quantities are unsigned; a side field
  gives the sign.
* **Time is an ``int`` of UTC nanoseconds since the epoch** everywhere in the domain (the bus's
  ``ts`` convention, docs/architecture.md §5 ``now_ns``). Field names follow the column names of docs/spec.md §2
  (``filled_at``, ``exit_time``, ``updated_at``…) even though they hold integers; the adapters
  convert at the edge with ``from_datetime``/``to_datetime`` (the tables use ``timestamptz``,
  microsecond precision: never key anything on the sub-microsecond part).
* Every Struct is frozen and keyword-only: a change is a new value (``msgspec.structs.replace``).
* Every Struct holds only numbers, strings and tuples or Structs of them, so none can be part of a
  reference cycle: they are ``gc=False`` (untracked by the cyclic GC). A start-up load creates
  millions of them; tracked, the GC's passes over them cost a third of the rebuild.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final, Literal

import msgspec

from coldharbour.domain.money import ZERO, normalize

NS_PER_SECOND: Final = 1_000_000_000
NS_PER_DAY: Final = 86_400 * NS_PER_SECOND
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

OrderSide = Literal["buy", "sell", "sell_short"]
LotSide = Literal["long", "short"]
ExitType = Literal["TP", "SL", "MANUAL", "CORPORATE"]
LegRole = Literal["take_profit", "stop_loss"]
MovedFlag = Literal["OK", "Already", "—"]
SliceKey = tuple[str, str]
"""``(entry_lot_id, exit_order_id)``: the natural key of a closed slice."""

NO_BREAK_EVEN: Final[MovedFlag] = "—"  # U+2014 EM DASH, the UI contract value

# Order types that make a leg a stop-loss; a ``limit`` leg is a take-profit.
STOP_ORDER_TYPES: Final = frozenset({"stop", "stop_limit", "trailing_stop"})
TAKE_PROFIT_ORDER_TYPES: Final = frozenset({"limit"})
# Statuses after which an order can never trade again; every other status counts as live.
TERMINAL_STATUSES: Final = frozenset({"filled", "canceled", "expired", "replaced", "rejected"})


def to_datetime(ts_ns: int) -> datetime:
    """Return the aware UTC datetime of ``ts_ns`` (truncated to microseconds)."""
    return _EPOCH + timedelta(0, 0, ts_ns // 1000)  # positional: twice as fast as ``microseconds=``


def from_datetime(value: datetime) -> int:
    """Return ``value`` as UTC nanoseconds; a naive datetime is rejected (``ValueError``)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"expected an aware datetime, found naive {value.isoformat()}")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1000


def normal_text(value: Decimal) -> str:
    """Return ``str(normalize(value))``; a value already in that form (``10``, ``2.5``: the usual
    quantity) is returned as its text without the work (``Fill.key`` runs once per fill and step)."""
    text = str(value)
    if len(text) <= 28 and "E" not in text and ("." not in text or text[-1] != "0") and value.is_finite():
        return text  # no exponent, no trailing zero, within the context's 28 digits: normalize is the identity
    return str(normalize(value))


def side_sign(side: LotSide) -> Decimal:
    """Return +1 for a long lot, -1 for a short one (the ``s`` of docs/spec.md §2.2)."""
    return _PLUS_ONE if side == "long" else _MINUS_ONE


_PLUS_ONE: Final = Decimal(1)
_MINUS_ONE: Final = Decimal(-1)


def direction(side: OrderSide) -> int:
    """Return +1 for ``buy``, -1 for ``sell``/``sell_short``."""
    return 1 if side == "buy" else -1


class Order(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One version of a broker order (a leg is its own order with ``parent_id`` set).

    ``legs`` holds the ids of nested legs when the version came with them; the chain functions
    in ``orders.py`` use both links (``leg.parent_id`` and ``parent.legs``), because a stream
    version of a leg may lack its parent link (docs/defects.md D23).
    """

    id: str
    symbol: str
    side: OrderSide
    order_type: str
    status: str
    created_at: int
    updated_at: int
    order_class: str = "simple"
    qty: Decimal | None = None
    filled_qty: Decimal = ZERO
    filled_avg_price: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    parent_id: str | None = None
    replaces: str | None = None
    replaced_by: str | None = None
    legs: tuple[str, ...] = ()
    expires_at: int | None = None
    filled_at: int | None = None
    client_order_id: str = ""
    # When the broker received the request (Alpaca's ``after``/``until`` filters compare it; it
    # precedes ``created_at`` by 1-170 ms). None when the payload had none.
    submitted_at: int | None = None
    # The order's ``commission`` (dollars, >= 0): a fee (docs/spec.md §8), booked as a ``fee`` cash flow.
    commission: Decimal = ZERO

    @property
    def is_live(self) -> bool:
        """Return True while the order can still trade (not filled/canceled/expired/…)."""
        return self.status not in TERMINAL_STATUSES


class Fill(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One execution: ``qty`` > 0 at ``price`` > 0, at ``ts`` (UTC ns).

    ``cum_qty`` is the order's cumulative filled quantity after this execution; it makes the
    idempotence key when the broker gives no ``execution_id``.
    """

    order_id: str
    symbol: str
    side: OrderSide
    qty: Decimal
    price: Decimal
    ts: int
    execution_id: str | None = None
    cum_qty: Decimal | None = None

    @property
    def key(self) -> str:
        """Return the identity of the execution: ``order_id:cum_qty`` when known, else ``execution_id``.

        One execution, one key, whichever path reports it (docs/spec.md §8 fill identity): the stream
        fill (``cum_qty`` = the order's ``filled_qty`` after it, ``execution_id`` sometimes
        missing: alpaca-py#210) and the REST FILL activity (``cum_qty``, execution id in its
        ``id``) both carry ``(order_id, cum_qty)``, which is unique per execution since the
        cumulative quantity grows with each one; so that pair is the primary key and the
        execution id only the fallback. With neither, ``order_id:ts:qty`` (weaker: two identical
        executions at the same nanosecond would collapse into one).
        """
        if self.cum_qty is not None:
            return f"{self.order_id}:{normal_text(self.cum_qty)}"
        if self.execution_id:
            return self.execution_id
        return f"{self.order_id}:{self.ts}:{normal_text(self.qty)}"

    @property
    def sort_key(self) -> tuple[int, str]:
        """Return the canonical processing order: time, then key (ties are deterministic)."""
        return (self.ts, self.key)


class Lot(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An open lot: what remains of one entry (keyed by its top-level order id).

    ``entry_qty``/``entry_cost`` accumulate every entry fill, so ``avg_fill`` is the entry's
    quantity-weighted average fill. ``exits`` lists the exit orders that reduced it (the slice
    keys ``(parent_id, exit)``), so its slices can be marked final when it closes.
    """

    parent_id: str
    symbol: str
    side: LotSide
    qty: Decimal
    entry_qty: Decimal
    entry_cost: Decimal
    filled_at: int
    exits: tuple[str, ...] = ()

    @property
    def avg_fill(self) -> Decimal:
        """Return the entry's average fill price (entry cost / entry quantity)."""
        return self.entry_cost / self.entry_qty


class ClosedSlice(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One closed-trades row: the part of one entry lot closed by one exit order (docs/spec.md §2.3).

    The fields up to ``duration_sec`` are the table's columns (``CLOSED_COLUMNS``). The rest are
    the exact accumulators the columns derive from and are not stored:
    ``exit_value`` = Σ qty·exit price; ``entry_value`` = ``closed_entry_value`` +
    ``open_qty``·(the lot's current average fill), so the slice always uses the entry's
    average fill even when the entry fills more after a partial exit (``open_qty`` is the part
    taken from the lot while it is open; it is frozen into ``closed_entry_value`` at close);
    ``fifo_qty``/``fifo_carry`` split ``pnl_cash_fifo`` between the current flat-to-flat cycle
    and earlier ones; ``is_final`` = the lot is closed.
    """

    entry_lot_id: str
    exit_order_id: str
    exit_parent_id: str | None
    symbol: str
    side: LotSide
    qty: Decimal
    entry_time: int
    entry_price: Decimal
    exit_time: int
    exit_price: Decimal
    exit_type: ExitType
    pnl_cash: Decimal
    pnl_cash_fifo: Decimal
    diff_pnl: Decimal
    pnl_pct: Decimal
    return_pct: Decimal
    duration_sec: int
    entry_value: Decimal
    exit_value: Decimal
    fifo_qty: Decimal
    open_qty: Decimal = ZERO
    closed_entry_value: Decimal = ZERO
    fifo_carry: Decimal = ZERO
    is_final: bool = False

    @property
    def key(self) -> SliceKey:
        """Return ``(entry_lot_id, exit_order_id)``."""
        return (self.entry_lot_id, self.exit_order_id)


CLOSED_COLUMNS: Final = (
    "entry_lot_id", "exit_order_id", "exit_parent_id", "symbol", "side", "qty", "entry_time",
    "entry_price", "exit_time", "exit_price", "exit_type", "pnl_cash", "pnl_cash_fifo",
    "diff_pnl", "pnl_pct", "return_pct", "duration_sec",
)


class Leg(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The live end of one exit leg of a lot, after following its replacements.

    ``price`` is the leg's working price (``limit_price`` for a take-profit, ``stop_price`` for a
    stop); ``original_*`` describe the leg as first placed (the start of its chain).
    """

    order_id: str
    role: LegRole
    price: Decimal | None
    original_id: str
    original_price: Decimal | None
    created_at: int
    expires_at: int | None = None

    @property
    def is_replaced(self) -> bool:
        """Return True when the live order is a replacement of the original leg."""
        return self.order_id != self.original_id


class LotLegs(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The live take-profit and stop-loss legs of a lot (either may be missing)."""

    take_profit: Leg | None = None
    stop_loss: Leg | None = None


class OpenRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One open-positions row (docs/spec.md §2.2); field names are the table/UI columns.

    Times are UTC ns (``filled_at``, ``bar_ts``, ``updated_at``). ``None`` is SQL null.
    """

    parent_id: str
    symbol: str
    side: LotSide
    filled_at: int
    qty: Decimal
    avg_fill: Decimal
    avg_px_symbol: Decimal
    sl_child: str | None
    sl_px: Decimal | None
    tp_child: str | None
    tp_px: Decimal | None
    mkt_px: Decimal | None
    bar_px: Decimal | None
    bar_ts: int | None
    moved_flag: MovedFlag
    buy_value: Decimal
    holding_days: int
    days_to_expire: int | None
    mkt_value: Decimal | None
    profit_loss: Decimal | None
    profit_loss_lot: Decimal | None
    tp_sl_reach_pct: Decimal | None
    updated_at: int


class FillRejection(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A fill the ledger refused, with the reason (counted and logged by the caller)."""

    key: str
    reason: str


class FifoEntry(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What remains of one opening execution in the broker-FIFO queue."""

    qty: Decimal
    price: Decimal


class ExitTotals(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One exit order's broker-FIFO P&L and quantity in the current cycle, and its lots."""

    pnl: Decimal
    qty: Decimal
    lots: tuple[str, ...]


class BrokerPosition(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The broker's position in one symbol: signed ``qty`` (short < 0) and its WAC."""

    symbol: str
    qty: Decimal
    avg_entry_price: Decimal
    current_price: Decimal | None = None
