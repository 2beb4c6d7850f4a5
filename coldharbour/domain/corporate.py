"""Corporate actions and busts as ledger events (docs/spec.md §8): a rewrite of the fill history.

A corporate action changes what a held share *is*, never what was paid for it. It is booked by
rewriting the fills of the symbol's open cycle (flat to flat) that precede it, then replaying:

- **split / reverse split** (``ratio`` r = new shares per old): those fills get qty·r and
  price ÷ r. Replayed, every open lot has qty·r and entry price ÷ r, the same cost basis and
  entry time, the FIFO queue is scaled the same way, no slice appears and no P&L is realized
  (a slice of an earlier partial exit in the cycle keeps its P&L: qty·r·(exit − entry)/r).
- **symbol change / stock merger**: the same, and the fills move to ``new_symbol``: the lots
  move with their basis.
- **cash merger**: a synthetic exit of the whole position at ``cash_per_share`` (``CORPORATE``).
- **removal** (a redemption, or a worthless removal at 0): the same exit at ``cash_per_share`` ≥ 0.
- **stock-and-cash merger**: the position closes at the deal's value per share (the cash plus
  ``ratio`` acquirer shares at the price the broker states, ``CORPORATE``), and a lot of
  |position|·ratio acquirer shares opens at that price (then cash in lieu of a fraction).
- **unit split**: the units' fills become ``new_symbol`` fills (qty·ratio, ``basis_share`` of
  their cost) and ``alternate_symbol`` opens |position|·``alternate_ratio`` at the rest of the
  basis: no P&L; held when the units were partly sold in the cycle (their basis is not one sum).
- **stock dividend** (``qty`` new shares of the same symbol, no cost): the open cycle's fills
  are scaled like a split by r = (position + qty) / position: same basis, more shares, no P&L
  (then cash in lieu of a fraction).
- **coin fee** (a crypto fee charged in the coin received: CFEE with ``qty``, ``net_amount`` 0):
  ``qty`` coins leave the newest entry fill before it (its price rises so its cost stays): the
  lot holds what the broker holds, its basis is unchanged, no slice appears.
- **cash in lieu** (``cash_in_lieu_qty`` on a split or merger): a synthetic exit of that
  fraction of the new shares at ``price`` (``CORPORATE``).
- **spin-off**: a synthetic entry of |position|·r shares of ``new_symbol`` at ``price`` (the
  per-share basis the activity states). Real legs state no basis (price 0): once the parent is
  known and its share of the basis chosen (``allocate_spinoff``: by default the ex-date market
  values, ``spinoff_parent_share``), the parent's open-cycle fills keep ``basis_share`` of their
  cost (price·share) and the new shares open at the rest: the two bases add up to the parent's
  before, no slice appears. Held when the parent was partly closed in its cycle (its basis is
  not one sum). Without either the lot cannot be booked (a zero-basis lot has no return):
  ``spinoff_without_basis`` tells the caller to log it and let reconciliation book it.

A **bust** (a FILL activity later ``canceled``) is the removal of that fill from the history.

Synthetic fills have order ids ``corporate:<action id>`` and keys ``corporate:<action id>:<leg>``
so replaying an action twice changes nothing. Applying the actions to the history in time
order (``adjusted_history``) and replaying gives the ledger; ``ledger.rebuild(..., actions=)``
does exactly that, and ``ledger.plan_symbols_rebuild`` books one new action (or bust) on a
live ledger with the same result.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Final, Literal

import msgspec

from coldharbour.domain.cashflows import activity_id_time
from coldharbour.domain.money import MAX_ABS, ZERO
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.schedule import NEW_YORK
from coldharbour.domain.types import Fill, direction, from_datetime

ActionType = Literal["split", "symbol_change", "stock_merger", "cash_merger", "spinoff", "cash_in_lieu", "removal",
                     "coin_fee", "stock_cash_merger", "unit_split", "stock_dividend"]
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
    # New shares stated by the broker (a spin-off's SPIN leg); None = |position|·ratio.
    qty: Decimal | None = None
    # A unit split's second symbol, its shares per unit, and the share of the units' basis that
    # goes to ``new_symbol`` (by the legs' values; the rest goes to ``alternate_symbol``).
    alternate_symbol: str | None = None
    alternate_ratio: Decimal = ZERO
    basis_share: Decimal = Decimal(1)

    @property
    def symbols(self) -> tuple[str, ...]:
        """Return the symbols whose ledger the action changes."""
        return tuple(s for s in (self.symbol, self.new_symbol, self.alternate_symbol) if s)


class ActionProblem(msgspec.Struct, frozen=True, kw_only=True):
    """An action that could not be booked in full, and why (the caller counts and logs it)."""

    id: str
    reason: str


def is_corporate(fill: Fill) -> bool:
    """Return True for a synthetic fill booked by a corporate action."""
    return fill.order_id.startswith(CORPORATE_PREFIX)


# Real ratios run from 1-for-10,000 to 10,000-for-1 at the very most; beyond, a leg is wrong (a
# quantity of 1e-11 against 10 shares), and booking it would scale prices past every cap.
MIN_RATIO: Final = Decimal("1e-5")
MAX_RATIO: Final = Decimal("1e5")


def check_action(action: CorporateAction) -> ActionProblem | None:
    """Return what makes ``action`` unusable, or None (the whole action is then held)."""
    if not action.ratio.is_finite() or action.ratio <= 0:
        return ActionProblem(id=action.id, reason=f"ratio must be > 0, found {action.ratio}")
    if not MIN_RATIO <= action.ratio <= MAX_RATIO:
        return ActionProblem(id=action.id, reason=f"ratio {action.ratio:.6g} outside {MIN_RATIO}..{MAX_RATIO} (held)")
    if any(v is not None and not (v.is_finite() and abs(v) < MAX_ABS) for v in (action.price, action.cash_per_share)):
        return ActionProblem(id=action.id, reason="a price or cash per share past the cap (held)")
    if action.type in _RENAMES | {"spinoff"} and not action.new_symbol:
        return ActionProblem(id=action.id, reason=f"{action.type}: new_symbol missing")
    if action.type == "cash_merger" and not (action.cash_per_share is not None and action.cash_per_share > 0):
        return ActionProblem(id=action.id, reason="cash_merger: cash_per_share must be > 0")
    if action.type == "removal" and not (action.cash_per_share is not None and action.cash_per_share >= 0):
        return ActionProblem(id=action.id, reason="removal: cash_per_share must be >= 0")
    if action.cash_in_lieu_qty < 0:
        return ActionProblem(id=action.id, reason="cash_in_lieu_qty must be >= 0")
    if action.cash_in_lieu_qty and not (action.price is not None and action.price > 0):
        return ActionProblem(id=action.id, reason="cash in lieu needs a price > 0")
    if action.type == "cash_in_lieu" and not action.cash_in_lieu_qty:
        return ActionProblem(id=action.id, reason="cash_in_lieu: cash_in_lieu_qty must be > 0")
    return _check_more(action)


def _check_more(action: CorporateAction) -> ActionProblem | None:
    if action.type == "stock_cash_merger" and not (action.new_symbol and action.price and action.price > 0
                                                    and action.cash_per_share is not None):
        return ActionProblem(id=action.id, reason="stock_cash_merger: the acquirer's price is not stated (held)")
    if action.type == "unit_split" and not (0 < action.basis_share < 1 and action.alternate_ratio > 0):
        return ActionProblem(id=action.id, reason="unit_split: the legs state no values to split the basis (held)")
    if action.type in {"coin_fee", "stock_dividend"} and not (action.qty is not None and action.qty > 0):
        return ActionProblem(id=action.id, reason=f"{action.type}: qty must be > 0")
    if action.type == "spinoff" and not (action.price is not None and action.price > 0) and not is_allocated(action):
        return ActionProblem(id=action.id, reason="spinoff_without_basis: no per-share basis stated")
    return None


def is_allocated(action: CorporateAction) -> bool:
    """Return True for a spin-off whose parent's basis is split by ``basis_share`` (``allocate_spinoff``)."""
    return (action.type == "spinoff" and action.price is None and action.new_symbol is not None
            and action.symbol != action.new_symbol and 0 < action.basis_share < 1)  # fmt: skip


def allocate_spinoff(action: CorporateAction, parent: str, parent_share: Decimal) -> CorporateAction:
    """Return the spin-off ``action`` (as read from its SPIN leg: ``symbol`` the new shares) booked
    on ``parent``, which keeps ``parent_share`` (0 < share < 1) of its basis; the new shares get the rest."""
    child = action.new_symbol or action.symbol
    return _replace(action, symbol=parent, new_symbol=child, price=None, basis_share=parent_share)


class SpinoffBasis(msgspec.Struct, frozen=True, kw_only=True):
    """The allocation of a spin-off's basis, stored so a reload books what was booked live.

    ``action_id``: the spin-off (its SPIN leg's id); ``parent``: the symbol whose basis is
    split; ``parent_share``: the fraction the parent keeps (0 < share < 1); ``source``:
    ``default`` (the announcement's rates and the two prices) or ``override`` (``chmgr
    corporate basis``); ``set_at``: when it was chosen (UTC ns).
    """

    action_id: str
    parent: str
    parent_share: Decimal
    source: Literal["default", "override"]
    set_at: int


def basis_of(action: CorporateAction, source: Literal["default", "override"], set_at: int) -> SpinoffBasis | None:
    """Return the stored form of an allocated spin-off's basis, None for any other action."""
    if not is_allocated(action):
        return None
    return SpinoffBasis(action_id=action.id, parent=action.symbol, parent_share=action.basis_share, source=source,
                        set_at=set_at)  # fmt: skip


def with_bases(actions: Iterable[CorporateAction], bases: Iterable[SpinoffBasis]) -> list[CorporateAction]:
    """Return ``actions`` with each spin-off's stored allocation applied (the actions derived from
    stored legs know only the new shares: a reload must book what was booked live)."""
    chosen = {basis.action_id: basis for basis in bases}
    out: list[CorporateAction] = []
    for action in actions:
        basis = chosen.get(action.id)
        if basis is not None and action.type == "spinoff" and 0 < basis.parent_share < 1:
            action = allocate_spinoff(action, basis.parent, basis.parent_share)
        out.append(action)
    return out


def spinoff_parent_share(
    source_rate: Decimal, new_rate: Decimal, parent_price: Decimal, child_price: Decimal
) -> Decimal | None:
    """Return the share of the basis the parent keeps by the ex-date market values, or None.

    ``new_rate`` new shares per ``source_rate`` parent shares (the announcement's rates); the
    parent keeps source_rate·parent_price / (source_rate·parent_price + new_rate·child_price).
    None when a rate or price is not > 0 (no default: the spin-off is held until one is set).
    """
    values = (source_rate, new_rate, parent_price, child_price)
    if not all(v.is_finite() and v > 0 for v in values):
        return None
    parent_value = source_rate * parent_price
    share = parent_value / (parent_value + new_rate * child_price)
    return share if 0 < share < 1 else None


def _sorted(fills: Iterable[Fill]) -> list[Fill]:
    unique: dict[str, Fill] = {}
    for fill in sorted(fills, key=lambda f: f.sort_key):
        unique.setdefault(fill.key, fill)
    return list(unique.values())


def _open_cycle(history: Sequence[Fill], symbol: str, ts: int) -> tuple[list[int], Decimal]:
    """Return the indexes of ``symbol``'s open-cycle fills before ``ts`` and the position then.

    A fill booked by an earlier action at the same instant counts as before (two actions
    re-timed to the start of one ex-date, applied in ``booking_order``: a removal then a split, say).
    """
    cycle: list[int] = []
    net = ZERO
    for index, fill in enumerate(history):
        if fill.symbol != symbol or fill.ts > ts or (fill.ts == ts and not is_corporate(fill)):
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


def _scale(out: list[Fill], cycle: Sequence[int], action: CorporateAction, exit_side: str) -> None:
    """Split / rename the open cycle's fills in place (qty·r, price ÷ r), then cash in lieu."""
    target = action.new_symbol if action.type in _RENAMES and action.new_symbol else action.symbol
    for index in cycle:
        fill = out[index]
        out[index] = _replace(fill, symbol=target, qty=fill.qty * action.ratio, price=fill.price / action.ratio)
    if action.cash_in_lieu_qty and action.price is not None:
        out.append(_synthetic(action, "cil", target, exit_side, action.cash_in_lieu_qty, action.price))


def _spinoff_entry(action: CorporateAction, net: Decimal, price: Decimal, symbol: str) -> Fill:
    side = "buy" if net > 0 else "sell_short"
    qty = action.qty if action.qty is not None else abs(net) * action.ratio
    return _synthetic(action, "spin", symbol, side, qty, price)


def apply_action(history: list[Fill], action: CorporateAction) -> tuple[list[Fill], ActionProblem | None]:
    """Return ``history`` (sorted, one fill per key) with ``action`` applied, and any problem."""
    problem = check_action(action)
    if problem is not None and not problem.reason.startswith("spinoff_without_basis"):
        return history, problem
    cycle, net = _open_cycle(history, action.symbol, action.ts)
    if action.type == "coin_fee" or is_allocated(action):
        rewrite = _coin_fee if action.type == "coin_fee" else _allocated_spinoff
        return rewrite(history, cycle, net, action)
    if action.type == "spinoff" and action.qty is not None and net == 0:
        net = action.qty  # the broker states the new shares; the parent may be unknown here
    if net == 0:
        return history, None
    out = list(history)
    exit_side = "sell" if net > 0 else "buy"
    if action.type in _SCALES:
        _scale(out, cycle, action, exit_side)
    elif action.type in {"cash_merger", "removal"} and action.cash_per_share is not None:
        out.append(_synthetic(action, "cash", action.symbol, exit_side, abs(net), action.cash_per_share))
    elif action.type == "spinoff":
        if problem is not None or action.price is None or action.new_symbol is None:
            return history, problem
        out.append(_spinoff_entry(action, net, action.price, action.new_symbol))
    elif (found := _exchange(out, cycle, action, net, exit_side)) is not None:
        return history, found
    return _sorted(out), None


def _exchange(
    out: list[Fill], cycle: Sequence[int], action: CorporateAction, net: Decimal, exit_side: str
) -> ActionProblem | None:
    """Book cash in lieu alone, and the actions that exchange the position for other shares (and cash)."""
    if action.type == "stock_dividend" and action.qty is not None:
        if net < 0:
            return ActionProblem(id=action.id, reason=f"stock_dividend: {action.symbol} held short (held)")
        _scale(out, cycle, _replace(action, ratio=(net + action.qty) / net), exit_side)
    elif action.type == "cash_in_lieu" and action.price is not None:
        out.append(_synthetic(action, "cil", action.symbol, exit_side, action.cash_in_lieu_qty, action.price))
    elif action.type == "stock_cash_merger":
        _stock_and_cash(out, action, net, exit_side)
    elif action.type == "unit_split":
        return _unit_split(out, cycle, action, net)
    return None


def _stock_and_cash(out: list[Fill], action: CorporateAction, net: Decimal, exit_side: str) -> None:
    """Close at the deal's value (cash + ratio·acquirer price per share), open the acquirer's lot."""
    price, cash, target = action.price or ZERO, action.cash_per_share or ZERO, action.new_symbol or action.symbol
    out.append(_synthetic(action, "cash", action.symbol, exit_side, abs(net), cash + action.ratio * price))
    out.append(_synthetic(action, "in", target, "buy" if net > 0 else "sell_short", abs(net) * action.ratio, price))
    if action.cash_in_lieu_qty and action.price is not None:
        out.append(_synthetic(action, "cil", target, exit_side, action.cash_in_lieu_qty, action.price))


def _unit_split(out: list[Fill], cycle: Sequence[int], action: CorporateAction, net: Decimal) -> ActionProblem | None:
    entry = "buy" if net > 0 else "sell_short"
    if any(out[i].side != entry for i in cycle) or not action.new_symbol or not action.alternate_symbol:
        return ActionProblem(id=action.id, reason="unit_split: units partly closed before it: basis not one sum (held)")
    cost = sum((out[i].qty * out[i].price for i in cycle), ZERO)
    share, ratio = action.basis_share, action.ratio
    for index in cycle:
        fill = out[index]
        out[index] = _replace(fill, symbol=action.new_symbol, qty=fill.qty * ratio, price=fill.price * share / ratio)
    alternate_qty = abs(net) * action.alternate_ratio
    out.append(_synthetic(action, "alt", action.alternate_symbol, entry, alternate_qty,
                          cost * (1 - share) / alternate_qty))  # fmt: skip
    return None


def _allocated_spinoff(
    history: list[Fill], cycle: Sequence[int], net: Decimal, action: CorporateAction
) -> tuple[list[Fill], ActionProblem | None]:
    """The parent's open-cycle fills keep ``basis_share`` of their cost; the new shares open at the rest."""
    entry = "buy" if net > 0 else "sell_short"
    if net == 0 or any(history[i].side != entry for i in cycle) or action.new_symbol is None:
        reason = "not held then" if net == 0 else "partly closed before it: basis not one sum"
        return history, ActionProblem(id=action.id, reason=f"spinoff: {action.symbol} {reason} (held)")
    qty = action.qty if action.qty is not None else abs(net) * action.ratio
    if not qty > 0:
        return history, ActionProblem(id=action.id, reason=f"spinoff: {qty} new shares (held)")
    cost = sum((history[i].qty * history[i].price for i in cycle), ZERO)
    out = list(history)
    for index in cycle:
        fill = out[index]
        out[index] = _replace(fill, price=fill.price * action.basis_share)
    out.append(_synthetic(action, "spin", action.new_symbol, entry, qty, cost * (1 - action.basis_share) / qty))
    return _sorted(out), None


def _coin_fee(
    history: list[Fill], cycle: Sequence[int], net: Decimal, action: CorporateAction
) -> tuple[list[Fill], ActionProblem | None]:
    """Take a fee paid in the coin out of the newest entry fill before it (FIFO: the last lot to close)."""
    fee = action.qty or ZERO
    entries = [i for i in cycle if history[i].side == "buy" and history[i].qty > fee]
    if net <= 0 or fee >= net or not entries:
        return history, ActionProblem(id=action.id, reason=f"coin_fee: {fee} {action.symbol} not held then "
                                                           f"(position {net})")  # fmt: skip
    out = list(history)
    fill = out[entries[-1]]
    out[entries[-1]] = _replace(fill, qty=fill.qty - fee, price=fill.price * fill.qty / (fill.qty - fee))
    return out, None


def booking_order(actions: Iterable[CorporateAction]) -> list[CorporateAction]:
    """Return ``actions`` in the order they are booked: by time; at one instant, a rename last for
    its old symbol and first for its new one (docs/corporate-actions.md "Same instant").

    Alpaca books a split and a symbol change (or stock merger) of one position at the same
    ex-date: the shares are split whatever they are called, so an action on a symbol a rename
    moves away at that instant is booked before the rename, one on the symbol it moves into
    after it. Otherwise (and between renames) id order, as before.
    """
    actions = list(actions)
    renames = [a for a in actions if a.type in _RENAMES and a.new_symbol]

    def phase(action: CorporateAction) -> int:
        if action.type in _RENAMES and action.new_symbol:
            return 1
        if any(r.ts == action.ts and r.new_symbol == action.symbol for r in renames):
            return 2
        return 0

    return sorted(actions, key=lambda a: (a.ts, phase(a), a.id))


def adjusted_history(
    fills: Iterable[Fill], actions: Iterable[CorporateAction]
) -> tuple[list[Fill], list[ActionProblem]]:
    """Return the fill history with every action applied in time order, and the problems."""
    history = _sorted(fills)
    problems: list[ActionProblem] = []
    for action in booking_order(actions):
        history, problem = apply_action(history, action)
        if problem is not None:
            problems.append(problem)
    return history, problems


def remove_busted(fills: Iterable[Fill], busted_keys: Iterable[str]) -> list[Fill]:
    """Return ``fills`` without the executions the broker canceled (busts), by fill key."""
    gone = set(busted_keys)
    return [fill for fill in fills if fill.key not in gone]


def linked_symbols(symbols: Iterable[str], actions: Iterable[CorporateAction], after: int = -1) -> set[str]:
    """Return ``symbols`` plus those of every action after ``after`` reaching them (transitively)."""
    found = set(symbols)
    later = [set(a.symbols) for a in actions if a.ts > after]
    grew = True
    while grew:
        grew = False
        for touched in later:
            if found & touched and not touched <= found:
                found |= touched
                grew = True
    return found


def needs_history(fill: Fill, actions: Iterable[CorporateAction]) -> bool:
    """Return True when ``fill`` predates an action on its symbol or on one an action links it to.

    Applied incrementally it would be read in pre-action share terms; the caller instead runs
    ``plan_symbols_rebuild`` for the linked symbols with the adjusted history. Linked: a fill
    of MSFT stamped after MSFT became NEW0 and before NEW0's cash merger belongs to a lot the
    merger closed in memory, but to a new MSFT lot in the history.
    """
    actions = list(actions)
    later = [a for a in actions if fill.ts < a.ts]
    if not later:
        return False
    symbols = linked_symbols((fill.symbol,), actions)
    return any(symbols & set(a.symbols) for a in later)


class ActionLeg(msgspec.Struct, frozen=True, kw_only=True):
    """One corporate-action activity as the broker lists it (SPLIT, SC, NC, MA, SPIN, CIL...).

    ``qty`` is signed (shares out < 0, shares in > 0); ``ts`` the instant it takes effect.
    """

    id: str
    code: str
    ts: int
    symbol: str
    qty: Decimal
    price: Decimal | None = None
    net_amount: Decimal = ZERO
    # The broker's description: the legs of one action share it ("Split: 2 for 1 AAPL"), which
    # keeps two actions booked in the same minute apart; "" when unknown.
    text: str = ""


# The legs of one action are booked together: within this window of each other.
LEG_WINDOW_NS: Final = 60 * 1_000_000_000
_PAIRED: Final[dict[str, ActionType]] = {"SPLIT": "split", "SSP": "split", "SC": "symbol_change",
                                         "NC": "symbol_change", "MA": "stock_merger"}


def _all_settled(_: ActionLeg) -> bool:
    return True


def actions_from_legs(
    legs: Iterable[ActionLeg], settled: Callable[[ActionLeg], bool] = _all_settled
) -> tuple[list[CorporateAction], list[ActionProblem]]:
    """Return the corporate actions the broker's activity legs describe, and the legs held.

    Legs of one action share a code and are booked within ``LEG_WINDOW_NS`` of each other
    (docs/corporate-actions.md "Legs"):

    - shares out and shares in of the same symbol (SPLIT, SSP): a split, ratio = in / out;
    - shares out and shares in of another symbol: a symbol change (NC, SC) or a stock merger (MA);
    - MA shares out with a cash leg of the same symbol (qty 0, cash in), or one MA leg with
      both: a cash merger at cash / shares;
    - REORG shares out with a cash leg: a redemption at cash / shares; REORG shares out alone,
      once ``settled`` (its cash leg would be listed by then): a worthless removal at 0;
    - SPLIT (or SSP) shares in alone, once ``settled`` (a split's shares-out leg would be listed
      by then): a stock dividend of that many shares;
    - SPIN shares in: a spin-off at its ``price`` (the basis; a price of 0 states none);
    - CIL shares out and cash in: that fraction closed (attached to the action booked with it).

    An action is booked whole or held whole: legs that fit none of these, or a group of more
    legs than its shape has (a unit split's three SPLIT legs, a stock-and-cash merger's three MA
    legs), are problems, every leg of the group, and nothing of them is booked.
    """
    ordered = sorted(legs, key=lambda leg: (leg.ts, leg.id))
    used: set[str] = set()
    problems: list[ActionProblem] = []
    actions = _paired_actions(ordered, used, problems, settled)
    for leg in ordered:
        if leg.id not in used and not _single_action(leg, actions, settled):
            problems.append(ActionProblem(id=leg.id, reason=f"{leg.code}: leg without a partner (qty {leg.qty})"))
    return sorted(actions, key=lambda a: (a.ts, a.id)), problems


def _hold(group: Sequence[ActionLeg], used: set[str], problems: list[ActionProblem], reason: str) -> None:
    used |= {leg.id for leg in group}
    problems += [ActionProblem(id=leg.id, reason=f"{leg.code}: {reason} (held whole)") for leg in group]


def _paired_actions(
    ordered: Sequence[ActionLeg], used: set[str], problems: list[ActionProblem], settled: Callable[[ActionLeg], bool]
) -> list[CorporateAction]:
    actions: list[CorporateAction] = []
    for leg in ordered:
        if leg.id in used or leg.code not in {*_PAIRED, "REORG"} or leg.qty >= 0:
            continue
        near = [o for o in ordered if o.id not in used and o.id != leg.id and o.code == leg.code
                and abs(o.ts - leg.ts) <= LEG_WINDOW_NS and (o.text == leg.text or not (o.text and leg.text))]
        cash = [o for o in near if o.qty == 0 and o.symbol == leg.symbol and o.net_amount > 0]
        others = [o for o in near if o.qty > 0 and o.symbol != leg.symbol]
        if leg.code in {"MA", "REORG"} and (leg.net_amount > 0 or (cash and not others)):
            # Shares out for cash: one leg carrying both, or a shares-out leg and its cash leg.
            paid = leg.net_amount + (cash[0].net_amount if cash else ZERO)
            used |= {leg.id, *(c.id for c in cash[:1])}
            kind: ActionType = "cash_merger" if leg.code == "MA" else "removal"
            actions.append(CorporateAction(id=leg.id, type=kind, symbol=leg.symbol, ts=leg.ts,
                                           cash_per_share=paid / -leg.qty))  # fmt: skip
            continue
        if leg.code == "REORG":
            if not others and settled(leg):  # shares out, no cash: a worthless removal
                used.add(leg.id)
                actions.append(CorporateAction(id=leg.id, type="removal", symbol=leg.symbol, ts=leg.ts,
                                               cash_per_share=ZERO))  # fmt: skip
            continue
        group = _three_legs(leg, others, cash)
        if group is not None:
            used |= {leg.id, *(o.id for o in others), *(c.id for c in cash)}
            actions.append(group)
            continue
        if (leg.code in {"SPLIT", "SSP"} and others) or (leg.code == "MA" and (len(others) > 1 or cash)):
            kind_text = "unit split" if leg.code in {"SPLIT", "SSP"} else "merger of shares and cash"
            _hold([leg, *others, *cash], used, problems, f"a {kind_text} is not booked from its legs")
            continue
        partner = min((o for o in near if o.qty > 0),
                      key=lambda o: (o.symbol != leg.symbol, abs(o.ts - leg.ts)), default=None)  # fmt: skip
        if partner is None:
            continue
        used |= {leg.id, partner.id}
        pair = "split" if partner.symbol == leg.symbol else _PAIRED[leg.code]
        if pair == "split" and partner.symbol != leg.symbol:
            pair = "symbol_change"
        actions.append(CorporateAction(
            id=leg.id, type=pair, symbol=leg.symbol, ts=leg.ts, ratio=partner.qty / -leg.qty,
            new_symbol=None if pair == "split" else partner.symbol,
        ))  # fmt: skip
    return actions


def _three_legs(leg: ActionLeg, others: Sequence[ActionLeg], cash: Sequence[ActionLeg]) -> CorporateAction | None:
    """A unit split (units out, two other symbols in) or a stock-and-cash merger (shares out, the
    acquirer's in, cash): the action, when its legs state what it needs (prices > 0), else None."""
    if leg.code in {"SPLIT", "SSP"} and len(others) == 2 and not cash and others[0].symbol != others[1].symbol:
        first, second = others
        values = [o.qty * o.price if o.price else ZERO for o in others]
        if not all(values):
            return None
        return CorporateAction(id=leg.id, type="unit_split", symbol=leg.symbol, ts=leg.ts, ratio=first.qty / -leg.qty,
                               new_symbol=first.symbol, alternate_symbol=second.symbol,
                               alternate_ratio=second.qty / -leg.qty, basis_share=values[0] / sum(values))  # fmt: skip
    if leg.code == "MA" and len(others) == 1 and len(cash) == 1 and others[0].price:
        (acquirer,) = others
        return CorporateAction(id=leg.id, type="stock_cash_merger", symbol=leg.symbol, ts=leg.ts,
                               ratio=acquirer.qty / -leg.qty, new_symbol=acquirer.symbol, price=acquirer.price,
                               cash_per_share=cash[0].net_amount / -leg.qty)  # fmt: skip
    return None


def _single_action(leg: ActionLeg, actions: list[CorporateAction], settled: Callable[[ActionLeg], bool]) -> bool:
    """Book a leg that stands alone (SPIN, CIL, CFEE, a stock dividend's SPLIT) into ``actions``;
    False when it fits nothing (yet)."""
    if leg.code in {"SPLIT", "SSP"} and leg.qty > 0 and settled(leg):
        actions.append(CorporateAction(id=leg.id, type="stock_dividend", symbol=leg.symbol, ts=leg.ts, qty=leg.qty))
        return True
    if leg.code in {"SPIN", "SSO"} and leg.qty > 0:
        price = leg.price if leg.price else None  # a real SPIN leg is priced 0: no basis stated
        actions.append(CorporateAction(id=leg.id, type="spinoff", symbol=leg.symbol, new_symbol=leg.symbol,
                                       ts=leg.ts, qty=leg.qty, price=price))  # fmt: skip
        return True
    if leg.code == "CFEE" and leg.qty < 0 and leg.net_amount == 0:
        actions.append(CorporateAction(id=leg.id, type="coin_fee", symbol=leg.symbol, ts=leg.ts, qty=-leg.qty))
        return True
    if leg.code != "CIL" or leg.qty >= 0 or leg.price is None:
        return False
    host = next((i for i, a in enumerate(actions)
                 if abs(a.ts - leg.ts) <= LEG_WINDOW_NS and leg.symbol == (a.new_symbol or a.symbol)), None)
    if host is not None:
        actions[host] = _replace(actions[host], cash_in_lieu_qty=-leg.qty, price=leg.price)
    else:
        actions.append(CorporateAction(id=leg.id, type="cash_in_lieu", symbol=leg.symbol, ts=leg.ts,
                                       cash_in_lieu_qty=-leg.qty, price=leg.price))  # fmt: skip
    return True


# The broker's activity codes of corporate-action legs (docs/spec.md §8).
CORPORATE_CODES: Final = frozenset({"SPLIT", "SSP", "SC", "NC", "MA", "SPIN", "SSO", "CIL", "REORG", "CFEE"})


def corporate_legs(records: Sequence[ActivityRecord]) -> list[ActionLeg]:
    """Return the corporate-action legs among ``records`` (``actions_from_legs`` input).

    A leg takes effect at the instant its id encodes (Alpaca books splits before the open of
    the ex-date: ``20240610040000000::…``), else at its date's New York midnight. Canceled
    legs (``status``, or the stored ``raw_json``'s: a reload sees what the snapshot saw) and
    legs without a symbol or quantity are left out.
    """
    legs: list[ActionLeg] = []
    for record in records:
        if record.activity_type not in CORPORATE_CODES or record.status == "canceled":
            continue
        if not record.symbol or record.qty is None:
            continue
        if record.activity_type == "CFEE" and not (record.qty < 0 and not record.net_amount):
            continue  # a fee in dollars is a cash flow only; a fee in the coin moves the lot
        raw = _raw_fields(record.raw_json)
        if record.status is None and str(raw.get("status") or "").lower() == "canceled":
            continue
        stamp = activity_id_time(record.id)
        text = raw.get("description")
        if _is_retimed(record.transaction_time):  # by the announcement's ex-date (``retime_legs``)
            stamp = None
        legs.append(ActionLeg(
            id=record.id, code=record.activity_type, ts=from_datetime(stamp) if stamp else record.transaction_time,
            symbol=record.symbol, qty=record.qty, price=record.price, net_amount=record.net_amount or ZERO,
            text=text.strip() if isinstance(text, str) else "",
        ))  # fmt: skip
    return legs


def _raw_fields(raw_json: str) -> dict[str, object]:
    """Return an activity's JSON object ({} when it is not one)."""
    try:
        found = msgspec.json.decode(raw_json)
    except msgspec.DecodeError:
        return {}
    return found if isinstance(found, dict) else {}


# --- announcements: what happens and when it takes effect ------------------------------------

# The groups of Alpaca's corporate-actions announcements (alpaca-py
# ``alpaca/data/models/corporate_actions.py``): the symbols each names, the one whose holders it
# acts on, and the date it takes effect.
_ANNOUNCED: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "forward_splits": (("symbol",), ("ex_date",)),
    "reverse_splits": (("symbol",), ("ex_date",)),
    "unit_splits": (("old_symbol", "new_symbol", "alternate_symbol"), ("effective_date",)),
    "stock_dividends": (("symbol",), ("ex_date",)),
    "spin_offs": (("source_symbol", "new_symbol"), ("ex_date",)),
    "cash_mergers": (("acquiree_symbol", "acquirer_symbol"), ("effective_date",)),
    "stock_mergers": (("acquiree_symbol", "acquirer_symbol"), ("effective_date",)),
    "stock_and_cash_mergers": (("acquiree_symbol", "acquirer_symbol"), ("effective_date",)),
    "redemptions": (("symbol",), ("payable_date", "process_date")),
    "name_changes": (("old_symbol", "new_symbol"), ("process_date",)),
    "worthless_removals": (("symbol",), ("process_date",)),
}
# Legs dated this far from an announcement's effective date can belong to it (payable dates
# precede ex-dates by a day or two; legs are listed up to a few days late).
ANNOUNCEMENT_MATCH_DAYS: Final = 7
_MICROSECOND_NS: Final = 1_000


class Announcement(msgspec.Struct, frozen=True, kw_only=True):
    """One announced action: its id, group, the symbols it names, and the day it takes effect."""

    id: str
    group: str
    symbols: tuple[str, ...]
    effective: date
    # A spin-off's (``source_rate``, ``new_rate``): new shares per parent shares; None elsewhere.
    rates: tuple[Decimal, Decimal] | None = None
    # Every rate the item states (``old_rate``, ``new_rate``, ``rate``, ``acquirer_rate``, ...),
    # by name: what the legs' quantities are checked against (``check_announced``).
    terms: tuple[tuple[str, Decimal], ...] = ()


def parse_announcements(body: object) -> list[Announcement]:
    """Return the announcements of a ``GET /v1/corporate-actions`` body (``corporate_actions``:
    group -> items); items without a known group, symbol or date are left out."""
    groups = body.get("corporate_actions") if isinstance(body, Mapping) else None
    found: list[Announcement] = []
    if not isinstance(groups, Mapping):
        return found
    for group, items in groups.items():
        fields = _ANNOUNCED.get(str(group))
        if fields is None or not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, Mapping):
                continue
            symbols = tuple(str(item[k]).upper() for k in fields[0] if isinstance(item.get(k), str) and item[k])
            day = next((item[k] for k in fields[1] if isinstance(item.get(k), str)), None)
            try:
                effective = date.fromisoformat(day[:10]) if day else None
            except ValueError:
                effective = None
            if symbols and effective is not None:
                rates = _rates(item, "source_rate", "new_rate") if group == "spin_offs" else None
                terms = tuple((name, value) for name in _RATE_NAMES if (value := _rate(item, name)) is not None)
                found.append(Announcement(id=str(item.get("id") or ""), group=str(group), symbols=symbols,
                                          effective=effective, rates=rates, terms=terms))  # fmt: skip
    return found


_RATE_NAMES: Final = ("old_rate", "new_rate", "rate", "source_rate", "acquirer_rate", "acquiree_rate", "cash_rate",
                      "alternate_rate")  # fmt: skip


def _rate(item: Mapping[str, object], name: str) -> Decimal | None:
    """Return the rate ``name`` of an announcement (a number or decimal string > 0), or None."""
    raw = item.get(name)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        value = Decimal(str(raw))
    except ArithmeticError:
        return None
    return value if value.is_finite() and value > 0 else None


def _rates(item: Mapping[str, object], *names: str) -> tuple[Decimal, Decimal] | None:
    """Return the two rates ``names`` of an announcement (numbers or decimal strings), or None."""
    values = [_rate(item, name) for name in names]
    first, second = values
    return (first, second) if first is not None and second is not None else None


def spinoff_announcement(action: CorporateAction, announcements: Sequence[Announcement]) -> Announcement | None:
    """Return the ``spin_offs`` announcement with rates that explains the spin-off ``action``
    (its new symbol, an ex-date within ``ANNOUNCEMENT_MATCH_DAYS`` of the leg), the nearest; or None."""
    child = action.new_symbol or action.symbol
    day = datetime.fromtimestamp((action.ts + _MICROSECOND_NS) / 1e9, tz=NEW_YORK).date()
    near = [a for a in announcements if a.group == "spin_offs" and len(a.symbols) == 2 and a.symbols[1] == child
            and a.rates is not None and abs(a.effective - day) <= timedelta(days=ANNOUNCEMENT_MATCH_DAYS)]  # fmt: skip
    return min(near, key=lambda a: (abs(a.effective - day), a.id)) if near else None


def spinoff_by_announcement(
    action: CorporateAction, announcements: Sequence[Announcement], prices: Mapping[str, Decimal]
) -> CorporateAction | None:
    """Return the spin-off ``action`` (from its SPIN leg, priced 0) allocated by default: the
    parent is the announcement's ``source_symbol``, its share of the basis by the announcement's
    rates and ``prices`` of the two symbols (the ex-date closes: ``ex_date_closes``;
    ``spinoff_parent_share``); None when the announcement, its rates or a price is not known
    (the action stays held)."""
    best = spinoff_announcement(action, announcements)
    if best is None or best.rates is None:
        return None
    parent, child = best.symbols
    if parent not in prices or child not in prices:
        return None
    share = spinoff_parent_share(best.rates[0], best.rates[1], prices[parent], prices[child])
    return allocate_spinoff(action, parent, share) if share is not None else None


def ex_date_closes(
    closes: Mapping[date, Mapping[str, Decimal]], symbols: Sequence[str], ex_date: date, today: date
) -> dict[str, Decimal] | None:
    """Return each of ``symbols``' daily close of the first session on or after ``ex_date`` on
    which all of them closed, from ``closes`` (``{NY date: {symbol: close}}``); None when no such
    day is over yet (before ``today``: a bar of today is not a close yet). Absence is not
    evidence: a day missing one symbol is skipped, never read as a price of 0
    (docs/corporate-actions.md "Spin-offs")."""
    for day in sorted(d for d in closes if ex_date <= d < today):
        found = closes[day]
        if all(s in found and found[s] > 0 for s in symbols):
            return {s: found[s] for s in symbols}
    return None


def effective_instant(day: date) -> int:
    """Return when an action effective on ``day`` takes effect: just before that day starts in
    New York (every fill of the ex-date is after it, every fill of the day before is before it).

    One microsecond before midnight, so that a stored leg shows it was re-timed: no leg is dated
    at that instant by the broker (``_is_retimed``), and PostgreSQL keeps microseconds.
    """
    midnight = datetime.combine(day, time(0), tzinfo=NEW_YORK)
    return from_datetime(midnight) - _MICROSECOND_NS


def _is_retimed(ts: int) -> bool:
    instant = datetime.fromtimestamp((ts + _MICROSECOND_NS) / 1e9, tz=NEW_YORK)
    return instant.time() == time(0) and (ts + _MICROSECOND_NS) % 1_000_000_000 == 0


def retime_legs(
    records: Sequence[ActivityRecord], announcements: Sequence[Announcement]
) -> tuple[list[ActivityRecord], list[ActivityRecord]]:
    """Return the corporate legs with the instant their announcement says the action takes effect
    (``effective_instant`` of its ex-date or effective date, in ``transaction_time``), and the
    legs no announcement explains (yet).

    The legs say what the broker booked; the announcement says when it takes effect: legs are
    stamped on the payable date (a day or more before the ex-date), before the open of the
    ex-date, or at midday of the ex-date after that morning's trades (docs/corporate-actions.md
    "Announcements"). A leg matches the announcement naming its symbol whose date is nearest its
    own (within ``ANNOUNCEMENT_MATCH_DAYS``). A fee in the coin has no announcement.
    """
    matched: list[ActivityRecord] = []
    unexplained: list[ActivityRecord] = []
    for record in records:
        if record.activity_type not in CORPORATE_CODES or record.activity_type == "CFEE" or not record.symbol:
            matched.append(record)
            continue
        stamp = activity_id_time(record.id)
        day = (stamp.astimezone(NEW_YORK).date() if stamp else
               datetime.fromtimestamp(record.transaction_time / 1e9, tz=NEW_YORK).date())
        near = [a for a in announcements if record.symbol in a.symbols
                and abs(a.effective - day) <= timedelta(days=ANNOUNCEMENT_MATCH_DAYS)]
        if not near:
            unexplained.append(record)
            continue
        best = min(near, key=lambda a: (abs(a.effective - day), a.id))
        matched.append(msgspec.structs.replace(record, transaction_time=effective_instant(best.effective)))
    return matched, unexplained


def _day_of(ts: int) -> date:
    """Return the New York date an instant (or a re-timed effective instant) falls on."""
    return datetime.fromtimestamp((ts + _MICROSECOND_NS) / 1e9, tz=NEW_YORK).date()


def _nearest(announcements: Iterable[Announcement], groups: Iterable[str], symbol: str, day: date,
             position: int | None = None) -> Announcement | None:  # fmt: skip
    """Return the announcement of ``groups`` naming ``symbol`` (at ``position`` of its symbols,
    when given) whose effective date is nearest ``day``, within ``ANNOUNCEMENT_MATCH_DAYS``."""
    wanted = set(groups)
    near = [a for a in announcements if a.group in wanted and abs(a.effective - day) <= timedelta(
        days=ANNOUNCEMENT_MATCH_DAYS) and (symbol in a.symbols if position is None else
                                           len(a.symbols) > position and a.symbols[position] == symbol)]
    return min(near, key=lambda a: (abs(a.effective - day), a.id), default=None)


def announced_removal(leg: ActionLeg, announcements: Sequence[Announcement]) -> bool:
    """Return True when a ``worthless_removals`` announcement names the symbol of ``leg`` (a REORG
    shares-out leg alone): it is a worthless removal now, without waiting for a cash leg that a
    redemption would have (docs/corporate-actions.md "Legs")."""
    return leg.code == "REORG" and leg.qty < 0 and _nearest(
        announcements, ("worthless_removals",), leg.symbol, _day_of(leg.ts)) is not None


def announced_dividend(leg: ActionLeg, announcements: Sequence[Announcement]) -> bool:
    """Return True when a ``stock_dividends`` announcement names the symbol of ``leg`` (a SPLIT
    shares-in leg alone): a stock dividend now, without waiting for a split's shares-out leg."""
    return leg.code in {"SPLIT", "SSP"} and leg.qty > 0 and _nearest(
        announcements, ("stock_dividends",), leg.symbol, _day_of(leg.ts)) is not None


def is_lone_leg(leg: ActionLeg) -> bool:
    """Return True for the legs that stand alone only once settled: REORG shares out (a
    worthless removal) and SPLIT shares in (a stock dividend)."""
    return (leg.code == "REORG" and leg.qty < 0) or (leg.code in {"SPLIT", "SSP"} and leg.qty > 0)


# --- the announcement's rates against the legs' quantities ------------------------------------

# The legs state quantities to 9 decimals, rounded down (docs/broker.md): two statements of one
# quantity can differ by this much.
QTY_TOLERANCE: Final = Decimal("1e-9")
# The announcement groups an action read from its legs can be (the groups whose rates say how
# many new shares a holder gets); the other actions have no quantity to check.
_CHECKED: Final[dict[str, tuple[str, ...]]] = {
    "split": ("forward_splits", "reverse_splits"),
    "symbol_change": ("name_changes",),
    "stock_merger": ("stock_mergers",),
    "stock_cash_merger": ("stock_and_cash_mergers",),
    "unit_split": ("unit_splits",),
    "spinoff": ("spin_offs",),
}


# Actions that pay cash for the shares, the group that announces them and its rate (cash per
# share held); the broker pays the total to the cent, so the legs' cash agrees within ``CASH_TOLERANCE``.
_CASH_CHECKED: Final[dict[str, tuple[str, str]]] = {
    "cash_merger": ("cash_mergers", "rate"),
    "removal": ("redemptions", "rate"),
    "stock_cash_merger": ("stock_and_cash_mergers", "cash_rate"),
}
CASH_TOLERANCE: Final = Decimal("0.01")


def _check_cash(action: CorporateAction, held: Decimal, announcements: Sequence[Announcement]) -> ActionProblem | None:
    """A cash merger's or redemption's cash against its announced ``rate``, a stock-and-cash
    merger's cash leg against its ``cash_rate`` (per acquiree share held); a removal at 0 that a
    redemption announces is a disagreement: its cash leg is missing."""
    group, name = _CASH_CHECKED[action.type]
    found = _nearest(announcements, (group,), action.symbol, _day_of(action.ts), 0)
    rate = dict(found.terms).get(name) if found is not None else None
    if found is None or rate is None or action.cash_per_share is None:
        return None
    paid, due = held * action.cash_per_share, held * rate
    if abs(paid - due) <= CASH_TOLERANCE:
        return None
    return ActionProblem(id=action.id, reason=(
        f"{action.type}: the legs pay {_short(paid)} for {held} {action.symbol}, announcement "
        f"{found.id or found.group} implies {_short(due)} (held whole)"))  # fmt: skip


def announced_quantities(announcement: Announcement, held: Decimal) -> dict[str, Decimal] | None:
    """Return the new shares per symbol the announcement's rates imply for ``held`` shares of the
    symbol it acts on (before any rounding to whole shares), or None when it lacks a rate.

    alpaca-py ``alpaca/data/models/corporate_actions.py``: ``new_rate`` new shares per
    ``old_rate`` (forward/reverse splits; a unit split's units also give ``alternate_rate``
    shares of ``alternate_symbol``), ``rate`` new shares per share (stock dividends: added to
    the position), ``acquirer_rate`` acquirer shares per ``acquiree_rate`` (stock mergers, stock
    and cash mergers), ``new_rate`` new shares per ``source_rate`` (spin-offs), and the same
    number of shares of ``new_symbol`` (name changes).
    """
    terms, symbols, group = dict(announcement.terms), announcement.symbols, announcement.group

    def per(numerator: str, denominator: str | None) -> Decimal | None:
        top = terms.get(numerator)
        bottom = terms.get(denominator) if denominator else Decimal(1)
        return None if top is None or bottom is None else held * top / bottom

    pairs: list[tuple[str, Decimal | None]]
    if group in {"forward_splits", "reverse_splits"}:
        pairs = [(symbols[0], per("new_rate", "old_rate"))]
    elif group == "stock_dividends":
        pairs = [(symbols[0], per("rate", None))]
    elif group == "name_changes" and len(symbols) == 2:
        pairs = [(symbols[1], held)]
    elif group in {"stock_mergers", "stock_and_cash_mergers"} and len(symbols) == 2:
        pairs = [(symbols[1], per("acquirer_rate", "acquiree_rate"))]
    elif group == "unit_splits" and len(symbols) == 3:
        pairs = [(symbols[1], per("new_rate", "old_rate")), (symbols[2], per("alternate_rate", "old_rate"))]
    elif group == "spin_offs" and len(symbols) == 2:
        pairs = [(symbols[1], per("new_rate", "source_rate"))]
    else:
        return None
    found = {symbol: qty for symbol, qty in pairs if qty is not None}
    return found if len(found) == len(pairs) else None


def stated_quantities(action: CorporateAction, held: Decimal) -> dict[str, Decimal]:
    """Return the new shares per symbol the legs of ``action`` state for ``held`` shares out (a
    spin-off: of the parent). The shares-in leg counts the fraction a CIL leg then pays in cash."""
    target = action.new_symbol or action.symbol
    if action.type == "unit_split" and action.alternate_symbol:
        return {target: held * action.ratio, action.alternate_symbol: held * action.alternate_ratio}
    if action.type == "spinoff" and action.qty is not None:
        return {target: action.qty}
    return {target: held * action.ratio}


def quantity_agrees(stated: Decimal, announced: Decimal, whole: bool) -> bool:
    """Return True when ``stated`` new shares are what ``announced`` implies, as the broker rounds.

    They agree to the legs' last (9th) decimal (``QTY_TOLERANCE``: the broker rounds down there),
    or, for a holder of ``whole`` shares, with the whole part of it: a holder of whole shares
    keeps whole shares and the fraction is paid in cash (a CIL leg, listed with the action or
    later); a holder of a fraction keeps fractions.
    """
    if abs(stated - announced) <= QTY_TOLERANCE:
        return True
    return whole and abs(stated - announced.to_integral_value(rounding=ROUND_FLOOR)) <= QTY_TOLERANCE


def check_announced(
    action: CorporateAction, held: Decimal | None, announcements: Sequence[Announcement]
) -> ActionProblem | None:
    """Return the disagreement between ``action``'s legs and its announcement's rates, or None.

    Cash mergers and redemptions: the cash the legs pay against the announced ``rate`` per share
    (within ``CASH_TOLERANCE`` of the total); stock-and-cash mergers: the cash leg against
    ``cash_rate`` per share the same way, and the acquirer's shares against its rates.

    ``held``: the shares out the legs state (a spin-off: the parent's position). None when no
    announcement of a matching group names the action's symbol near its date, when it states no
    rates, or when ``held`` is unknown: the legs are booked as listed (an announcement says
    *when*; only one that also says *how many* can contradict them).
    """
    if held is None or not held > 0:
        return None
    if action.type in _CASH_CHECKED and (unpaid := _check_cash(action, held, announcements)) is not None:
        return unpaid
    groups = _CHECKED.get(action.type)
    if groups is None:
        return None
    spun = action.type == "spinoff"
    symbol = (action.new_symbol or action.symbol) if spun else action.symbol
    found = _nearest(announcements, groups, symbol, _day_of(action.ts), 1 if spun else 0)
    if found is None or (spun and found.symbols[0] != action.symbol):
        return None
    announced = announced_quantities(found, held)
    if announced is None:
        return None
    stated = stated_quantities(action, held)
    for name, qty in sorted(announced.items()):
        legs = stated.get(name)
        if legs is None or not quantity_agrees(legs, qty, held == held.to_integral_value()):
            return ActionProblem(id=action.id, reason=(
                f"{action.type}: the legs state {legs if legs is None else _short(legs)} {name} for {held} held, "
                f"announcement {found.id or found.group} implies {_short(qty)} (held whole)"))  # fmt: skip
    return None


def _short(qty: Decimal) -> str:
    return f"{qty.quantize(QTY_TOLERANCE).normalize():f}" if abs(qty) < MAX_ABS else str(qty)


def legs_of(action: CorporateAction, legs: Iterable[ActionLeg]) -> list[ActionLeg]:
    """Return the legs that formed ``action`` (its symbols, within ``LEG_WINDOW_NS`` of it), its
    cash in lieu included: what is withheld while the action is held whole."""
    return [leg for leg in legs if leg.symbol in action.symbols and abs(leg.ts - action.ts) <= LEG_WINDOW_NS]
