"""The fake broker's matching engine: accounts, the order book, prices, fills and trade updates.

Every command (submit, replace, cancel, close, new prices, expiry, cash activity) takes the
current time as an argument, changes the book, and returns the trade updates Alpaca would send
for it, in order (``TradeUpdate``: the ``data`` object of a trade_updates frame, with the full
order JSON). Refusals raise ``SimError`` with Alpaca's status and body and change nothing.
Fill prices follow ``matching``; order bodies are validated by ``order_request``; money is
Decimal throughout. Ids come from a seeded generator, so a run is reproducible from its seed.

Linked orders: a bracket/OTO parent lists its exit legs in ``leg_ids``; the legs wait as
``held`` until the parent is completely filled, then become ``new``. Exit legs that exclude
each other (bracket take-profit and stop-loss, the two sides of an OCO) share an ``oco_group``:
the first execution of one cancels the others, so a position is never closed twice.

Pure: no I/O, no clock reads, no logging.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from typing import Final

from coldharbour.domain.money import HUNDRED, ZERO
from coldharbour.sim import accounts as ledger
from coldharbour.sim.accounts import NEW_YORK, SimAccount
from coldharbour.sim.activities import cash_activity, cash_effect, fill_activity, insert_activity
from coldharbour.sim.assets import book_symbol, is_crypto
from coldharbour.sim.bars import PriceTape
from coldharbour.sim.corporate import Booking, CorporateAction, announcement, book_action, parse_corporate_action
from coldharbour.sim.matching import execution_price, follow_trail
from coldharbour.sim.order_request import (
    OrderSpec,
    check_bracket_prices,
    parse_order_request,
    parse_replace_request,
)
from coldharbour.sim.orders import OrderType, Side, SimOrder, order_to_json, successor_of
from coldharbour.sim.risk import check_order_allowed, held_qty
from coldharbour.sim.wire import (
    SimError,
    forbidden,
    money_text,
    not_found,
    precise_timestamp_text,
    unprocessable,
)

GTC_LIFETIME: Final = timedelta(days=90)
QTY_PLACES: Final = Decimal("0.000000001")
DEFAULT_SLICES: Final = 3


@dataclass(frozen=True)
class AccountSpec:
    """An account to create: its name and the key pair that authenticates it."""

    name: str
    key_id: str
    secret_key: str


DEFAULT_ACCOUNTS: Final = (AccountSpec("demo", "demo-key", "demo-secret"),)


@dataclass
class EngineConfig:
    """Behaviour switches, changeable at run time through ``POST /sim/config``."""

    partial_fills: bool = False
    # With partial fills, an order fills in this many executions, one per price it sees.
    partial_fill_slices: int = DEFAULT_SLICES
    # Send ``pending_new`` before ``new`` for each accepted order.
    pending_new_events: bool = False
    # Send ``accepted`` (event, timestamp and order only, as alpaca-py#371 shows) before ``new``.
    accepted_events: bool = False
    # Stream fills without ``execution_id`` (it happens: alpaca-py#210); REST FILLs keep theirs.
    omit_execution_id: bool = False
    # Activity-type filter values answered with 422 "invalid activity type" (as Alpaca answers a
    # value outside the filter list it accepts); the listing itself still returns those types.
    refused_activity_types: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, object]:
        """Return the settings as ``POST /sim/config`` takes them."""
        return {
            "partial_fills": self.partial_fills,
            "partial_fill_slices": self.partial_fill_slices,
            "pending_new_events": self.pending_new_events,
            "accepted_events": self.accepted_events,
            "omit_execution_id": self.omit_execution_id,
            "refused_activity_types": sorted(self.refused_activity_types),
        }


@dataclass(frozen=True)
class TradeUpdate:
    """One trade_updates message for ``account``; ``data`` is the frame's ``data`` object."""

    account: str
    data: dict[str, object]


def default_session_close(now: datetime) -> datetime:
    """Return 20:00 UTC of ``now``'s day, or of the next day once past it (no calendar)."""
    close = now.replace(hour=20, minute=0, second=0, microsecond=0)
    return close if close > now else close + timedelta(days=1)


class Engine:
    """The book of every account; see the module docstring for the rules."""

    def __init__(
        self,
        accounts: Sequence[AccountSpec],
        now: datetime,
        *,
        seed: int = 0,
        config: EngineConfig | None = None,
        session_close: Callable[[datetime], datetime] = default_session_close,
    ) -> None:
        if not accounts:
            raise ValueError("the engine needs at least one account")
        self.config = config or EngineConfig()
        self.prices: dict[str, Decimal] = {}
        self.lastday_prices: dict[str, Decimal] = {}
        # Corporate actions booked: id -> (action, each holder's booking); and their announcements.
        self.corporate: dict[str, tuple[CorporateAction, dict[str, Booking]]] = {}
        self._prices_before: dict[str, dict[str, Decimal]] = {}  # action id -> its symbols' prices then
        self.announcements: dict[str, tuple[CorporateAction, dict[str, object]]] = {}
        self.orders: dict[str, SimOrder] = {}
        # Indexes so that a busy book is not scanned whole on every submit or price (that made
        # the fake quadratic in its history): ids of orders not yet final (pruned lazily, since
        # a final status never changes back), and client order ids.
        self._open_ids: dict[str, None] = {}
        self._open_by_symbol: dict[str, dict[str, None]] = {}  # an order's symbol never changes
        self._client_ids: dict[tuple[str, str], str] = {}
        self.tape = PriceTape(seed)
        self._random = random.Random(seed)  # noqa: S311 - reproducible ids, not secrets
        # Wire details (submission lag, nanoseconds) drawn apart so they never shift the ids.
        self._details = random.Random(seed + 1)  # noqa: S311
        self._session_close = session_close
        self._sequence = 0
        self._events: list[TradeUpdate] = []
        self.accounts: dict[str, SimAccount] = {}
        for number, spec in enumerate(accounts, start=1):
            if spec.name in self.accounts:
                raise ValueError(f"duplicate account name {spec.name!r}")
            self.accounts[spec.name] = ledger.new_account(
                spec.name, spec.key_id, spec.secret_key, number, self._new_uuid(), now
            )

    # ----- lookups

    def _new_uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self._random.getrandbits(128), version=4)

    def new_id(self) -> str:
        """Return a fresh UUID string from the seeded generator."""
        return str(self._new_uuid())

    def account(self, name: str) -> SimAccount:
        """Return the account called ``name``; 404 when there is none."""
        try:
            return self.accounts[name]
        except KeyError as e:
            raise not_found(f"account not found: {name}") from e

    def account_for_key(self, key_id: str) -> SimAccount | None:
        """Return the account whose API key id is ``key_id``."""
        return next((a for a in self.accounts.values() if a.key_id == key_id), None)

    def find_order(self, account: str, order_id: str) -> SimOrder:
        """Return ``account``'s order ``order_id``; 404 with Alpaca's body when unknown."""
        order = self.orders.get(order_id)
        if order is None or order.account != account:
            raise not_found(f"order not found for {order_id}")
        return order

    def find_by_client_id(self, account: str, client_order_id: str) -> SimOrder:
        """Return ``account``'s order with ``client_order_id``; 404 when unknown."""
        order_id = self._client_ids.get((account, client_order_id))
        if order_id is None:
            raise not_found(f"order not found for {client_order_id}")
        return self.orders[order_id]

    def open_orders(self, account: str | None = None) -> Iterator[SimOrder]:
        """Yield the orders not yet final (of ``account``, or of every account), oldest first."""
        for order_id in list(self._open_ids):
            order = self.orders[order_id]
            if not order.is_open:
                del self._open_ids[order_id]
            elif account is None or order.account == account:
                yield order

    def _open_for(self, symbol: str) -> list[SimOrder]:
        """Return the orders on ``symbol`` not yet final, oldest first (a price move looks at no other)."""
        ids = self._open_by_symbol.get(symbol, {})
        found = []
        for order_id in list(ids):
            order = self.orders[order_id]
            if order.is_open:
                found.append(order)
            else:
                del ids[order_id]
        return found

    def _register(self, order: SimOrder) -> None:
        self.orders[order.id] = order
        self._open_ids[order.id] = None
        self._open_by_symbol.setdefault(order.symbol, {})[order.id] = None
        if order.client_order_id:
            self._client_ids.setdefault((order.account, order.client_order_id), order.id)

    def account_orders(self, account: str) -> Iterator[SimOrder]:
        """Yield ``account``'s orders, oldest first."""
        return (order for order in self.orders.values() if order.account == account)

    def order_json(self, order: SimOrder, nested: bool) -> dict[str, object]:
        """Return Alpaca's JSON for ``order``; with ``nested`` its legs are inside ``legs``."""
        legs = [order_to_json(self.orders[i]) for i in order.leg_ids] if nested else None
        return order_to_json(order, legs)

    def position_json(self, account: str, symbol: str) -> dict[str, object]:
        """Return the JSON of ``account``'s position in ``symbol``; 404 when flat."""
        book = self.account(account)
        position = book.positions.get(symbol)
        if position is None:
            raise not_found("position does not exist")
        side: Side = "sell" if position.qty > ZERO else "buy"
        held = held_qty(self.open_orders(account), symbol, side)
        lastday = self.lastday_prices.get(symbol, ledger.mark_price(position, self.prices))
        return ledger.position_to_json(position, self.prices, held, lastday)

    def account_json(self, account: str, now: datetime) -> dict[str, object]:
        """Return the ``GET /v2/account`` object of ``account``."""
        return ledger.account_to_json(self.account(account), self.prices, now)

    # ----- events

    def _drain(self) -> list[TradeUpdate]:
        events, self._events = self._events, []
        return events

    def _emit(
        self,
        event: str,
        order: SimOrder,
        now: datetime,
        execution: tuple[str, Decimal, Decimal, Decimal] | None = None,
    ) -> None:
        data: dict[str, object] = {"event": event}
        if event != "accepted" and not (execution is not None and self.config.omit_execution_id):
            data["execution_id"] = execution[0] if execution else self.new_id()
        # Alpaca stamps updates to the nanosecond, in New York time with its offset.
        data["timestamp"] = precise_timestamp_text(now, self._details.randrange(1000), NEW_YORK)
        data["order"] = self.order_json(order, nested=True)
        if execution is not None:
            data["price"] = money_text(execution[1])
            data["qty"] = money_text(execution[2])
            data["position_qty"] = money_text(execution[3])
        self._events.append(TradeUpdate(order.account, data))

    # ----- submitting

    def submit_order(
        self, account: str, body: Mapping[str, object], now: datetime
    ) -> tuple[SimOrder, list[TradeUpdate]]:
        """Accept a ``POST /v2/orders`` body; return the order and the updates it caused."""
        book = self.account(account)
        spec = parse_order_request(body)
        self._check_client_order_id(account, spec.client_order_id)
        price = self.prices.get(spec.symbol)
        base = spec.limit_price if spec.type == "limit" else price
        if spec.order_class == "bracket" and base is not None:
            check_bracket_prices(spec, base)
        reference = spec.limit_price or spec.stop_price or price
        if is_crypto(spec.symbol) and spec.side == "sell":
            self._check_crypto_balance(book, spec)
        check_order_allowed(
            book,
            self.open_orders(account),
            self.prices,
            spec.symbol,
            spec.side,
            spec.qty,
            spec.notional,
            reference,
        )
        order = self._place(account, spec, now, needs_funds_check=reference is None)
        if order.time_in_force == "ioc" and order.is_open:
            self._cancel_one(order, now)  # immediate or cancel: what did not fill now is gone
        return order, self._drain()

    def _check_crypto_balance(self, book: SimAccount, spec: OrderSpec) -> None:
        """Crypto cannot be sold short: a sell needs the coins (Alpaca: insufficient balance)."""
        held = book.positions.get(spec.symbol)
        available = held.qty if held is not None else ZERO
        wanted = spec.qty if spec.qty is not None else ZERO
        if held is None or wanted > available:
            raise forbidden(f"insufficient balance for {spec.symbol.split('/')[0]}")

    def _check_client_order_id(self, account: str, client_order_id: str | None) -> None:
        if client_order_id is None:
            return
        if (account, client_order_id) in self._client_ids:
            raise unprocessable("client_order_id must be unique", 40010001)

    def _expires_at(self, time_in_force: str, now: datetime) -> datetime:
        if time_in_force == "gtc":
            return self._session_close(now + GTC_LIFETIME)
        return self._session_close(now)

    def _new_order(
        self,
        account: str,
        spec: OrderSpec,
        now: datetime,
        order_type: OrderType,
        side: Side,
        client_order_id: str | None = None,
    ) -> SimOrder:
        self._sequence += 1
        position = self.accounts[account].positions.get(spec.symbol)
        signed = position.qty if position is not None else ZERO
        is_closing = signed > ZERO if side == "sell" else signed < ZERO
        order = SimOrder(
            id=self.new_id(),
            account=account,
            client_order_id=client_order_id or self.new_id(),
            symbol=spec.symbol,
            side=side,
            type=order_type,
            time_in_force=spec.time_in_force,
            order_class=spec.order_class,
            qty=spec.qty,
            notional=spec.notional,
            limit_price=None,
            stop_price=None,
            trail_price=spec.trail_price,
            trail_percent=spec.trail_percent,
            extended_hours=spec.extended_hours,
            status="new",
            created_at=now,
            expires_at=self._expires_at(spec.time_in_force, now),
            sequence=self._sequence,
            position_intent=f"{side}_to_{'close' if is_closing else 'open'}",
            submitted_at=now - timedelta(milliseconds=self._details.randint(1, 170)),
        )
        self._register(order)
        return order

    def _place(self, account: str, spec: OrderSpec, now: datetime, needs_funds_check: bool) -> SimOrder:
        order_type: OrderType = spec.type
        main = self._new_order(account, spec, now, order_type, spec.side, spec.client_order_id)
        main.needs_funds_check = needs_funds_check
        main.limit_price = spec.limit_price
        main.stop_price = spec.stop_price
        if spec.order_class == "oco":
            main.limit_price = spec.take_profit_limit
            main.oco_group = main.id
        if main.type == "trailing_stop" and spec.symbol in self.prices:
            follow_trail(main, self.prices[spec.symbol])
        legs = self._make_legs(main, spec, now)
        # OCO legs work from the start; bracket/OTO legs are held and matched on activation.
        working_legs = [leg for leg in legs if leg.is_working]
        self._announce(main, now)
        for leg in working_legs:
            self._announce(leg, now)
        for order in (main, *working_legs):
            self._match_at_current_price(order, now)
        return main

    def _make_legs(self, main: SimOrder, spec: OrderSpec, now: datetime) -> list[SimOrder]:
        exit_side: Side = "sell" if spec.side == "buy" else "buy"
        if spec.order_class == "oco":
            exit_side = spec.side
        legs: list[SimOrder] = []
        if spec.take_profit_limit is not None and spec.order_class != "oco":
            take_profit = self._new_order(main.account, spec, now, "limit", exit_side)
            take_profit.limit_price = spec.take_profit_limit
            legs.append(take_profit)
        if spec.stop_loss is not None:
            stop_limit = spec.stop_loss.limit_price
            stop_type: OrderType = "stop" if stop_limit is None else "stop_limit"
            stop_loss = self._new_order(main.account, spec, now, stop_type, exit_side)
            stop_loss.stop_price = spec.stop_loss.stop_price
            stop_loss.limit_price = stop_limit
            legs.append(stop_loss)
        for leg in legs:
            leg.trail_price = leg.trail_percent = None
            leg.parent_id = main.id
            leg.position_intent = f"{exit_side}_to_close"
            if spec.order_class == "oco":
                leg.oco_group = main.id
            else:
                leg.status = "held"
                leg.oco_group = main.id if spec.order_class == "bracket" else None
        main.leg_ids = [leg.id for leg in legs]
        return legs

    def _announce(self, order: SimOrder, now: datetime) -> None:
        if self.config.accepted_events:
            status, order.status = order.status, "accepted"
            self._emit("accepted", order, now)
            order.status = status
        if self.config.pending_new_events:
            status, order.status = order.status, "pending_new"
            self._emit("pending_new", order, now)
            order.status = status
        self._emit("new", order, now)

    # ----- matching

    def _match_at_current_price(self, order: SimOrder, now: datetime) -> None:
        price = self.prices.get(order.symbol)
        if price is not None:
            self._match(order, price, now, is_fresh=True)

    def set_prices(self, prices: Mapping[str, Decimal], now: datetime) -> list[TradeUpdate]:
        """Record new prices and execute every order they reach, oldest order first."""
        for symbol, price in prices.items():
            if price <= ZERO:
                raise unprocessable(f"price must be > 0 for {symbol}", 40010001)
        for symbol, price in prices.items():
            self.lastday_prices.setdefault(symbol, price)
            self.prices[symbol] = price
            self.tape.record(symbol, price, now)
            waiting = [o for o in self._open_for(symbol) if o.is_working]
            for order in waiting:
                # An earlier execution in this loop may have canceled or filled this one;
                # ``_match`` skips orders that stopped working.
                self._match(order, price, now, is_fresh=False)
        for book in self.accounts.values():
            held = [symbol for symbol in prices if symbol in book.positions]
            if held:
                ledger.record_equity(book, self.prices, now, held)
        return self._drain()

    def _slice_qty(self, order: SimOrder, remaining: Decimal) -> Decimal:
        if not self.config.partial_fills:
            return remaining
        total = order.qty if order.qty is not None else order.target_qty
        assert total is not None
        slices = max(1, self.config.partial_fill_slices)
        if total == total.to_integral_value():
            size = max(Decimal(1), (total / slices).to_integral_value(rounding=ROUND_CEILING))
        else:
            size = (total / slices).quantize(QTY_PLACES, rounding=ROUND_CEILING)
        return min(size, remaining)

    def _match(self, order: SimOrder, price: Decimal, now: datetime, is_fresh: bool) -> None:
        if not order.is_working:
            return
        fill_price = execution_price(order, price, is_fresh)
        if fill_price is None:
            return
        if order.target_qty is None and order.notional is not None:
            order.target_qty = (order.notional / fill_price).quantize(QTY_PLACES, ROUND_DOWN)
        remaining = order.remaining_qty
        assert remaining is not None
        if remaining <= ZERO or not self._has_funds(order, remaining, fill_price):
            self._reject(order, now)
            return
        self._execute(order, self._slice_qty(order, remaining), fill_price, now)

    def _has_funds(self, order: SimOrder, qty: Decimal, price: Decimal) -> bool:
        """Check buying power deferred from submission (no price then), once, at the fill price."""
        if not order.needs_funds_check:
            return True
        order.needs_funds_check = False
        others = (o for o in self.open_orders(order.account) if o.id != order.id)
        book = self.accounts[order.account]
        try:
            check_order_allowed(book, others, self.prices, order.symbol, order.side, qty, None, price)
        except SimError:
            return False
        return True

    def _reject(self, order: SimOrder, now: datetime) -> None:
        """Reject an accepted order (Alpaca's asynchronous ``rejected``); its held legs go too."""
        order.status = "rejected"
        order.failed_at = now
        order.updated_at = now
        self._emit("rejected", order, now)
        for leg_id in order.leg_ids:
            if self.orders[leg_id].status == "held":
                self._cancel_one(self.orders[leg_id], now)

    def _execute(self, order: SimOrder, qty: Decimal, price: Decimal, now: datetime) -> None:
        book = self.accounts[order.account]
        before = book.positions.get(order.symbol)
        is_short = order.side == "sell" and (before is None or before.qty <= ZERO)
        signed_qty = qty if order.side == "buy" else -qty
        position_qty = ledger.apply_fill(book, order.symbol, signed_qty, price)
        order.filled_qty += qty
        order.filled_value += qty * price
        order.updated_at = now
        is_done = order.remaining_qty == ZERO
        order.status = "filled" if is_done else "partially_filled"
        if is_done:
            order.filled_at = now
        execution_id = self.new_id()
        self._emit("fill" if is_done else "partial_fill", order, now, (execution_id, price, qty, position_qty))
        insert_activity(book.activities, fill_activity(order, execution_id, qty, price, is_short, now))
        ledger.record_equity(book, self.prices, now, (order.symbol,))
        if order.oco_group is not None:
            self._cancel_group_siblings(order, now)
        if is_done and order.order_class in {"bracket", "oto"} and order.parent_id is None:
            self._activate_legs(order, now)

    def _cancel_group_siblings(self, order: SimOrder, now: datetime) -> None:
        for sibling in list(self.open_orders()):
            if sibling is not order and sibling.oco_group == order.oco_group and sibling.is_open:
                self._cancel_one(sibling, now, cascade=False)

    def _activate_legs(self, parent: SimOrder, now: datetime) -> None:
        legs = [self.orders[leg_id] for leg_id in parent.leg_ids]
        for leg in legs:
            if leg.status == "held":
                leg.status = "new"
                leg.updated_at = now
                if leg.type == "trailing_stop" and leg.symbol in self.prices:
                    follow_trail(leg, self.prices[leg.symbol])
                self._emit("new", leg, now)
        for leg in legs:
            self._match_at_current_price(leg, now)

    # ----- canceling, replacing, expiring

    def _cancel_one(self, order: SimOrder, now: datetime, event: str = "canceled", cascade: bool = True) -> None:
        if event == "expired":
            order.status = "expired"
            order.expired_at = now
        else:
            order.status = "canceled"
            order.canceled_at = now
        order.updated_at = now
        self._emit(event, order, now)
        if not cascade:
            return
        for leg_id in order.leg_ids:
            leg = self.orders[leg_id]
            if leg.status == "held" or (leg.is_open and order.order_class == "oco"):
                self._cancel_one(leg, now, event)

    def cancel_order(self, account: str, order_id: str, now: datetime) -> list[TradeUpdate]:
        """Cancel one open order (and its held legs); 422 when it is no longer cancelable."""
        order = self.find_order(account, order_id)
        if not order.is_open:
            raise unprocessable("order is not cancelable")
        self._cancel_one(order, now)
        return self._drain()

    def cancel_all_orders(self, account: str, now: datetime) -> tuple[list[SimOrder], list[TradeUpdate]]:
        """Cancel every open order of ``account``; return the orders canceled."""
        canceled: list[SimOrder] = []
        for order in list(self.open_orders(account)):
            if order.is_open:
                self._cancel_one(order, now)
                canceled.append(order)
        return canceled, self._drain()

    def expire_orders(self, now: datetime) -> list[TradeUpdate]:
        """Expire every open order whose ``expires_at`` has passed."""
        for order in list(self.open_orders()):
            if order.is_open and order.expires_at is not None and order.expires_at <= now:
                self._cancel_one(order, now, "expired")
        return self._drain()

    def replace_order(
        self, account: str, order_id: str, body: Mapping[str, object], now: datetime
    ) -> tuple[SimOrder, list[TradeUpdate]]:
        """Replace an open order by a new one (``replaces``/``replaced_by``); return the new one."""
        old = self.find_order(account, order_id)
        change = parse_replace_request(body)
        if not old.is_open or old.status == "pending_replace":
            raise unprocessable("order is not replaceable")
        if old.notional is not None:
            raise unprocessable("notional orders cannot be replaced")
        if change.limit_price is not None and old.type not in {"limit", "stop_limit"}:
            raise unprocessable("limit_price can only be replaced on limit orders")
        if change.stop_price is not None and old.type not in {"stop", "stop_limit"}:
            raise unprocessable("stop_price can only be replaced on stop orders")
        if change.trail is not None and old.type != "trailing_stop":
            raise unprocessable("trail can only be replaced on trailing stop orders")
        self._check_client_order_id(account, change.client_order_id)
        qty = change.qty or old.remaining_qty
        assert qty is not None
        if old.is_working:
            # The successor takes the old order's place, including in its OCO group.
            others = (
                o
                for o in self.open_orders(account)
                if o.id != old.id and (old.oco_group is None or o.oco_group != old.oco_group)
            )
            check_order_allowed(
                self.accounts[account],
                others,
                self.prices,
                old.symbol,
                old.side,
                qty,
                None,
                change.limit_price
                or change.stop_price
                or old.limit_price
                or old.stop_price
                or self.prices.get(old.symbol),
            )
        new = self._successor(old, qty, change.time_in_force, now, change.client_order_id)
        new.limit_price = change.limit_price or old.limit_price
        new.stop_price = change.stop_price or old.stop_price
        if change.trail is not None:
            new.trail_price = change.trail if old.trail_price is not None else None
            new.trail_percent = change.trail if old.trail_percent is not None else None
            new.stop_price = None
            new.hwm = None
            if new.symbol in self.prices:
                follow_trail(new, self.prices[new.symbol])
        old.status = "replaced"
        old.replaced_at = now
        old.replaced_by = new.id
        old.updated_at = now
        self._emit("replaced", old, now)
        self._emit("new", new, now)
        self._match_at_current_price(new, now)
        return new, self._drain()

    def _successor(
        self,
        old: SimOrder,
        qty: Decimal,
        time_in_force: str | None,
        now: datetime,
        client_order_id: str | None,
    ) -> SimOrder:
        self._sequence += 1
        tif = time_in_force or old.time_in_force
        new = successor_of(
            old,
            self.new_id(),
            client_order_id or self.new_id(),
            qty=qty,
            time_in_force=tif,
            expires_at=self._expires_at(tif, now),
            sequence=self._sequence,
            now=now,
        )
        self._register(new)
        for leg_id in new.leg_ids:
            self.orders[leg_id].parent_id = new.id
        if old.parent_id is not None:
            parent = self.orders[old.parent_id]
            parent.leg_ids = [new.id if i == old.id else i for i in parent.leg_ids]
        return new

    # ----- positions and cash

    def close_position(
        self,
        account: str,
        symbol: str,
        qty: Decimal | None,
        percentage: Decimal | None,
        now: datetime,
    ) -> tuple[SimOrder, list[TradeUpdate]]:
        """Submit the market order that closes all or part of a position; 404 when flat."""
        book = self.account(account)
        position = book.positions.get(symbol)
        if position is None:
            raise not_found("position does not exist")
        size = abs(position.qty)
        if percentage is not None:
            if not ZERO < percentage <= HUNDRED:
                raise unprocessable("percentage must be between 0 and 100", 40010001)
            size = (size * percentage / HUNDRED).quantize(QTY_PLACES, ROUND_DOWN)
        elif qty is not None:
            size = qty
        body: dict[str, object] = {
            "symbol": symbol,
            "qty": str(size),
            "side": "sell" if position.qty > ZERO else "buy",
            "type": "market",
            "time_in_force": "gtc" if is_crypto(symbol) else "day",
        }
        return self.submit_order(account, body, now)

    def post_activity(self, account: str, body: Mapping[str, object], now: datetime) -> dict[str, object]:
        """Book a non-trade activity (dividend, fee, journal, deposit) and move cash by it.

        A body whose ``id`` is already booked is a correction: ``"status": "canceled"`` or a
        new ``net_amount`` replaces the activity (a canceled FILL is a bust: its execution is
        reversed in the position and cash).
        """
        book = self.account(account)
        known = book.activities.find(str(body["id"])) if isinstance(body.get("id"), str) else None
        if known is not None:
            return self._correct_activity(book, known, body, now)
        activity = cash_activity(body, self.new_id(), now)
        insert_activity(book.activities, activity)
        book.cash += cash_effect(activity)
        self._coin_fee(book, activity)
        ledger.record_equity(book, self.prices, now)
        return activity

    @staticmethod
    def _coin_fee(book: SimAccount, activity: Mapping[str, object]) -> None:
        """A CFEE in the coin (``qty`` < 0, ``net_amount`` 0) takes the coins out of the position.

        Alpaca charges a crypto buy's fee in the coin received and posts it as such a CFEE at the
        end of the day (docs/corporate-actions.md "Crypto fees in the coin"); the position's cost
        stays, so its average entry price rises.
        """
        if activity["activity_type"] != "CFEE" or Decimal(str(activity["net_amount"])) != ZERO:
            return
        qty = Decimal(str(activity.get("qty") or 0))
        symbol = str(activity.get("symbol") or "")
        position = book.positions.get(book_symbol(symbol, book.positions))
        if qty >= ZERO or position is None or position.qty + qty <= ZERO:
            return
        cost = position.qty * position.avg_entry_price
        position.qty += qty
        position.avg_entry_price = (cost / position.qty).quantize(ledger.PRICE_PLACES)

    def _correct_activity(
        self, book: SimAccount, known: dict[str, object], body: Mapping[str, object], now: datetime
    ) -> dict[str, object]:
        status = body.get("status")
        if status not in {None, "canceled", "correct", "executed"}:
            raise unprocessable(f"invalid status: {status!r}", 40010001)
        if known.get("status") == "canceled":
            raise unprocessable(f"activity already canceled: {known['id']!r}", 40010001)
        if known["activity_type"] == "FILL":
            if status != "canceled":
                raise unprocessable("a FILL can only be canceled (busted)", 40010001)
            busted = {**known, "status": "canceled"}
            book.activities.replace(busted)
            sign = Decimal(1) if known["side"] == "buy" else Decimal(-1)
            qty = Decimal(str(known["qty"]))
            ledger.apply_fill(book, str(known["symbol"]), -sign * qty, Decimal(str(known["price"])))
            ledger.record_equity(book, self.prices, now)
            return busted
        merged = {**known, **{k: v for k, v in body.items() if k != "id"}}
        merged.setdefault("status", "executed")
        if status is None:
            merged["status"] = "correct"
        corrected = cash_activity(merged, self.new_id(), now)
        corrected["id"] = known["id"]
        corrected["date"] = known["date"]
        book.activities.replace(corrected)
        book.cash += cash_effect(corrected) - cash_effect(known)
        ledger.record_equity(book, self.prices, now)
        return corrected

    # ----- corporate actions

    def corporate_action(
        self, body: object, now: datetime
    ) -> tuple[str, list[dict[str, object]], list[TradeUpdate]]:
        """Book a corporate action in every account holding its symbol; return its id, the legs
        listed and the updates (``sim/corporate.py`` says which body and which legs).

        Open orders on the symbol are canceled first (as Alpaca does before the ex-date).
        """
        action = parse_corporate_action(body, now)
        action_id = self.new_id()
        for order in list(self.open_orders()):
            if order.symbol == action.symbol and order.is_open:
                self._cancel_one(order, now)
        bookings: dict[str, Booking] = {}
        for name, book in self.accounts.items():
            position = book.positions.get(action.symbol)
            if position is None:
                continue
            booking = book_action(action, position, book.positions, self.prices, self.new_id)
            booking.before = {s: book.positions.get(s) for s in booking.positions}
            bookings[name] = booking
        self._prices_before[action_id] = {s: self.prices[s] for s in action.symbols() if s in self.prices}
        self._reprice(action)
        self.corporate[action_id] = (action, bookings)
        self.announcements[action_id] = (action, announcement(action, action_id))
        listed: list[dict[str, object]] = []
        for name, booking in bookings.items():
            if action.position != "after_legs":
                self._apply_position(self.accounts[name], booking, now)
            if action.position != "before_legs":
                listed += self._list_legs(self.accounts[name], booking)
        return action_id, listed, self._drain()

    def complete_corporate_action(self, action_id: str, now: datetime) -> list[dict[str, object]]:
        """Show the half of an action its ``position`` timing held back; return the legs listed."""
        _, bookings = self._corporate(action_id)
        listed: list[dict[str, object]] = []
        for name, booking in bookings.items():
            self._apply_position(self.accounts[name], booking, now)
            listed += self._list_legs(self.accounts[name], booking)
        return listed

    def cancel_corporate_action(
        self, action_id: str, rebook: object, now: datetime
    ) -> tuple[list[dict[str, object]], str | None]:
        """Cancel an action (its legs listed again as ``canceled``, positions and cash as before)
        and, with ``rebook``, book that body as a new action; return the canceled legs and its id.

        The positions are put back as they were before the action: the fake assumes no trade
        in its symbols in between (a test that trades there cancels before it trades).
        """
        if rebook is not None:
            parse_corporate_action(rebook, now)  # 400 before anything changes
        action, bookings = self._corporate(action_id)
        canceled: list[dict[str, object]] = []
        for name, booking in bookings.items():
            book = self.accounts[name]
            if booking.legs_listed:
                for leg in booking.legs:
                    book.activities.replace({**leg, "status": "canceled"})
                    canceled.append({**leg, "status": "canceled"})
            if booking.position_applied:
                for symbol, position in booking.before.items():
                    if position is None:
                        book.positions.pop(symbol, None)
                    else:
                        book.positions[symbol] = position
                book.cash -= booking.cash
                ledger.record_equity(book, self.prices, now)
        del self.corporate[action_id]
        self.announcements.pop(action_id, None)
        if action.type in {"forward_split", "reverse_split"}:
            self.prices.update(self._prices_before.pop(action_id, {}))
        new_id = self.corporate_action(rebook, now)[0] if rebook is not None else None
        return canceled, new_id

    def corporate_announcements(self) -> list[tuple[CorporateAction, dict[str, object]]]:
        """Return every action booked and not canceled, with its announcement, in booking order."""
        return list(self.announcements.values())

    def _corporate(self, action_id: str) -> tuple[CorporateAction, dict[str, Booking]]:
        try:
            return self.corporate[action_id]
        except KeyError as e:
            raise not_found(f"corporate action not found: {action_id}") from e

    def _reprice(self, action: CorporateAction) -> None:
        old_price = self.prices.get(action.symbol)
        if old_price is None:
            return
        if action.type in {"forward_split", "reverse_split"}:
            self.prices[action.symbol] = old_price / action.shares_per_share
            if action.symbol in self.lastday_prices:
                self.lastday_prices[action.symbol] /= action.shares_per_share
        elif action.type in {"name_change", "stock_merger", "stock_and_cash_merger"} and action.new_symbol:
            self.prices.setdefault(action.new_symbol, old_price / action.shares_per_share)

    def _apply_position(self, book: SimAccount, booking: Booking, now: datetime) -> None:
        if booking.position_applied:
            return
        booking.position_applied = True
        for symbol, position in booking.positions.items():
            if position is None or position.qty == ZERO:
                book.positions.pop(symbol, None)
            else:
                book.positions[symbol] = position
        book.cash += booking.cash
        ledger.record_equity(book, self.prices, now)

    @staticmethod
    def _list_legs(book: SimAccount, booking: Booking) -> list[dict[str, object]]:
        if booking.legs_listed:
            return []
        booking.legs_listed = True
        for leg in booking.legs:
            insert_activity(book.activities, leg)
        return list(booking.legs)
