"""Corporate actions in the fake broker: the ``POST /sim/corporate-actions`` body and its activities.

Bodies (one JSON object; ratios are new shares per old share):
``{"type": "split", "symbol": S, "ratio": "2"}`` ("0.1" is a 1:10 reverse split),
``{"type": "symbol_change", "symbol": S, "new_symbol": T}``,
``{"type": "cash_merger", "symbol": S, "cash_per_share": "25"}``,
``{"type": "stock_merger", "symbol": S, "new_symbol": T, "ratio": "0.5"}``,
``{"type": "spinoff", "symbol": S, "new_symbol": T, "ratio": "0.2", "price": "15"}`` (``price``:
the new shares' per-share basis, optional; without it they carry zero basis).

The activities follow the non-trade activity object of Alpaca's account-activities page
(https://docs.alpaca.markets/us/docs/account-activities.md: ``id``, ``activity_type``, ``date``,
``net_amount``, ``description``, ``status``, ``symbol``, ``qty``, ``per_share_amount``) with the
quantity leg of each side: a split is the SPLIT pair (old shares out at the old price, new shares
in at the new price), a symbol change the SC pair, a stock merger the MA pair, a cash merger one
MA paying cash, a spin-off one SPIN adding the new shares, and a fraction a whole-share holder
cannot keep is paid as CIL (cash in lieu) at the new price.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from coldharbour.domain.money import ZERO
from coldharbour.sim.wire import CODE_BAD_REQUEST, SimError, money_text

ACTION_TYPES: Final = frozenset({"split", "symbol_change", "cash_merger", "stock_merger", "spinoff"})
_NEEDS_NEW_SYMBOL: Final = frozenset({"symbol_change", "stock_merger", "spinoff"})
_NEEDS_RATIO: Final = frozenset({"split", "stock_merger", "spinoff"})


@dataclass(frozen=True)
class CorporateAction:
    """A validated corporate action."""

    type: str
    symbol: str
    new_symbol: str | None = None
    ratio: Decimal = Decimal(1)
    cash_per_share: Decimal = ZERO
    # A spin-off's per-share cost basis for the new shares, when stated ("price"); else zero.
    price: Decimal = ZERO


def bad_request(message: str) -> SimError:
    """Return a 400 with a one-line reason."""
    return SimError(400, CODE_BAD_REQUEST, message)


def _symbol(body: Mapping[str, object], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 12:
        raise bad_request(f"{key}: expected a symbol, found {value!r}")
    return value.strip().upper()


def _positive(body: Mapping[str, object], key: str) -> Decimal:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad_request(f"{key}: expected a positive number, found {value!r}")
    try:
        number = Decimal(str(value))
    except ArithmeticError as e:
        raise bad_request(f"{key}: expected a positive number, found {value!r}") from e
    if not number.is_finite() or number <= ZERO:
        raise bad_request(f"{key}: expected a positive number, found {value!r}")
    return number


def parse_corporate_action(body: object) -> CorporateAction:
    """Return the action of a ``POST /sim/corporate-actions`` body; 400 naming what is wrong."""
    if not isinstance(body, Mapping):
        raise bad_request("expected a JSON object")
    kind = body.get("type")
    if kind not in ACTION_TYPES:
        raise bad_request(f"type: expected one of {', '.join(sorted(ACTION_TYPES))}, found {kind!r}")
    assert isinstance(kind, str)
    symbol = _symbol(body, "symbol")
    new_symbol = _symbol(body, "new_symbol") if kind in _NEEDS_NEW_SYMBOL else None
    if new_symbol == symbol:
        raise bad_request("new_symbol: must differ from symbol")
    ratio = _positive(body, "ratio") if kind in _NEEDS_RATIO else Decimal(1)
    if kind == "split" and ratio == 1:
        raise bad_request("ratio: a split needs a ratio other than 1")
    cash = _positive(body, "cash_per_share") if kind == "cash_merger" else ZERO
    price = _positive(body, "price") if kind == "spinoff" and body.get("price") is not None else ZERO
    return CorporateAction(
        type=kind, symbol=symbol, new_symbol=new_symbol, ratio=ratio, cash_per_share=cash, price=price
    )


def description(action: CorporateAction) -> str:
    """Return the activity description Alpaca-style (e.g. ``Split: 2 for 1``)."""
    if action.type == "split":
        return f"Split: {money_text(action.ratio)} for 1 {action.symbol}"
    if action.type == "symbol_change":
        return f"Symbol change: {action.symbol} to {action.new_symbol}"
    if action.type == "cash_merger":
        return f"Cash merger: {action.symbol} at {money_text(action.cash_per_share)} per share"
    if action.type == "stock_merger":
        return f"Stock merger: {money_text(action.ratio)} {action.new_symbol} per {action.symbol}"
    return f"Spin-off: {money_text(action.ratio)} {action.new_symbol} per {action.symbol}"


def nta(
    activity_id: str,
    code: str,
    now_date: str,
    *,
    symbol: str,
    qty: Decimal,
    price: Decimal,
    net_amount: Decimal,
    text: str,
) -> dict[str, object]:
    """Return one non-trade activity object with a quantity leg."""
    return {
        "id": activity_id,
        "activity_type": code,
        "date": now_date,
        "net_amount": money_text(net_amount),
        "description": text,
        "status": "executed",
        "symbol": symbol,
        "qty": money_text(qty),
        "price": money_text(price),
        "per_share_amount": money_text(price),
    }

