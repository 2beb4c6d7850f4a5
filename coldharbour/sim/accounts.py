"""Simulated brokerage accounts: cash, signed positions, marks, and their Alpaca JSON.

Cash moves only through executions (``apply_fill``) and cash activities; equity is cash plus
the signed market value of the positions marked at the last known price (the average entry
price when the symbol has no price yet), so a fill at the mark price never changes equity.
Buying power follows Reg-T with multiplier 2: ``2 * equity - gross market value``.

Pure: no I/O, no clock (every timestamp is an argument).
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final
from zoneinfo import ZoneInfo

from coldharbour.domain.money import ZERO
from coldharbour.sim.assets import asset_class, is_crypto, position_symbol
from coldharbour.sim.orders import asset_id_for
from coldharbour.sim.wire import CODE_INVALID_FIELD, money_text, timestamp_text, unprocessable

NEW_YORK: Final = ZoneInfo("America/New_York")
MARGIN_MULTIPLIER: Final = Decimal(2)
MAINTENANCE_RATE: Final = Decimal("0.3")
DEFAULT_CASH: Final = Decimal(100_000)
RATIO_PLACES: Final = Decimal("0.000001")
PRICE_PLACES: Final = Decimal("0.000000001")


class ActivityLog(list[dict[str, object]]):
    """An account's activities sorted by id, with an index of the ids.

    Inserting used to rebuild the whole id list per fill (issue #15: quadratic in history);
    the sorted ``ids`` list is kept beside the items instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    def find(self, activity_id: str) -> dict[str, object] | None:
        """Return the activity with ``activity_id``, or None."""
        position = bisect.bisect_left(self.ids, activity_id)
        if position < len(self.ids) and self.ids[position] == activity_id:
            return self[position]
        return None

    def replace(self, activity: dict[str, object]) -> dict[str, object]:
        """Put ``activity`` in place of the one with its id; return the one replaced."""
        activity_id = str(activity["id"])
        position = bisect.bisect_left(self.ids, activity_id)
        if position == len(self.ids) or self.ids[position] != activity_id:
            raise unprocessable(f"activity id not found: {activity_id!r}", CODE_INVALID_FIELD)
        old = self[position]
        self[position] = activity
        return old


@dataclass
class SimPosition:
    """A signed position (negative quantity = short) with its average entry price."""

    symbol: str
    qty: Decimal
    avg_entry_price: Decimal


@dataclass
class SimAccount:
    """One account: credentials, cash, positions, activities and an equity trail."""

    name: str
    key_id: str
    secret_key: str
    id: str
    account_number: str
    cash: Decimal
    created_at: datetime
    initial_equity: Decimal
    positions: dict[str, SimPosition] = field(default_factory=dict)
    # Wire-shaped activity objects, kept sorted by id (ids start with a sortable time stamp).
    activities: ActivityLog = field(default_factory=lambda: ActivityLog())
    # (minute, equity) pairs, one per minute with activity, oldest first.
    equity_samples: list[tuple[datetime, Decimal]] = field(default_factory=list)
    # Each position's value at the marks of the last ``record_equity`` (refreshed per symbol).
    valued: dict[str, Decimal] = field(default_factory=dict)


def new_account(
    name: str, key_id: str, secret_key: str, number: int, account_uuid: uuid.UUID, now: datetime
) -> SimAccount:
    """Return a fresh account with the default $100,000 cash."""
    return SimAccount(
        name=name,
        key_id=key_id,
        secret_key=secret_key,
        id=str(account_uuid),
        account_number=f"PA3SIM{number:06d}",
        cash=DEFAULT_CASH,
        created_at=now,
        initial_equity=DEFAULT_CASH,
    )


def apply_fill(account: SimAccount, symbol: str, signed_qty: Decimal, price: Decimal) -> Decimal:
    """Book an execution (positive quantity buys) and return the signed position after it."""
    account.cash -= signed_qty * price
    position = account.positions.get(symbol)
    old_qty = position.qty if position is not None else ZERO
    new_qty = old_qty + signed_qty
    if new_qty == ZERO:
        account.positions.pop(symbol, None)
        return new_qty
    if position is None or old_qty * new_qty < ZERO:
        # Opened, or crossed through zero: the remainder was bought/sold at this price.
        account.positions[symbol] = SimPosition(symbol, new_qty, price)
    elif abs(new_qty) > abs(old_qty):
        total_cost = old_qty * position.avg_entry_price + signed_qty * price
        position.avg_entry_price = (total_cost / new_qty).quantize(PRICE_PLACES)
        position.qty = new_qty
    else:
        position.qty = new_qty
    return new_qty


def mark_price(position: SimPosition, marks: Mapping[str, Decimal]) -> Decimal:
    """Return the price a position is valued at: the last price, else its entry price."""
    return marks.get(position.symbol, position.avg_entry_price)


def market_values(account: SimAccount, marks: Mapping[str, Decimal]) -> tuple[Decimal, Decimal]:
    """Return (long market value, short market value); the short value is <= 0."""
    long_value = ZERO
    short_value = ZERO
    for position in account.positions.values():
        value = position.qty * mark_price(position, marks)
        if value > ZERO:
            long_value += value
        else:
            short_value += value
    return long_value, short_value


def equity(account: SimAccount, marks: Mapping[str, Decimal]) -> Decimal:
    """Return cash plus the signed market value of every position."""
    long_value, short_value = market_values(account, marks)
    return account.cash + long_value + short_value


def buying_power(account: SimAccount, marks: Mapping[str, Decimal]) -> Decimal:
    """Return Reg-T buying power: multiplier times equity less the gross position value."""
    long_value, short_value = market_values(account, marks)
    gross = long_value - short_value
    return max(ZERO, MARGIN_MULTIPLIER * equity(account, marks) - gross)


def record_equity(account: SimAccount, marks: Mapping[str, Decimal], now: datetime,
                  symbols: Iterable[str] | None = None) -> None:
    """Keep one equity sample per minute (the latest value of that minute).

    ``symbols``: the only positions whose quantity or mark changed since the last call (a fill,
    a price move); only their values are computed again. Without it every position is. Equal to
    ``equity`` (a test holds them together); a price move costs O(moved symbols), not O(positions).
    """
    minute = now.replace(second=0, microsecond=0)
    valued = account.valued
    if symbols is not None:
        for symbol in symbols:
            position = account.positions.get(symbol)
            if position is None:
                valued.pop(symbol, None)
            else:
                valued[symbol] = position.qty * mark_price(position, marks)
    if symbols is None or len(valued) != len(account.positions):
        account.valued = valued = {s: p.qty * mark_price(p, marks) for s, p in account.positions.items()}
    value = account.cash + sum(valued.values(), ZERO)
    if account.equity_samples and account.equity_samples[-1][0] == minute:
        account.equity_samples[-1] = (minute, value)
    else:
        account.equity_samples.append((minute, value))


def last_equity(account: SimAccount, now: datetime) -> Decimal:
    """Return the equity at the end of the previous New York day (start value if none)."""
    today = now.astimezone(NEW_YORK).date()
    result = account.initial_equity
    for minute, value in account.equity_samples:
        if minute.astimezone(NEW_YORK).date() >= today:
            break
        result = value
    return result


def account_to_json(account: SimAccount, marks: Mapping[str, Decimal], now: datetime) -> dict[str, object]:
    """Return the ``GET /v2/account`` object, every number as a string."""
    long_value, short_value = market_values(account, marks)
    total = account.cash + long_value + short_value
    gross = long_value - short_value
    power = buying_power(account, marks)
    return {
        "id": account.id,
        "account_number": account.account_number,
        "status": "ACTIVE",
        "crypto_status": "ACTIVE",
        "currency": "USD",
        "cash": money_text(account.cash),
        "equity": money_text(total),
        "last_equity": money_text(last_equity(account, now)),
        "portfolio_value": money_text(total),
        "buying_power": money_text(power),
        "regt_buying_power": money_text(power),
        "daytrading_buying_power": money_text(power),
        "non_marginable_buying_power": money_text(max(ZERO, total - gross / MARGIN_MULTIPLIER)),
        "effective_buying_power": money_text(power),
        "long_market_value": money_text(long_value),
        "short_market_value": money_text(short_value),
        "position_market_value": money_text(gross),
        "initial_margin": money_text(gross / MARGIN_MULTIPLIER),
        "maintenance_margin": money_text(gross * MAINTENANCE_RATE),
        "last_maintenance_margin": "0",
        "sma": money_text(total),
        "multiplier": money_text(MARGIN_MULTIPLIER),
        "shorting_enabled": True,
        "pattern_day_trader": False,
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "trade_suspended_by_user": False,
        "accrued_fees": "0",
        "pending_transfer_in": "0",
        "created_at": timestamp_text(account.created_at),
        "balance_asof": now.astimezone(NEW_YORK).date().isoformat(),
        "options_trading_level": 0,
        "options_approved_level": 0,
        "options_buying_power": money_text(power),
    }


def _ratio(numerator: Decimal, denominator: Decimal) -> str | None:
    if denominator == ZERO:
        return "0"
    return money_text((numerator / denominator).quantize(RATIO_PLACES))


def position_to_json(
    position: SimPosition, marks: Mapping[str, Decimal], held_qty: Decimal, lastday_price: Decimal
) -> dict[str, object]:
    """Return one ``GET /v2/positions`` entry; ``held_qty`` is locked by open exit orders."""
    price = mark_price(position, marks)
    cost_basis = position.qty * position.avg_entry_price
    value = position.qty * price
    unrealized = value - cost_basis
    intraday = value - position.qty * lastday_price
    return {
        "asset_id": asset_id_for(position.symbol),
        "symbol": position_symbol(position.symbol),
        "exchange": "CRYPTO" if is_crypto(position.symbol) else "NASDAQ",
        "asset_class": asset_class(position.symbol),
        "asset_marginable": not is_crypto(position.symbol),
        "qty": money_text(position.qty),
        "qty_available": money_text(position.qty - held_qty if position.qty > ZERO else position.qty + held_qty),
        "side": "long" if position.qty > ZERO else "short",
        "avg_entry_price": money_text(position.avg_entry_price),
        "cost_basis": money_text(cost_basis),
        "market_value": money_text(value),
        "current_price": money_text(price),
        "lastday_price": money_text(lastday_price),
        "change_today": _ratio(price - lastday_price, lastday_price),
        "unrealized_pl": money_text(unrealized),
        "unrealized_plpc": _ratio(unrealized, abs(cost_basis)),
        "unrealized_intraday_pl": money_text(intraday),
        "unrealized_intraday_plpc": _ratio(intraday, abs(position.qty * lastday_price)),
    }
