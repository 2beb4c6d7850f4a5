"""Corporate actions in the fake broker: the ``POST /sim/corporate-actions`` body, its legs and its
announcement (docs/corporate-actions.md "The fake broker").

The body names the action as Alpaca's corporate-actions announcements do (alpaca-py
``alpaca/data/models/corporate_actions.py``: one group per type, its field names), plus how the
account side is booked::

    {"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2",
     "ex_date": "2026-12-07", "payable_date": "2026-12-06",
     "legs": "payable_date" | "ex_date" | "executed_at", "position": "before_legs" | "after_legs"}

Types and their fields (``symbol`` is always the held symbol the action acts on):
``forward_split`` / ``reverse_split`` (``old_rate``, ``new_rate``), ``unit_split``
(``old_rate``, ``new_symbol``, ``new_rate``, ``alternate_symbol``, ``alternate_rate``),
``stock_dividend`` (``rate``: new shares per share), ``cash_merger`` (``rate``: cash per share,
optional ``acquirer_symbol``), ``stock_merger`` (``acquirer_symbol``, ``acquirer_rate``,
``acquiree_rate``), ``stock_and_cash_merger`` (the same and ``cash_rate``), ``redemption``
(``rate``: cash per share), ``spin_off`` (``new_symbol``, ``source_rate``, ``new_rate``),
``name_change`` (``new_symbol``), ``worthless_removal``. ``ex_date`` (splits, dividends,
spin-offs) or ``effective_date`` (the others) defaults to the next weekday (New York): the fake
shows the action at once, and an action takes effect at the start of its ex-date (the mirror
reads that from the announcement), so what was traded before the request is before the action
only with an ex-date after today. ``payable_date`` defaults to the ex-date.

``legs`` says when the legs are stamped: ``now`` (default: the moment the fake books them, so
that what happened before it is before the action and what follows after it), or as real
accounts list them: ``ex_date`` (04:00 New York on the ex-date, before the open),
``payable_date`` (the payable date's midnight) or ``executed_at`` (12:00 New York on the
ex-date). With the last three a test trades the symbol only before the ex-date: the fake shows
the action at once, the real broker at the ex-date. ``position`` says which half the broker
shows first: by default both at once; ``before_legs`` changes the position now and lists the legs on ``POST
/sim/corporate-actions/{id}/complete``; ``after_legs`` lists the legs now and changes the
position on ``complete``.

Legs (non-trade activities: ``id``, ``activity_type``, ``activity_sub_type``, ``date``,
``net_amount``, ``description``, ``status``, ``symbol``, ``qty``, ``price``; no
``per_share_amount``, which only dividend legs carry): a split is a SPLIT pair (old shares out,
new shares in) and a CIL for a fraction a whole-share holder cannot keep; a name change an NC
pair; a stock merger an MA pair; a cash merger an MA shares-out leg (``net_amount`` 0) and an
MA cash leg (``qty`` 0); a stock-and-cash merger both; a redemption and a worthless removal
REORG legs (the removal without cash); a spin-off one SPIN leg at price 0; a unit split three
SPLIT legs; a stock dividend one SPLIT leg in at price 0.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Final

from coldharbour.domain.corporate import MAX_RATIO, MIN_RATIO
from coldharbour.domain.money import ZERO, InvalidMoney, to_decimal
from coldharbour.sim.accounts import NEW_YORK, PRICE_PLACES, SimPosition
from coldharbour.sim.activities import activity_id
from coldharbour.sim.wire import CODE_BAD_REQUEST, SimError, money_text

ACTION_TYPES: Final = (
    "forward_split", "reverse_split", "unit_split", "stock_dividend", "cash_merger", "stock_merger",
    "stock_and_cash_merger", "redemption", "spin_off", "name_change", "worthless_removal",
)  # fmt: skip
LEG_TIMINGS: Final = ("now", "ex_date", "payable_date", "executed_at")
POSITION_TIMINGS: Final = ("together", "before_legs", "after_legs")
# What the fake books at all (garbage is a 400 naming the field, never a 500): every rate a
# number ``money.to_decimal`` takes, the shares per share within the domain's ratio bounds, the
# cash per share below ``MAX_CASH_PER_SHARE``, and every date within what the store and the bus
# hold (``broker/validate.py``: 1970..2262).
MAX_CASH_PER_SHARE: Final = Decimal(10_000_000)
FIRST_DATE: Final = date(1970, 1, 2)
LAST_DATE: Final = date(2262, 4, 10)
# alpaca-py's group name of each type (``CorporateActionsSet``).
GROUPS: Final = {kind: f"{kind}s" for kind in ACTION_TYPES}
_EX_DATED: Final = frozenset({"forward_split", "reverse_split", "stock_dividend", "spin_off"})
_NEW_SYMBOL: Final = {"unit_split": "new_symbol", "stock_merger": "acquirer_symbol",
                      "stock_and_cash_merger": "acquirer_symbol", "spin_off": "new_symbol",
                      "name_change": "new_symbol"}  # fmt: skip
_RATES: Final[dict[str, tuple[str, ...]]] = {
    "forward_split": ("old_rate", "new_rate"), "reverse_split": ("old_rate", "new_rate"),
    "unit_split": ("old_rate", "new_rate", "alternate_rate"), "stock_dividend": ("rate",),
    "cash_merger": ("rate",), "stock_merger": ("acquirer_rate", "acquiree_rate"),
    "stock_and_cash_merger": ("acquirer_rate", "acquiree_rate", "cash_rate"), "redemption": ("rate",),
    "spin_off": ("source_rate", "new_rate"), "name_change": (), "worthless_removal": (),
}  # fmt: skip


@dataclass(frozen=True)
class CorporateAction:
    """A validated corporate action (the fields of its alpaca-py model, by name)."""

    type: str
    symbol: str
    effective: date
    payable: date
    rates: dict[str, Decimal] = field(default_factory=dict)
    new_symbol: str | None = None
    alternate_symbol: str | None = None
    legs: str = "now"
    position: str = "together"
    posted: datetime | None = None  # when the fake booked it (the "now" leg stamp)

    def rate(self, name: str) -> Decimal:
        """Return one of the action's rates (0 when it has none of that name)."""
        return self.rates.get(name, ZERO)

    @property
    def shares_per_share(self) -> Decimal:
        """New shares of ``new_symbol`` (or of ``symbol``) per share held; 0 when none."""
        r = self.rates
        if self.type in {"forward_split", "reverse_split", "unit_split"}:
            return r["new_rate"] / r["old_rate"]
        if self.type in {"stock_merger", "stock_and_cash_merger"}:
            return r["acquirer_rate"] / r["acquiree_rate"]
        if self.type == "spin_off":
            return r["new_rate"] / r["source_rate"]
        if self.type == "stock_dividend":
            return r["rate"]
        return Decimal(1) if self.type == "name_change" else ZERO

    @property
    def cash_per_share(self) -> Decimal:
        """Cash paid per share held (cash merger, redemption, the cash part of a stock-and-cash merger)."""
        if self.type in {"cash_merger", "redemption"}:
            return self.rate("rate")
        return self.rate("cash_rate")

    def leg_moment(self) -> datetime:
        """Return the instant the legs are stamped with (``legs``)."""
        if self.legs == "now" and self.posted is not None:
            return self.posted
        if self.legs == "payable_date":
            return datetime.combine(self.payable, time(0), tzinfo=NEW_YORK)
        return datetime.combine(self.effective, time(12 if self.legs == "executed_at" else 4), tzinfo=NEW_YORK)

    def symbols(self) -> tuple[str, ...]:
        """Return every symbol the action touches."""
        return tuple(s for s in (self.symbol, self.new_symbol, self.alternate_symbol) if s)


def bad_request(message: str) -> SimError:
    """Return a 400 with a one-line reason."""
    return SimError(400, CODE_BAD_REQUEST, message)


def _symbol(body: Mapping[str, object], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 12 or not value.isprintable():
        raise bad_request(f"{key}: expected a symbol, found {value!r:.40}")
    return value.strip().upper()


def _positive(body: Mapping[str, object], key: str) -> Decimal:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad_request(f"{key}: expected a positive number, found {value!r:.40}")
    try:
        number = to_decimal(value, field=key)
    except InvalidMoney as e:
        raise bad_request(f"{e} (a positive number)") from e
    if number <= ZERO:
        raise bad_request(f"{key}: expected a positive number, found {value!r:.40}")
    return number


def _date(body: Mapping[str, object], key: str, default: date) -> date:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise bad_request(f"{key}: expected YYYY-MM-DD, found {value!r:.40}")
    try:
        day = date.fromisoformat(value)
    except ValueError as e:
        raise bad_request(f"{key}: expected YYYY-MM-DD, found {value[:40]!r}") from e
    if not FIRST_DATE <= day <= LAST_DATE:
        raise bad_request(f"{key}: expected a date in {FIRST_DATE}..{LAST_DATE}, found {day}")
    return day


def _choice(body: Mapping[str, object], key: str, choices: tuple[str, ...]) -> str:
    value = body.get(key, choices[0])
    if value not in choices:
        raise bad_request(f"{key}: expected one of {', '.join(choices)}, found {value!r:.40}")
    return str(value)


def next_weekday(day: date) -> date:
    """Return the first weekday after ``day`` (the default ex-date: see the module docstring)."""
    following = day + timedelta(days=1)
    while following.weekday() >= 5:
        following += timedelta(days=1)
    return following


def parse_corporate_action(body: object, now: datetime) -> CorporateAction:
    """Return the action of a ``POST /sim/corporate-actions`` body; 400 naming what is wrong."""
    if not isinstance(body, Mapping):
        raise bad_request("expected a JSON object")
    kind = body.get("type")
    if kind not in ACTION_TYPES:
        raise bad_request(f"type: expected one of {', '.join(ACTION_TYPES)}, found {kind!r:.40}")
    assert isinstance(kind, str)
    symbol = _symbol(body, "symbol")
    new_key = _NEW_SYMBOL.get(kind)
    new_symbol = _symbol(body, new_key) if new_key else None
    if kind == "cash_merger" and body.get("acquirer_symbol") is not None:
        new_symbol = None  # the acquirer of a cash merger is named but no shares of it are booked
    alternate = _symbol(body, "alternate_symbol") if kind == "unit_split" else None
    if len({s for s in (symbol, new_symbol, alternate) if s}) != len([s for s in (symbol, new_symbol, alternate) if s]):
        raise bad_request(f"{new_key}: must differ from symbol")
    rates = {name: _positive(body, name) for name in _RATES[kind]}
    if kind == "forward_split" and rates["new_rate"] <= rates["old_rate"]:
        raise bad_request("new_rate: a forward split needs new_rate > old_rate")
    if kind == "reverse_split" and rates["new_rate"] >= rates["old_rate"]:
        raise bad_request("new_rate: a reverse split needs new_rate < old_rate")
    date_key = "ex_date" if kind in _EX_DATED else "effective_date"
    effective = _date(body, date_key, next_weekday(now.astimezone(NEW_YORK).date()))
    action = CorporateAction(
        type=kind, symbol=symbol, effective=effective, payable=_date(body, "payable_date", effective),
        rates=rates, new_symbol=new_symbol, alternate_symbol=alternate,
        legs=_choice(body, "legs", LEG_TIMINGS), position=_choice(body, "position", POSITION_TIMINGS), posted=now,
    )  # fmt: skip
    _check_size(action)
    return action


def _check_size(action: CorporateAction) -> None:
    """400 when the rates make an absurd action (see ``MAX_CASH_PER_SHARE``)."""
    names = _RATES[action.type]
    ratios = {"/".join(names[:2]): action.shares_per_share}
    if action.type == "unit_split":
        ratios["alternate_rate/old_rate"] = action.rate("alternate_rate") / action.rate("old_rate")
    for fields, ratio in ratios.items():
        if ratio and not MIN_RATIO <= ratio <= MAX_RATIO:
            raise bad_request(f"{fields}: shares per share {ratio:.6g} outside {MIN_RATIO}..{MAX_RATIO}")
    if action.cash_per_share > MAX_CASH_PER_SHARE:
        field = "cash_rate" if "cash_rate" in names else "rate"
        raise bad_request(f"{field}: cash per share {action.cash_per_share:.6g} above {MAX_CASH_PER_SHARE}")


def description(action: CorporateAction) -> str:
    """Return the legs' description text (e.g. ``Split: 2 for 1 AAPL``)."""
    r = {name: money_text(value) for name, value in action.rates.items()}
    texts = {
        "forward_split": f"Split: {r.get('new_rate')} for {r.get('old_rate')} {action.symbol}",
        "reverse_split": f"Reverse split: {r.get('new_rate')} for {r.get('old_rate')} {action.symbol}",
        "unit_split": f"Unit split: {action.symbol} to {action.new_symbol} and {action.alternate_symbol}",
        "stock_dividend": f"Stock dividend: {r.get('rate')} {action.symbol} per share",
        "cash_merger": f"Cash merger: {action.symbol} at {r.get('rate')} per share",
        "stock_merger": f"Merger: {r.get('acquirer_rate')} {action.new_symbol} for {r.get('acquiree_rate')} "
                        f"{action.symbol}",
        "stock_and_cash_merger": f"Merger: {r.get('acquirer_rate')} {action.new_symbol} and {r.get('cash_rate')} "
                                 f"cash for {r.get('acquiree_rate')} {action.symbol}",
        "redemption": f"Redemption: {action.symbol} at {r.get('rate')} per share",
        "spin_off": f"Spin-off: {r.get('new_rate')} {action.new_symbol} for {r.get('source_rate')} {action.symbol}",
        "name_change": f"Name change: {action.symbol} to {action.new_symbol}",
        "worthless_removal": f"Worthless removal: {action.symbol}",
    }  # fmt: skip
    return texts[action.type]


def announcement(action: CorporateAction, action_id: str) -> dict[str, object]:
    """Return the action as the corporate-actions endpoint lists it (alpaca-py's model fields)."""
    common: dict[str, object] = {"id": action_id, "process_date": action.effective.isoformat()}
    rates: dict[str, object] = {name: float(value) for name, value in action.rates.items()}
    cusip = "000000000"
    dated = {"ex_date": action.effective.isoformat(), "payable_date": action.payable.isoformat(),
             "record_date": action.effective.isoformat()}  # fmt: skip
    effective = {"effective_date": action.effective.isoformat(), "payable_date": action.payable.isoformat()}
    if action.type == "forward_split":
        return {**common, "symbol": action.symbol, "cusip": cusip, **rates, **dated}
    if action.type == "reverse_split":
        return {**common, "symbol": action.symbol, "old_cusip": cusip, "new_cusip": cusip, **rates, **dated}
    if action.type == "unit_split":
        return {**common, "old_symbol": action.symbol, "old_cusip": cusip, "new_symbol": action.new_symbol,
                "new_cusip": cusip, "alternate_symbol": action.alternate_symbol, "alternate_cusip": cusip,
                **rates, **effective}  # fmt: skip
    if action.type == "stock_dividend":
        return {**common, "symbol": action.symbol, "cusip": cusip, **rates, **dated}
    if action.type == "spin_off":
        return {**common, "source_symbol": action.symbol, "source_cusip": cusip, "new_symbol": action.new_symbol,
                "new_cusip": cusip, **rates, **dated}  # fmt: skip
    if action.type in {"cash_merger", "stock_merger", "stock_and_cash_merger"}:
        acquirer = {"acquirer_symbol": action.new_symbol, "acquirer_cusip": cusip} if action.new_symbol else {}
        return {**common, **acquirer, "acquiree_symbol": action.symbol, "acquiree_cusip": cusip, **rates,
                **effective}  # fmt: skip
    if action.type == "redemption":
        return {**common, "symbol": action.symbol, "cusip": cusip, **rates, "payable_date": action.payable.isoformat()}
    if action.type == "name_change":
        return {**common, "old_symbol": action.symbol, "old_cusip": cusip, "new_symbol": action.new_symbol,
                "new_cusip": cusip}  # fmt: skip
    return {**common, "symbol": action.symbol, "cusip": cusip}


def nta(
    activity_id: str,
    code: str,
    on_date: date,
    *,
    symbol: str,
    qty: Decimal,
    price: Decimal,
    net_amount: Decimal,
    text: str,
    sub_type: str,
) -> dict[str, object]:
    """Return one corporate-action leg (a non-trade activity with a quantity).

    ``activity_sub_type`` is a free-form string at Alpaca (changelog 2026-11-06 "activity
    types"); the fake says which side of the action the leg is (``shares_out``, ``shares_in``,
    ``cash``); nothing in the mirror reads it.
    """
    return {
        "id": activity_id,
        "activity_type": code,
        "activity_sub_type": sub_type,
        "date": on_date.isoformat(),
        "net_amount": money_text(net_amount),
        "description": text,
        "status": "executed",
        "symbol": symbol,
        "qty": money_text(qty),
        "price": money_text(price),
    }


@dataclass
class Booking:
    """One account's side of an action: its legs, its position change, and how to undo both."""

    legs: list[dict[str, object]]
    positions: dict[str, SimPosition | None]  # symbol -> the position after (None: closed)
    cash: Decimal  # cash the action pays in
    before: dict[str, SimPosition | None] = field(default_factory=dict)  # to undo (cancel)
    legs_listed: bool = False
    position_applied: bool = False


def _qty(qty: Decimal) -> Decimal:
    """Return a leg's quantity as the broker states it: 9 decimals at most (rounded down)."""
    return qty.quantize(PRICE_PLACES, rounding=ROUND_DOWN)


def _whole(qty: Decimal, symbol: str, held: Decimal) -> Decimal:
    """Return the shares a holder keeps of ``qty`` new shares: whole shares stay whole."""
    if held == held.to_integral_value() and "/" not in symbol:
        return qty.to_integral_value(rounding=ROUND_DOWN)
    return qty


_CODES: Final = {"name_change": "NC", "forward_split": "SPLIT", "reverse_split": "SPLIT", "unit_split": "SPLIT",
                 "stock_dividend": "SPLIT", "spin_off": "SPIN", "redemption": "REORG", "worthless_removal": "REORG",
                 "cash_merger": "MA", "stock_merger": "MA", "stock_and_cash_merger": "MA"}  # fmt: skip
_CONVERSIONS: Final = frozenset({"forward_split", "reverse_split", "name_change", "stock_merger",
                                 "stock_and_cash_merger"})  # fmt: skip


class _Builder:
    """One account's booking of one action, leg by leg."""

    def __init__(self, action: CorporateAction, position: SimPosition, existing: Mapping[str, SimPosition],
                 prices: Mapping[str, Decimal], new_id: Callable[[], str]) -> None:  # fmt: skip
        self.action, self.position, self.existing, self.prices, self.new_id = action, position, existing, prices, new_id
        self.code = _CODES[action.type]
        self.text = description(action)
        self.moment = action.leg_moment()
        self.on_date = self.moment.astimezone(NEW_YORK).date()
        self.stamps = iter(range(10))
        self.legs: list[dict[str, object]] = []
        self.after: dict[str, SimPosition | None] = {action.symbol: None}
        self.cash = ZERO
        self.held = position.qty
        self.cost = position.qty * position.avg_entry_price
        self.price = prices.get(action.symbol, position.avg_entry_price)

    def leg(self, code: str, symbol: str, qty: Decimal, price: Decimal, amount: Decimal, side: str) -> None:
        # The legs of one action are stamped a millisecond apart so their ids keep their order.
        # (``date``: the stamp's New York date.)
        stamp = activity_id(self.moment + timedelta(milliseconds=next(self.stamps)), self.new_id())
        self.legs.append(nta(stamp, code, self.on_date, symbol=symbol, qty=qty, price=price.quantize(PRICE_PLACES),
                             net_amount=amount,
                             text=self.text, sub_type=side))  # fmt: skip
        if code != "CIL" and amount:
            self.cash += amount

    def add(self, target: str, qty: Decimal, basis: Decimal) -> None:
        if qty == ZERO:
            return
        mine = self.after.get(target) or (self.existing.get(target) if target != self.action.symbol else None)
        total = qty + (mine.qty if mine is not None else ZERO)
        value = basis + (mine.qty * mine.avg_entry_price if mine is not None else ZERO)
        self.after[target] = SimPosition(target, total, (value / total).quantize(PRICE_PLACES))

    def cash_in_lieu(self, target: str, new_qty: Decimal, kept: Decimal, price: Decimal) -> None:
        if new_qty != kept:
            fraction = new_qty - kept
            self.leg("CIL", target, -fraction, price, fraction * price, "cash")
            self.cash += fraction * price

    def conversion(self) -> None:
        """Splits, name changes, stock mergers (with the cash of a stock-and-cash merger)."""
        action, r = self.action, self.action.shares_per_share
        target = action.new_symbol or action.symbol
        new_qty = _qty(self.held * r)
        kept = _whole(new_qty, target, self.held)
        # the new shares' price: the other symbol's own when it trades, else the old one's ÷ r
        new_price = self.prices[target] if target != action.symbol and target in self.prices else self.price / r
        self.leg(self.code, action.symbol, -self.held, self.price, ZERO, "shares_out")
        self.leg(self.code, target, new_qty, new_price, ZERO, "shares_in")
        if action.type == "stock_and_cash_merger":
            self.leg(self.code, action.symbol, ZERO, ZERO, self.held * action.cash_per_share, "cash")
        self.add(target, kept, self.cost * kept / new_qty)
        self.cash_in_lieu(target, new_qty, kept, new_price)

    def removal(self) -> None:
        """Cash mergers and redemptions (shares out, then the cash), worthless removals (shares out)."""
        action = self.action
        self.leg(self.code, action.symbol, -self.held, ZERO, ZERO, "shares_out")
        if action.type != "worthless_removal":
            self.leg(self.code, action.symbol, ZERO, ZERO, self.held * action.cash_per_share, "cash")

    def unit_split(self, new_symbol: str, alternate: str) -> None:
        action = self.action
        new_qty = _qty(self.held * action.shares_per_share)
        alternate_qty = _qty(self.held * action.rate("alternate_rate") / action.rate("old_rate"))
        new_value = self.prices.get(new_symbol, ZERO) * new_qty
        total = new_value + self.prices.get(alternate, ZERO) * alternate_qty
        share = new_value / total if total else Decimal(1)
        self.leg(self.code, action.symbol, -self.held, self.price, ZERO, "shares_out")
        self.leg(self.code, new_symbol, new_qty, self.prices.get(new_symbol, ZERO), ZERO, "shares_in")
        self.leg(self.code, alternate, alternate_qty, self.prices.get(alternate, ZERO), ZERO, "shares_in")
        self.add(new_symbol, new_qty, self.cost * share)
        self.add(alternate, alternate_qty, self.cost - self.cost * share)

    def distribution(self) -> None:
        """Spin-offs (new shares of another symbol, leg at price 0) and stock dividends."""
        action = self.action
        target = action.new_symbol or action.symbol
        new_qty = _qty(self.held * action.shares_per_share)
        kept = _whole(new_qty, target, self.held)
        self.after[action.symbol] = self.position
        if action.type == "stock_dividend":
            total = self.held + kept
            self.after[action.symbol] = SimPosition(action.symbol, total, (self.cost / total).quantize(PRICE_PLACES))
        else:
            self.add(target, kept, ZERO)
        self.leg(self.code, target, new_qty, ZERO, ZERO, "shares_in")
        self.cash_in_lieu(target, new_qty, kept, self.prices.get(target, ZERO))


def book_action(
    action: CorporateAction,
    position: SimPosition,
    existing: Mapping[str, SimPosition],
    prices: Mapping[str, Decimal],
    new_id: Callable[[], str],
) -> Booking:
    """Return one account's legs and positions after ``action`` on its ``position``.

    ``existing``: the account's positions (a merger or spin-off may add to one it holds);
    ``prices``: the last prices (legs of shares carry the price; a spin-off leg carries 0).
    """
    builder = _Builder(action, position, existing, prices, new_id)
    if action.type in _CONVERSIONS:
        builder.conversion()
    elif action.type in {"cash_merger", "redemption", "worthless_removal"}:
        builder.removal()
    elif action.type == "unit_split" and action.new_symbol and action.alternate_symbol:
        builder.unit_split(action.new_symbol, action.alternate_symbol)
    else:
        builder.distribution()
    return Booking(legs=builder.legs, positions=builder.after, cash=builder.cash)


def list_announcements(
    announced: list[tuple[CorporateAction, dict[str, object]]], params: Mapping[str, str], today: date
) -> dict[str, object]:
    """Return ``GET /v1/corporate-actions``'s body for ``params`` (alpaca-py's
    ``CorporateActionsRequest``: ``symbols``, ``types``, ``ids``, ``start``/``end`` inclusive on
    the ex-date or effective date, default today): ``{"corporate_actions": {group: [...]},
    "next_page_token": null}``. The fake never pages (it holds few actions)."""

    def items(key: str) -> set[str] | None:
        text = params.get(key)
        return {item.strip() for item in text.split(",") if item.strip()} if text else None

    symbols, types, ids = items("symbols"), items("types"), items("ids")
    unknown = (types or set()) - set(ACTION_TYPES)
    if unknown:
        raise bad_request(f"types: unknown type {sorted(unknown)[0]!r}")
    try:
        start = date.fromisoformat(params["start"]) if params.get("start") else today
        end = date.fromisoformat(params["end"]) if params.get("end") else today
    except ValueError as e:
        raise bad_request("start/end: expected YYYY-MM-DD") from e
    groups: dict[str, list[dict[str, object]]] = {}
    for action, body in announced:
        if ids is not None:
            if body["id"] not in ids:
                continue
        elif (
            (symbols is not None and not symbols & set(action.symbols()))
            or (types is not None and action.type not in types)
            or not start <= action.effective <= end
        ):
            continue
        groups.setdefault(GROUPS[action.type], []).append(body)
    return {"corporate_actions": groups, "next_page_token": None}
