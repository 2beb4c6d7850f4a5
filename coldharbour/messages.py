"""Every bus payload type (one tagged union), the encoder/decoder, and the topic builders.

A bus message is two frames: a dot-separated ASCII topic (prefix-subscribable) and a msgpack
payload. Payloads are frozen msgspec Structs sharing the envelope ``src`` (program name),
``seq`` (per-publisher counter from 1) and ``ts`` (UTC ns), stamped by ``bus.Publisher``.

Evolution rules (docs/architecture.md §7): each class has an explicit, stable ``tag``; a new field gets a
default and goes last; a field's type never changes; a tag is never reused. Messages do not set
``forbid_unknown_fields`` so an older worker skips fields a newer one added.

Money fields are ``Decimal`` (msgpack-encoded as strings, losslessly) and are checked for
finiteness in ``__post_init__``, so a NaN/inf frame is a ``ValidationError`` at the edge.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from coldharbour.domain.cashflows import CashFlow
from coldharbour.domain.corporate import CorporateAction
from coldharbour.domain.equity import DailyRow, IntradayPoint
from coldharbour.domain.money import MAX_ABS
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.schedule import Session
from coldharbour.domain.types import BrokerPosition, Fill, Order


class Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Envelope shared by every payload; ``bus.Publisher`` stamps the three fields."""

    src: str = ""
    seq: int = 0
    ts: int = 0  # UTC ns


def _has_non_finite(value: object) -> bool:
    """The walk by runtime type: what the planned check below agrees with, and its fallback."""
    if isinstance(value, Decimal):  # huge is as bad as infinite: 1e999 is a "finite" Decimal
        return not value.is_finite() or abs(value) > MAX_ABS
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, msgspec.Struct):
        return any(_has_non_finite(getattr(value, name)) for name in value.__struct_fields__)
    if isinstance(value, (tuple, list)):
        return any(_has_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    return False


# --- the same check, planned once per Struct class from its declared field types --------------
#
# ``_has_non_finite`` asks every value what it is; most fields are text or ints that can never
# hold a number to reject, and a message is checked on construction AND on every decode. So
# each Struct class gets a plan, made once from its declared types (``msgspec.inspect``): the
# fields that may hold a Decimal or float (directly, or inside a Struct, tuple, list or dict
# value), walked without asking about the rest. A value of a type its declaration does not
# allow (only possible by bypassing mypy) falls back to ``_has_non_finite``. A nested ``Checked``
# Struct is skipped: it checked itself when it was built or decoded (frozen: not changed since).

Bad = Callable[[Any], bool]  # True when the value holds a NaN, an infinity or a huge Decimal
_NUMBER_TYPES: Final = (mi.DecimalType, mi.FloatType)
_SEQUENCE_TYPES: Final = (mi.VarTupleType, mi.ListType, mi.SetType, mi.FrozenSetType)
_NOTHING_TO_CHECK: Final = (
    mi.NoneType, mi.StrType, mi.IntType, mi.BoolType, mi.BytesType, mi.ByteArrayType, mi.MemoryViewType,
    mi.DateType, mi.DateTimeType, mi.TimeType, mi.TimeDeltaType, mi.UUIDType, mi.LiteralType, mi.EnumType,
)  # fmt: skip
_STRUCT_PLANS: dict[type, Bad] = {}


def _bad_number(value: Any) -> bool:
    """A field declared ``Decimal``/``float`` (or optional): checked without the isinstance chain."""
    cls = value.__class__
    if cls is Decimal:
        return not value.is_finite() or abs(value) > MAX_ABS
    if cls is float:
        return not math.isfinite(value)
    return value is not None and _has_non_finite(value)


def _bad_of(info: mi.Type) -> Bad | None:
    """Return the check of a value declared as ``info``; None when no such value can be bad."""
    if isinstance(info, _NOTHING_TO_CHECK):
        return None
    if isinstance(info, _NUMBER_TYPES):
        return _bad_number
    if isinstance(info, mi.StructType):
        return None if issubclass(info.cls, Checked) else _struct_plan(info.cls, info)
    if isinstance(info, mi.UnionType):
        return _union_bad(info)
    if isinstance(info, _SEQUENCE_TYPES):
        item = _bad_of(info.item_type)
        return None if item is None else _any_bad(item)
    if isinstance(info, mi.TupleType):
        items = [_bad_of(t) for t in info.item_types]
        return None if all(b is None for b in items) else _has_non_finite
    if isinstance(info, mi.DictType):
        value = _bad_of(info.value_type)
        return None if value is None else _values_bad(value)
    return _has_non_finite  # Any, object, a custom type: ask the value


def _union_bad(info: mi.UnionType) -> Bad | None:
    checks = {b for b in map(_bad_of, info.types) if b is not None}
    if not checks:
        return None
    if len(checks) > 1:
        return _has_non_finite  # e.g. ``Decimal | Fill``: ask the value what it is
    (check,) = checks
    if check is _bad_number or check is _has_non_finite:
        return check  # both take None
    return _optional(check)


def _optional(check: Bad) -> Bad:
    def bad(value: Any) -> bool:
        return value is not None and check(value)

    return bad


def _any_bad(item: Bad) -> Bad:
    def bad(value: Any) -> bool:
        return any(map(item, value)) if isinstance(value, (tuple, list, set, frozenset)) else _has_non_finite(value)

    return bad


def _values_bad(item: Bad) -> Bad:
    def bad(value: Any) -> bool:
        return any(map(item, value.values())) if isinstance(value, dict) else _has_non_finite(value)

    return bad


def _struct_plan(cls: type, info: mi.StructType | None = None) -> Bad:
    """Return (and cache) the check of a ``cls`` instance: its number fields, then nested ones."""
    plan = _STRUCT_PLANS.get(cls)
    if plan is not None:
        return plan
    _STRUCT_PLANS[cls] = _has_non_finite  # a self-referencing type meets the exact walk
    if info is None:
        try:
            found = mi.type_info(cls)
        except (NameError, TypeError):  # a type msgspec cannot resolve: keep asking the values
            return _has_non_finite
        assert isinstance(found, mi.StructType)
        info = found
    numbers: list[str] = []
    nested: list[tuple[str, Bad]] = []
    for field in info.fields:
        bad = _bad_of(field.type)
        if bad is _bad_number:
            numbers.append(field.name)
        elif bad is not None:
            nested.append((field.name, bad))
    plan = _make_plan(cls, tuple(numbers), tuple(nested))
    _STRUCT_PLANS[cls] = plan
    return plan


def _make_plan(cls: type, numbers: tuple[str, ...], nested: tuple[tuple[str, Bad], ...]) -> Bad:
    get_numbers = _tuple_getter(numbers)

    def bad(value: Any) -> bool:
        if value.__class__ is not cls:
            return _has_non_finite(value)
        if get_numbers is not None and _any_bad_number(get_numbers(value)):
            return True
        for name, check in nested:  # noqa: SIM110 - a loop: any() over a generator is a frame more per message
            if check(getattr(value, name)):
                return True
        return False

    return bad


def _tuple_getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]] | None:
    if not names:
        return None
    if len(names) == 1:
        (name,) = names
        return lambda value: (getattr(value, name),)
    return operator.attrgetter(*names)


def _any_bad_number(numbers: tuple[Any, ...]) -> bool:
    """``_bad_number`` over the number fields of one Struct, in one frame."""
    for number in numbers:
        kind = number.__class__
        if kind is Decimal:
            if not number.is_finite() or abs(number) > MAX_ABS:
                return True
        elif kind is float:
            if not math.isfinite(number):
                return True
        elif number is not None and _has_non_finite(number):
            return True
    return False


class Checked(msgspec.Struct, frozen=True, kw_only=True):
    """Mixin: reject any NaN/inf number anywhere inside the message (nested Structs included).

    Used by every message that carries money or embeds domain values; the tick hot path has
    its own cheaper check. The walk follows the class's plan (``_struct_plan``); the field named
    in the error is found with the exact walk, only once something was found.
    """

    def __post_init__(self) -> None:
        plan = _STRUCT_PLANS.get(self.__class__) or _struct_plan(self.__class__)
        if not plan(self):
            return
        for name in self.__struct_fields__:
            if _has_non_finite(getattr(self, name)):
                raise ValueError(f"{name}: non-finite or out-of-range number")
        raise ValueError("non-finite or out-of-range number")


def check_finite(*values: Decimal | float | None) -> None:
    """Raise ``ValueError`` if any value is NaN or infinite (msgspec turns it into a rejection)."""
    for value in values:
        if value is None:
            continue
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"non-finite number {value}")
        elif not math.isfinite(value):
            raise ValueError(f"non-finite number {value}")


# --- lifecycle -------------------------------------------------------------------------------


class Condition(msgspec.Struct, frozen=True, kw_only=True):
    """One thing a program needs to do its work, as it last found it (``coldharbour.health``).

    ``need`` names it (``broker``: the account's REST credentials accepted and a snapshot
    read; ``stream``: the trade_updates stream authorized and open; ``database``); ``account``
    is the account's slug, or empty for the program as a whole. ``ok`` is positive evidence
    (it worked); ``cause`` says in one line, without a secret, why not; ``since`` is when it
    last changed (UTC ns).
    """

    need: str
    account: str = ""
    ok: bool
    cause: str = ""
    since: int = 0


class Heartbeat(Msg, Checked, frozen=True, tag="hb"):
    """A program is alive: pid, uptime and its counters (messages in/out, rejects, lag)."""

    program: str
    pid: int
    uptime_s: float
    counters: dict[str, int] = {}
    lag_ms: float | None = None
    state: str = "running"  # "running" | "stopping" | "sleeping"
    details: dict[str, str] = {}  # short facts for `chmgr status` (prices: price_source, subscribed)
    conditions: tuple[Condition, ...] = ()  # what it needs, per account (none reported: not known yet)


# ``cashflows`` says in every heartbeat how far each account's stored cash activities are known
# complete: ``details[cash_complete_detail(slug)]`` = UTC ns (docs/startup.md "Completeness
# watermarks"). A heartbeat repeats every second, so ``equity`` learns it whichever starts first.
CASH_COMPLETE_DETAIL: Final = "cash_complete_"
MAX_COMPLETE_NS: Final = 2**63 - 1  # 2262-04-11: the last instant a UTC-ns int64 holds


def cash_complete_detail(slug: str) -> str:
    """Return the heartbeat detail key of an account's cash-activity watermark."""
    return f"{CASH_COMPLETE_DETAIL}{slug}"


def cash_complete_marks(message: Heartbeat) -> dict[str, int]:
    """Return ``{slug: complete_to_ns}`` from a ``cashflows`` heartbeat.

    Malformed values are left out: only ASCII digits of a UTC-ns instant a ``datetime`` can hold
    (``"²"`` is ``isdigit`` but not a number ``int`` takes; forty nines overflow the timestamp).
    """
    found: dict[str, int] = {}
    for key, value in message.details.items():
        if key.startswith(CASH_COMPLETE_DETAIL) and value.isascii() and value.isdigit() and len(value) <= 19:
            mark = int(value)
            if mark <= MAX_COMPLETE_NS:
                found[key.removeprefix(CASH_COMPLETE_DETAIL)] = mark
    return found


class Probe(Msg, frozen=True, tag="probe"):
    """A no-op message used to prove a subscription is live (slow-joiner handshake)."""

    token: str


# --- commands --------------------------------------------------------------------------------


class ResyncRequested(Msg, frozen=True, tag="cmd.resync"):
    """Ask ``snapshot`` for a full snapshot of one account (after a gap, reconnect or start)."""

    account: str  # slug
    reason: str
    symbols: tuple[str, ...] = ()  # empty = everything


# --- market data -----------------------------------------------------------------------------


class Tick(Msg, frozen=True, tag="px"):
    """A validated trade print from the price feed.

    ``price`` travels as a float on this hot path (docs/architecture.md §7's one measured exception);
    ``state`` turns it into a Decimal once, when it applies it to a row.
    """

    symbol: str
    price: float
    size: float = 0.0
    ts_event: int = 0  # UTC ns of the trade, from the feed

    def __post_init__(self) -> None:
        if not math.isfinite(self.price) or self.price <= 0:
            raise ValueError(f"price must be finite and positive, found {self.price}")
        if not math.isfinite(self.size) or self.size < 0:
            raise ValueError(f"size must be finite and non-negative, found {self.size}")


class TickBatch(Msg, frozen=True, tag="px.batch"):
    """Validated trade prints from the price feed, in feed order, as equal-length columns.

    What ``prices`` publishes on ``TOPIC_TICKS``: every tick it drained from the feed in one go
    travels in one bus frame (a frame per tick caps a Python subscriber near 0.2 M/s, docs/architecture.md §2;
    measured by ``scripts/bench`` ``feed_ingest``/``tick_to_mark``). Same rules as ``Tick``
    per element; a batch with one bad element is rejected whole at decode.
    """

    symbols: tuple[str, ...]
    prices: tuple[float, ...]
    sizes: tuple[float, ...]
    ts_events: tuple[int, ...]  # UTC ns of each trade, from the feed (0 = unknown)

    def __post_init__(self) -> None:
        count = len(self.symbols)
        if not (len(self.prices) == len(self.sizes) == len(self.ts_events) == count):
            raise ValueError("columns must have the same length")
        if not all(map(math.isfinite, self.prices)) or (count and min(self.prices) <= 0):
            raise ValueError("prices must be finite and positive")
        if not all(map(math.isfinite, self.sizes)) or (count and min(self.sizes) < 0):
            raise ValueError("sizes must be finite and non-negative")


# --- broker inputs (reports and snapshots) -----------------------------------------------------


class OrderUpdated(Msg, Checked, frozen=True, tag="trade.update"):
    """A trade_updates event: the order's new version and, for fills, the execution.

    ``order_json`` is the event's ``order`` object as JSON text (for ``raw_orders.raw_json``);
    ``event`` is Alpaca's event name kept as text, so a new value never drops a fill.
    """

    account: str  # slug
    event: str
    order: Order
    fill: Fill | None = None
    event_ts: int = 0  # UTC ns of the event (its ``timestamp``)
    order_json: str = "{}"
    legs: tuple[Order, ...] = ()  # nested leg versions carried by the event, if any


class SnapshotTaken(Msg, Checked, frozen=True, tag="snap"):
    """A REST snapshot of one account: positions (broker WAC), open orders, cash.

    ``symbols`` empty means a full snapshot (every symbol the broker does not list is flat);
    otherwise only those symbols were pulled (e.g. the WAC refresh after a fill).
    ``unknown_symbols``: symbols the broker listed whose position could not be converted (a
    booked field refused). They are neither flat nor known: ``state`` keeps their lots as they
    are and does not reconcile them until a snapshot lists them convertibly (absence is not
    evidence).
    """

    account: str
    taken_at: int  # UTC ns
    positions: tuple[BrokerPosition, ...]
    open_orders: tuple[Order, ...] = ()
    open_orders_json: tuple[str, ...] = ()
    cash: Decimal | None = None
    equity: Decimal | None = None
    symbols: tuple[str, ...] = ()
    reason: str = "periodic"
    unknown_symbols: tuple[str, ...] = ()
    buying_power: Decimal | None = None  # from GET /v2/account, with cash and equity (full snapshots)
    last_equity: Decimal | None = None  # equity at the previous session's close
    # Symbols a corporate action is under way for (announced or with legs, not booked yet):
    # ``state`` does not reconcile them (docs/corporate-actions.md "Announcements").
    pending_symbols: tuple[str, ...] = ()


class OrdersPage(Msg, Checked, frozen=True, tag="orders.page"):
    """A page of order history (every order and leg version), oldest first."""

    account: str
    orders: tuple[Order, ...]
    orders_json: tuple[str, ...] = ()  # same order as ``orders``
    is_last: bool = True
    is_backfill: bool = False


class FillsPage(Msg, Checked, frozen=True, tag="fills.page"):
    """A page of FILL activities (REST), with the executions the ledger consumes."""

    account: str
    fills: tuple[Fill, ...]
    activities: tuple[ActivityRecord, ...] = ()
    is_last: bool = True
    is_backfill: bool = False
    # Executions the broker canceled (a FILL activity with ``status`` canceled): remove them
    # from the stored history and rebuild their symbols (``ledger.plan_symbols_rebuild``).
    busted: tuple[Fill, ...] = ()
    # Completeness watermark, on the last page of a read (docs/startup.md): the pages of this
    # read hold every FILL stamped after ``complete_after_ns`` up to ``complete_to_ns`` (the read's
    # start) that was not published before; ``is_from_floor``: the read started at the backfill
    # floor, so with it nothing since the floor is missing. None on pages that claim nothing.
    complete_after_ns: int | None = None
    complete_to_ns: int | None = None
    is_from_floor: bool = False


class ActivitiesPage(Msg, Checked, frozen=True, tag="cash.activities"):
    """Account activities since the last seen id, classified into cash flows."""

    account: str
    activities: tuple[ActivityRecord, ...]
    cash_flows: tuple[CashFlow, ...] = ()
    # Cash-flow ids the broker canceled since they were booked (``cashflows.flow_changes``):
    # delete those rows (KPIs follow). A corrected amount arrives in ``cash_flows`` as usual.
    deleted_cash_flow_ids: tuple[str, ...] = ()


class CorporateActionsPage(Msg, Checked, frozen=True, tag="corp.actions"):
    """Corporate actions the broker booked (docs/spec.md §8), from its SPLIT/SC/NC/MA/SPIN/CIL legs.

    Published by ``snapshot`` before the ``SnapshotTaken`` that reflects them. ``state`` stores
    each action once (by ``id``) and books it with ``ledger.plan_symbols_rebuild(ledger,
    action.symbols, stored fills, book, every stored action)``; ``activities`` are the legs for
    ``raw_activities``; ``problems`` are legs that fit no action (one line each, to count and
    log; reconciliation then books the position, flagged).
    """

    account: str
    actions: tuple[CorporateAction, ...]
    activities: tuple[ActivityRecord, ...] = ()
    problems: tuple[str, ...] = ()
    # Ids of actions published earlier whose legs the broker now lists as ``canceled`` (its
    # documented correction): ``state`` removes them and rebuilds their symbols.
    canceled: tuple[str, ...] = ()
    # Completeness watermark, as on ``FillsPage``: every action booked after ``complete_after_ns``
    # up to ``complete_to_ns`` (the read's start) is in this page or was published before.
    complete_after_ns: int | None = None
    complete_to_ns: int | None = None
    is_from_floor: bool = False


# --- computed results that ``state`` writes ----------------------------------------------------


class EquityComputed(Msg, Checked, frozen=True, tag="equity.rows"):
    """Daily and/or intraday equity rows for one account, plus ``bar_px``/``bar_ts`` marks."""

    account: str
    daily: tuple[DailyRow, ...] = ()
    intraday: tuple[IntradayPoint, ...] = ()
    bars: dict[str, tuple[Decimal, int]] = {}  # symbol -> (close, bar ts UTC ns)
    is_rebuild: bool = False


class MetricsComputed(Msg, Checked, frozen=True, tag="metrics.doc"):
    """The KPI document of one account (JSON text with the exact docs/spec.md §5 keys)."""

    account: str
    payload: str
    computed_at: int  # UTC ns


class AccountChanged(Msg, frozen=True, tag="state.changed"):
    """What one commit of ``state`` changed in one account, published after the commit.

    ``kinds`` names the changes (``domain.changes.changed_kinds``: ``closed``, ``cash_flows``, …);
    a mark flush written without announcement is not one. What derives from those rows (the KPI
    document) is computed on this, not on a timer (docs/scaling.md).
    """

    account: str
    kinds: tuple[str, ...]


class ScheduleComputed(Msg, Checked, frozen=True, tag="schedule.rows"):
    """Sessions from the broker calendar, and the cut-off before which rows are pruned."""

    sessions: tuple[Session, ...]
    prune_before_ns: int | None = None
    # The calendar range this refresh covers (NY dates, inclusive): stored rows inside it that
    # are not in ``sessions`` (a closure declared later) are deleted. None: upsert only.
    replace_from: date | None = None
    replace_to: date | None = None


class SessionPhaseChanged(Msg, frozen=True, tag="session.phase"):
    """The market phase changed (``pre``/``open``/``post``/``closed``) at ``at_ns``."""

    phase: str
    session_date: str | None = None  # ISO date of the session, when inside one
    at_ns: int = 0


class LedgerCheckRequested(Msg, frozen=True, tag="cmd.ledger_check"):
    """Ask ``state`` to compare the incremental ledger with a rebuild from stored history."""

    account: str


class SpinoffBasisSet(Msg, Checked, frozen=True, tag="cmd.spinoff_basis"):
    """Ask ``state`` to rebook a spin-off with the parent keeping ``parent_share`` of its basis
    (``chmgr corporate basis``; docs/corporate-actions.md "Spin-offs").

    ``parent``: the parent symbol, needed only when no announcement named it (the action is held);
    ``state`` stores the choice (``spinoff_bases``, source ``override``) and rebuilds the symbols.
    """

    account: str
    action_id: str
    parent_share: Decimal
    parent: str | None = None


Message = (
    Heartbeat
    | Probe
    | ResyncRequested
    | Tick
    | TickBatch
    | OrderUpdated
    | SnapshotTaken
    | OrdersPage
    | FillsPage
    | ActivitiesPage
    | CorporateActionsPage
    | EquityComputed
    | MetricsComputed
    | AccountChanged
    | ScheduleComputed
    | SessionPhaseChanged
    | LedgerCheckRequested
    | SpinoffBasisSet
)

ENCODER: Final = msgspec.msgpack.Encoder(decimal_format="string")
DECODER: Final = msgspec.msgpack.Decoder(Message)


def encode(message: Msg) -> bytes:
    """Return the msgpack payload frame of ``message``."""
    return ENCODER.encode(message)


def decode(payload: bytes) -> Message:
    """Return the typed message in ``payload``; raise ``msgspec.DecodeError`` if it is not one."""
    try:
        message: Message = DECODER.decode(payload)
    except UnicodeDecodeError as e:  # invalid UTF-8 in a string: same class of bad input
        raise msgspec.DecodeError(f"invalid UTF-8 in payload: {e.reason}") from None
    return message


# --- topics: built here only, never as literals elsewhere ------------------------------------


def topic_heartbeat(program: str) -> str:
    """Return ``hb.<program>``."""
    return f"hb.{program}"


def topic_tick(symbol: str) -> str:
    """Return ``px.<SYMBOL>`` (one ``Tick``; ``prices`` publishes ``TickBatch`` on ``TOPIC_TICKS``)."""
    return f"px.{symbol}"


def topic_resync(slug: str) -> str:
    """Return ``cmd.resync.<slug>``."""
    return f"cmd.resync.{slug}"


def topic_trade(slug: str) -> str:
    """Return ``trade.<slug>`` (order/fill updates from the stream)."""
    return f"trade.{slug}"


def topic_snapshot(slug: str) -> str:
    """Return ``snap.<slug>`` (full broker snapshots)."""
    return f"snap.{slug}"


def topic_orders(slug: str) -> str:
    """Return ``orders.<slug>`` (order-history pages)."""
    return f"orders.{slug}"


def topic_cash(slug: str) -> str:
    """Return ``cash.<slug>`` (account activities)."""
    return f"cash.{slug}"


def topic_equity(slug: str) -> str:
    """Return ``equity.<slug>`` (equity rows for ``state`` to write)."""
    return f"equity.{slug}"


def topic_metrics(slug: str) -> str:
    """Return ``metrics.<slug>`` (KPI documents for ``state`` to write)."""
    return f"metrics.{slug}"


def topic_state(slug: str) -> str:
    """Return ``state.<slug>`` (``AccountChanged``, published by ``state`` after a commit)."""
    return f"state.{slug}"


def topic_fills(slug: str) -> str:
    """Return ``fills.<slug>`` (FILL activity pages)."""
    return f"fills.{slug}"


def topic_spinoff_basis(slug: str) -> str:
    """Return the topic of ``slug``'s spin-off basis overrides (``chmgr corporate basis``)."""
    return f"cmd.spinoff_basis.{slug}"


def topic_ledger_check(slug: str) -> str:
    """Return ``cmd.ledger_check.<slug>``."""
    return f"cmd.ledger_check.{slug}"


TOPIC_SESSION: Final = "session"
TOPIC_SCHEDULE: Final = "schedule"
TOPIC_PROBE: Final = "probe"
PREFIX_HEARTBEAT: Final = "hb."
PREFIX_TICK: Final = "px."
TOPIC_TICKS: Final = "px.batch"  # lower case: never a feed symbol (they are upper-cased)
PREFIX_RESYNC: Final = "cmd.resync."
PREFIX_TRADE: Final = "trade."
PREFIX_STATE: Final = "state."
