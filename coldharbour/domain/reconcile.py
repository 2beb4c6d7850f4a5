"""Reconciliation of a broker positions snapshot against the ledger (docs/spec.md §3 invariant).

After a snapshot, for every symbol the signed sum of open lot quantities must equal the
broker's position. When it does not, and history cannot explain it (the caller applies every
fill and order it has first), the difference is booked as **synthetic fills** whose order id is
``recon:<symbol>:<ts>``, so both the lots and the broker-FIFO queue stay consistent:

* the position must grow → a reconciliation lot ``recon:<symbol>:<ts>`` at the broker's WAC;
* the position must shrink → a reconciliation exit reducing the lots FIFO, at the broker's
  current price, else the caller's mark, else the lots' average (zero P&L);
* the broker holds the other side → both: the exit closes every lot, then a lot opens.

A symbol the broker no longer holds therefore loses its rows (docs/defects.md D41). The broker's WAC per symbol
(``avg_px_symbol``) is returned as updates and removals against the caller's current map.

The caller must pass a *successful* snapshot only: an empty list means "flat everywhere" (D42).
The synthetic fills are part of the history from then on: the caller stores them in a table of
their own (never among the broker's raw activities, which replays read as broker history) and
rebuilds from both.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal
from typing import Final

import msgspec

from coldharbour.domain.ledger import Ledger, LedgerDelta, plan_fills
from coldharbour.domain.money import ZERO
from coldharbour.domain.orders import OrderView
from coldharbour.domain.types import BrokerPosition, Fill, side_sign


class Correction(msgspec.Struct, frozen=True, kw_only=True):
    """One symbol whose lots disagreed with the broker, and the synthetic fills booked."""

    symbol: str
    ledger_qty: Decimal
    broker_qty: Decimal
    fills: tuple[Fill, ...]


class Reconciliation(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of ``reconcile``: corrections, their ledger delta, and WAC changes."""

    corrections: tuple[Correction, ...]
    delta: LedgerDelta
    wac_updates: tuple[tuple[str, Decimal], ...]
    wac_removals: tuple[str, ...]

    @property
    def is_clean(self) -> bool:
        """Return True when the ledger already matched the broker (nothing to book)."""
        return not self.corrections


RECON_PREFIX: Final = "recon:"


def recon_id(symbol: str, ts: int) -> str:
    """Return the id of a reconciliation lot/exit: ``recon:<symbol>:<ts>`` (ts in UTC ns)."""
    return f"{RECON_PREFIX}{symbol}:{ts}"


def is_recon_id(order_id: str) -> bool:
    """Return True for the order id of a reconciliation fill (ours, never the broker's)."""
    return order_id.startswith(RECON_PREFIX)


def _exit_price(ledger: Ledger, symbol: str, position: BrokerPosition | None,
                marks: Mapping[str, Decimal]) -> Decimal:
    if position is not None and position.current_price is not None and position.current_price > 0:
        return position.current_price
    mark = marks.get(symbol)
    if mark is not None and mark > 0:
        return mark
    lots = ledger.open_lots(symbol)
    total = sum((lot.qty for lot in lots), ZERO)
    return sum((lot.qty * lot.avg_fill for lot in lots), ZERO) / total


def _fill(symbol: str, order_id: str, qty: Decimal, price: Decimal, ts: int,
          suffix: str = "") -> Fill:
    return Fill(order_id=order_id, execution_id=order_id + suffix, symbol=symbol,
                side="buy" if qty > 0 else "sell", qty=abs(qty), price=price, ts=ts)


def correction_fills(ledger: Ledger, symbol: str, position: BrokerPosition | None, now: int,
                     marks: Mapping[str, Decimal]) -> tuple[Fill, ...]:
    """Return the synthetic fills that bring ``symbol``'s lots to the broker's position."""
    held = ledger.net(symbol)
    target = position.qty if position is not None else ZERO
    if held == target:
        return ()
    state = ledger.symbols.get(symbol)
    # Book after every applied fill of the symbol, so the correction never replays history.
    last_ts = state.last_key[0] if state is not None and state.last_key is not None else now
    ts = max(now, last_ts + 1)
    order_id = recon_id(symbol, now)
    same_side = target != 0 and (target > 0) == (held > 0)
    if position is not None and (held == 0 or (same_side and abs(target) > abs(held))):
        return (_fill(symbol, order_id, target - held, position.avg_entry_price, ts),)
    exit_px = _exit_price(ledger, symbol, position, marks)
    if position is None or target == 0 or same_side:
        return (_fill(symbol, order_id, target - held, exit_px, ts),)
    # The broker holds the other side: close every lot, then open the broker's position.
    return (_fill(symbol, order_id, -held, exit_px, ts),
            _fill(symbol, order_id, target, position.avg_entry_price, ts, ":open"))


def reconcile(ledger: Ledger, positions: Iterable[BrokerPosition], book: OrderView, *,
              now: int, wac: Mapping[str, Decimal], marks: Mapping[str, Decimal] | None = None,
              skip: Collection[str] = ()) -> Reconciliation:
    """Return the corrections that make the ledger match the broker's ``positions``.

    Parameters
    ----------
    positions: the whole successful snapshot (signed qty; a missing symbol is flat).
    now: the snapshot time, UTC ns (names the reconciliation ids).
    wac: the caller's current ``avg_px_symbol`` per symbol, to report only changes.
    marks: last prices, for the exit price when the broker gives no current price.
    skip: symbols not to correct now (e.g. a rebuild is pending for them).
    """
    by_symbol = {p.symbol: p for p in positions}
    symbols = sorted((set(by_symbol) | set(ledger.held_symbols())) - set(skip))
    corrections: list[Correction] = []
    for symbol in symbols:
        position = by_symbol.get(symbol)
        fills = correction_fills(ledger, symbol, position, now, marks or {})
        if fills:
            corrections.append(Correction(
                symbol=symbol, ledger_qty=ledger.net(symbol),
                broker_qty=position.qty if position is not None else ZERO, fills=fills))
    delta = plan_fills(ledger, [f for c in corrections for f in c.fills], book)
    updates = tuple((s, p.avg_entry_price) for s, p in sorted(by_symbol.items())
                    if p.qty != 0 and wac.get(s) != p.avg_entry_price)
    removals = tuple(sorted(s for s in wac if s not in by_symbol or by_symbol[s].qty == 0))
    return Reconciliation(corrections=tuple(corrections), delta=delta, wac_updates=updates,
                          wac_removals=removals)


def lot_signed_qty(ledger: Ledger, symbol: str) -> Decimal:
    """Return Σ s·qty over the open lots of ``symbol`` (equals ``ledger.net`` when sound)."""
    return sum((side_sign(lot.side) * lot.qty for lot in ledger.open_lots(symbol)), ZERO)
