"""Corporate actions and busts as ledger events (SPEC §8): a rewrite of the fill history.

A corporate action changes what a held share *is*, never what was paid for it. It is booked by
rewriting the fills of the symbol's open cycle (flat to flat) that precede it, then replaying:

- **split / reverse split** (``ratio`` r = new shares per old): those fills get qty·r and
  price ÷ r. Replayed, every open lot has qty·r and entry price ÷ r, the same cost basis and
  entry time, the FIFO queue is scaled the same way, no slice appears and no P&L is realized
  (a slice of an earlier partial exit in the cycle keeps its P&L: qty·r·(exit − entry)/r).
- **symbol change / stock merger**: the same, and the fills move to ``new_symbol``: the lots
  move with their basis.
- **cash merger**: a synthetic exit of the whole position at ``cash_per_share`` (``CORPORATE``).
- **cash in lieu** (``cash_in_lieu_qty`` on a split or merger): a synthetic exit of that
  fraction of the new shares at ``price`` (``CORPORATE``).
- **spin-off**: a synthetic entry of |position|·r shares of ``new_symbol`` at ``price`` (the
  per-share basis the activity states). Without a stated basis the lot cannot be booked (a
  zero-basis lot has no return): ``spinoff_without_basis`` tells the caller to log it and let
  reconciliation book it (flagged for ``chmgr doctor``).

A **bust** (a FILL activity later ``canceled``) is the removal of that fill from the history.

Synthetic fills have order ids ``corporate:<action id>`` and keys ``corporate:<action id>:<leg>``
so replaying an action twice changes nothing. Applying the actions to the history in time
order (``adjusted_history``) and replaying gives the ledger; ``ledger.rebuild(..., actions=)``
does exactly that, and ``ledger.plan_symbols_rebuild`` books one new action (or bust) on a
live ledger with the same result.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Final, Literal

import msgspec

from coldharbour.domain.money import ZERO
from coldharbour.domain.types import Fill, direction

ActionType = Literal["split", "symbol_change", "stock_merger", "cash_merger", "spinoff"]
CORPORATE_PREFIX: Final = "corporate:"
_RENAMES: Final = frozenset({"symbol_change", "stock_merger"})
_SCALES: Final = frozenset({"split", "symbol_change", "stock_merger"})
_replace: Final = msgspec.structs.replace


class CorporateAction(msgspec.Struct, frozen=True, kw_only=True):
    """One corporate action on ``symbol`` effective at ``ts`` (UTC ns).

    ``ratio``: new shares per old (split, stock merger, spin-off); ``new_symbol``: the symbol
    the shares become (symbol change, stock merger) or the spun-off symbol; ``cash_per_share``:
    a cash merger's price; ``price``: a spin-off's per-share basis, or the cash-in-lieu price;
    ``cash_in_lieu_qty``: the fraction of new shares paid in cash. ``id`` is unique per action
    (e.g. the broker activity id of its first leg).
    """

    id: str
    type: ActionType
    symbol: str
    ts: int
    ratio: Decimal = Decimal(1)
    new_symbol: str | None = None
    cash_per_share: Decimal | None = None
    price: Decimal | None = None
    cash_in_lieu_qty: Decimal = ZERO

    @property
    def symbols(self) -> tuple[str, ...]:
        """Return the symbols whose ledger the action changes."""
        return (self.symbol,) if self.new_symbol is None else (self.symbol, self.new_symbol)


class ActionProblem(msgspec.Struct, frozen=True, kw_only=True):
    """An action that could not be booked in full, and why (the caller counts and logs it)."""

    id: str
    reason: str


def is_corporate(fill: Fill) -> bool:
    """Return True for a synthetic fill booked by a corporate action."""
    return fill.order_id.startswith(CORPORATE_PREFIX)


def check_action(action: CorporateAction) -> ActionProblem | None:
    """Return what makes ``action`` unusable, or None."""
    if not action.ratio.is_finite() or action.ratio <= 0:
        return ActionProblem(id=action.id, reason=f"ratio must be > 0, found {action.ratio}")
    if action.type in _RENAMES | {"spinoff"} and not action.new_symbol:
        return ActionProblem(id=action.id, reason=f"{action.type}: new_symbol missing")
    if action.type == "cash_merger" and not (action.cash_per_share is not None and action.cash_per_share > 0):
        return ActionProblem(id=action.id, reason="cash_merger: cash_per_share must be > 0")
    if action.cash_in_lieu_qty < 0:
        return ActionProblem(id=action.id, reason="cash_in_lieu_qty must be >= 0")
    if action.cash_in_lieu_qty and not (action.price is not None and action.price > 0):
        return ActionProblem(id=action.id, reason="cash in lieu needs a price > 0")
    if action.type == "spinoff" and not (action.price is not None and action.price > 0):
        return ActionProblem(id=action.id, reason="spinoff_without_basis: no per-share basis stated")
    return None


def _sorted(fills: Iterable[Fill]) -> list[Fill]:
    unique: dict[str, Fill] = {}
    for fill in sorted(fills, key=lambda f: f.sort_key):
        unique.setdefault(fill.key, fill)
    return list(unique.values())


def _open_cycle(history: Sequence[Fill], symbol: str, ts: int) -> tuple[list[int], Decimal]:
    """Return the indexes of ``symbol``'s open-cycle fills before ``ts`` and the position then."""
    cycle: list[int] = []
    net = ZERO
    for index, fill in enumerate(history):
        if fill.symbol != symbol or fill.ts >= ts:
            continue
        net += direction(fill.side) * fill.qty
        cycle.append(index)
        if net == 0:
            cycle = []
    return cycle, net


def _synthetic(action: CorporateAction, leg: str, symbol: str, side: str, qty: Decimal, price: Decimal) -> Fill:
    return Fill(
        order_id=f"{CORPORATE_PREFIX}{action.id}", symbol=symbol, side=side,  # type: ignore[arg-type]
        qty=qty, price=price, ts=action.ts, execution_id=f"{CORPORATE_PREFIX}{action.id}:{leg}",
    )  # fmt: skip


def apply_action(history: list[Fill], action: CorporateAction) -> tuple[list[Fill], ActionProblem | None]:
    """Return ``history`` (sorted, one fill per key) with ``action`` applied, and any problem."""
    problem = check_action(action)
    if problem is not None and not problem.reason.startswith("spinoff_without_basis"):
        return history, problem
    cycle, net = _open_cycle(history, action.symbol, action.ts)
    if net == 0:
        return history, None
    out = list(history)
    exit_side = "sell" if net > 0 else "buy"
    if action.type in _SCALES:
        target = action.new_symbol if action.type in _RENAMES and action.new_symbol else action.symbol
        for index in cycle:
            fill = out[index]
            out[index] = _replace(fill, symbol=target, qty=fill.qty * action.ratio, price=fill.price / action.ratio)
        if action.cash_in_lieu_qty and action.price is not None:
            out.append(_synthetic(action, "cil", target, exit_side, action.cash_in_lieu_qty, action.price))
    elif action.type == "cash_merger" and action.cash_per_share is not None:
        out.append(_synthetic(action, "cash", action.symbol, exit_side, abs(net), action.cash_per_share))
    elif action.type == "spinoff":
        if problem is not None or action.price is None or action.new_symbol is None:
            return history, problem
        side = "buy" if net > 0 else "sell_short"
        out.append(_synthetic(action, "spin", action.new_symbol, side, abs(net) * action.ratio, action.price))
    return _sorted(out), None


def adjusted_history(
    fills: Iterable[Fill], actions: Iterable[CorporateAction]
) -> tuple[list[Fill], list[ActionProblem]]:
    """Return the fill history with every action applied in time order, and the problems."""
    history = _sorted(fills)
    problems: list[ActionProblem] = []
    for action in sorted(actions, key=lambda a: (a.ts, a.id)):
        history, problem = apply_action(history, action)
        if problem is not None:
            problems.append(problem)
    return history, problems


def remove_busted(fills: Iterable[Fill], busted_keys: Iterable[str]) -> list[Fill]:
    """Return ``fills`` without the executions the broker canceled (busts), by fill key."""
    gone = set(busted_keys)
    return [fill for fill in fills if fill.key not in gone]


def needs_history(fill: Fill, actions: Iterable[CorporateAction]) -> bool:
    """Return True when ``fill`` predates an action on its symbol: book it by a rebuild.

    Applied incrementally it would be read in pre-action share terms; the caller instead runs
    ``plan_symbols_rebuild`` for the action's symbols with the adjusted history.
    """
    return any(fill.ts < a.ts and fill.symbol in a.symbols for a in actions)
