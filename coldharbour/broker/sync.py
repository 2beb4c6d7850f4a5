"""Pull one account's truth from REST and publish it for ``state`` (the ``snapshot`` program).

``AccountSync`` keeps two cursors, in memory only (a restart backfills again; ``state`` is
idempotent, so re-sent history changes nothing):

- **orders**: the newest ``submitted_at`` seen (Alpaca's ``after`` filter compares
  ``submitted_at``, which precedes ``created_at`` by 1-170 ms, so an order can appear in the
  listing after a later-submitted one: the next read starts ``ORDER_OVERLAP_NS`` before the
  cursor). Alpaca can only filter orders by submission time, not by change time, so "orders
  changed since the cursor" is the union of (a) orders submitted after the cursor (paged,
  never truncated, docs/defects.md D40), (b) the open orders, listed on every full snapshot, and (c) the
  families of orders that were open last time and are not any more, fetched by id
  (``nested=true``): an order can only change while it is open, so nothing that changed is
  missed and nothing older is re-read;
- **fills**: ``(transaction_time, id)`` of the newest FILL seen; the next read asks ``after``
  ``FILL_OVERLAP_NS`` before that time and drops the ids already published in the window, so a
  late FILL stamped in the same millisecond with a smaller id is never skipped (a ``page_token``
  cursor would skip it: ids sort by time, then by a random suffix).

- **corporate actions**: the SPLIT/SC/NC/MA/SPIN/CIL/REORG legs of the last week (they are
  booked by business date, sometimes late), re-read whole each time, one code per request (a
  code the broker refuses is logged once, counted, shown in the heartbeat's details for
  ``chmgr doctor`` and never stops the others), and turned into actions
  (``corporate.actions_from_legs``); each action is published once (``CorporateActionsPage``).

Order of publication in a full snapshot: order pages, fill pages, corporate actions, then
``SnapshotTaken``, so ``state`` already has the history that explains the positions when it
reconciles (docs/spec.md §3); positions are read *before* that history, so the history covers them.
``rewind()`` resets the cursors when ``state`` may have missed pages (its start, a bus gap, a failed commit).
A partial snapshot (``symbols``) only fetches those symbols' positions: it is the fast WAC
refresh after a fill, always one request (``GET /v2/positions/{symbol}`` for one symbol, else
one ``GET /v2/positions`` filtered to them), made by the ``urgent`` client of the key's budget.

Stream payloads instead of reads (docs/broker-budget.md): ``note_update`` records the orders the
trade_updates stream reported final (``OrderUpdated`` on the bus, the same facts ``state``
applies). A family that left the open list is read by id only if one of its orders that were
open has *not* been reported final that way: a seen report is evidence, a missing one is not.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from coldharbour.broker.convert import (
    CORPORATE_READ,
    AccountFigures,
    ConvertedActivity,
    ConvertedOrder,
    Rejected,
    convert_account,
    convert_activity,
    convert_orders,
    convert_position,
    position_symbol,
    screen_announcements,
)
from coldharbour.broker.listener import Sink
from coldharbour.broker.reads import read_daily_closes
from coldharbour.broker.rest import BrokerRefused, BrokerRest
from coldharbour.broker.validate import OnceLog
from coldharbour.domain.corporate import (
    ANNOUNCEMENT_MATCH_DAYS,
    CORPORATE_CODES,
    LEG_WINDOW_NS,
    ActionLeg,
    ActionProblem,
    Announcement,
    CorporateAction,
    actions_from_legs,
    announced_dividend,
    announced_removal,
    check_announced,
    corporate_legs,
    ex_date_closes,
    is_allocated,
    is_lone_leg,
    legs_of,
    parse_announcements,
    retime_legs,
    spinoff_announcement,
    spinoff_by_announcement,
)
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.schedule import NEW_YORK
from coldharbour.domain.types import NS_PER_DAY, BrokerPosition, Fill, Order
from coldharbour.errors import BrokerError
from coldharbour.messages import (
    CorporateActionsPage,
    FillsPage,
    OrdersPage,
    SnapshotTaken,
    topic_fills,
    topic_orders,
    topic_snapshot,
)

log = logging.getLogger(__name__)

PROGRESS_LOG_INTERVAL_S: Final = 5.0
PARTIAL_LIST_FROM: Final = 2  # a partial snapshot of this many symbols or more reads the whole position list
# Re-read windows behind the cursors (docs/spec.md §8 history cursors). Orders: > the 170 ms an order
# can take from ``submitted_at`` to being listed. Fills: late FILLs with an older stamp.
ORDER_OVERLAP_NS: Final = 1_000_000_000
FILL_OVERLAP_NS: Final = 5_000_000_000
# A bust (a FILL whose status turns ``canceled``) can come long after the fill: every
# BUST_SWEEP_EVERY full snapshots the FILLs of the last BUST_LOOKBACK_NS are read again and each
# newly canceled one is published once as a bust (docs/spec.md §8 "Corrections").
BUST_SWEEP_EVERY: Final = 10
BUST_LOOKBACK_NS: Final = 3 * NS_PER_DAY
# Corporate-action legs are booked by business date, sometimes days late: re-read a week.
CORPORATE_OVERLAP_NS: Final = 7 * NS_PER_DAY
# Announcements (docs/corporate-actions.md "Announcements"): legs wait this long for theirs, then
# are booked on their own stamps; an announced action keeps its symbols pending this many days
# after it took effect while its legs are not listed; announcements are read this far back.
ANNOUNCEMENT_WAIT_NS: Final = NS_PER_DAY
LEGS_WAIT_DAYS: Final = 3
ANNOUNCEMENT_PAGES: Final = 10  # pages of 1,000 read at most (a truncated list only makes legs wait)
ANNOUNCEMENT_LOOKBACK_DAYS: Final = 14
# A REORG shares-out leg alone is a worthless removal (an exit at 0) once it was first read this
# long ago: a redemption's cash leg is listed with it, not an hour later (docs/corporate-actions.md).
REMOVAL_SETTLE_NS: Final = 3600 * 1_000_000_000
# A spin-off's default allocation waits for both symbols' daily closes of the ex-date (or the
# first session after it on which both closed, read up to SPINOFF_CLOSE_DAYS after it) this long
# from when its leg was first read, then goes out unallocated: held, ``chmgr corporate basis``
# books it (docs/corporate-actions.md "Spin-offs").
SPINOFF_CLOSES_WAIT_NS: Final = 5 * NS_PER_DAY
SPINOFF_CLOSE_DAYS: Final = 7
# What a pending symbol waits for, per leg code (docs/corporate-actions.md "Pending").
_LEG_TYPES: Final = {"SPLIT": "split", "SSP": "split", "NC": "name_change", "SC": "name_change", "MA": "merger",
                     "REORG": "removal", "SPIN": "spin_off", "SSO": "spin_off", "CIL": "cash_in_lieu"}  # fmt: skip
PENDING_SHOWN: Final = 20  # pending actions named in the heartbeat (the dashboard's panel) at most


class AccountSync:
    """One account's snapshots, history pulls and backfill, with their cursors."""

    def __init__(
        self,
        rest: BrokerRest,
        sink: Sink,
        counters: Counter[str],
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        details: dict[str, str] | None = None,
        announcements: BrokerRest | None = None,
        bars: BrokerRest | None = None,
    ) -> None:
        self.slug = rest.slug
        self._rest = rest
        self._urgent = rest.urgent()  # the position refresh after a fill goes before background reads
        self._sink = sink
        self.counters = counters
        self._clock_ns = clock_ns
        self._reject_log = OnceLog()
        self.order_cursor_ns: int | None = None
        self.fill_cursor_ns: int | None = None
        # FILL ids already published whose time is within FILL_OVERLAP_NS of the cursor ->
        # (time, status): one re-read with another status (a bust) is published again.
        self._recent_fill_ids: dict[str, tuple[int, str | None]] = {}
        self._fulls = 0
        self._swept_busts: set[str] = set()  # FILL ids already published as busted by a sweep
        self.corporate_cursor_ns: int | None = None
        self._published_actions: set[str] = set()
        self._published_legs: dict[str, str | None] = {}  # leg id -> the status published
        self._sent_canceled: set[str] = set()  # canceled leg ids sent as canceled actions
        self._first_seen: dict[str, int] = {}  # leg id -> when it was first read (clock ns)
        # The data API's corporate-actions announcements (``/v1``); None: book on the legs' stamps.
        self._announcements = announcements
        # The data API's daily bars (``/v2/stocks/bars``): a spin-off's ex-date closes. None: none read.
        self._bars = bars
        self.pending_symbols: tuple[str, ...] = ()  # symbols an action is under way for (not reconciled)
        # Symbols the broker listed at this and the last full snapshot (whose announcements are read).
        self._held: set[str] = set()
        self._held_before: set[str] = set()
        # The announcements read last (a spin-off's parent and rates) and the broker's last price
        # of each position read at this full snapshot (the spin-off's default allocation).
        self._announced: list[Announcement] = []
        self._held_by_rates: frozenset[str] = frozenset()  # symbols of announcements with absurd rates
        self._reported_legs: set[str] = set()
        # Why each pending symbol waits (the dashboard's panel): symbol -> (type, effective date, waits for).
        self._pending_why: dict[str, tuple[str, str, str]] = {}
        self._quantities: dict[str, Decimal] = {}  # the broker's position per symbol at this full snapshot
        self._reported_mismatches: set[str] = set()  # action ids whose disagreement was logged
        # Heartbeat details (``chmgr doctor``): the corporate codes the broker refused last read.
        self._details = details if details is not None else {}
        self.refused_codes: dict[str, int] = {}  # code -> HTTP status of its last refusal
        self._fill_floor_ns = clock_ns()
        # Every order that was live at the last full snapshot -> its top-level order id.
        self._open_families: dict[str, str] = {}
        # Orders the trade stream reported final since (or during) the last full snapshot.
        self._stream_final: set[str] = set()
        self.backfilled = False
        # A still account (docs/scaling.md "snapshot"): the last full snapshot, and the one before
        # it, found nothing held, nothing open, the same cash and equity and nothing new.
        self.still = False
        self.full_started_ns: int | None = None  # when the last full snapshot began (UTC ns)
        self._still_figures: AccountFigures | None = None

    # --- backfill -----------------------------------------------------------------------------

    async def backfill(self, days: int) -> None:
        """Publish ``days`` of order history and FILL activities, oldest first, logging progress."""
        started = time.monotonic()
        since = self._clock_ns() - days * NS_PER_DAY
        self._fill_floor_ns = since
        log.info("backfill started account=%s days=%d", self.slug, days)
        orders = await self._publish_orders(self._rest.order_pages("all", since), is_backfill=True)
        fills = await self._publish_fills(after_ns=since, is_backfill=True)
        await self._publish_corporate(after_ns=since)
        self.backfilled = True
        log.info(
            "backfill done account=%s orders=%d fills=%d seconds=%.1f",
            self.slug, orders, fills, time.monotonic() - started,
        )  # fmt: skip

    # --- snapshots ----------------------------------------------------------------------------

    def rewind(self) -> None:
        """Forget the cursors: the next full snapshot re-sends the history since the backfill floor.

        For when ``state`` may have missed pages already sent (it started after them, or the bus
        lost some): the cursors only say what was *published*, not what ``state`` received.
        """
        self.order_cursor_ns = None
        self.fill_cursor_ns = None
        self._recent_fill_ids.clear()
        self.corporate_cursor_ns = None
        self._published_actions.clear()
        self._published_legs.clear()
        self._sent_canceled.clear()
        self.counters["rewinds"] += 1

    async def full(self, reason: str) -> None:
        """Read positions/account, then open orders and history since the cursors; publish them."""
        taken_at = self.full_started_ns = self._clock_ns()
        self.still = False  # until this one is read whole
        orders_before = self.order_cursor_ns
        # Positions first: every fill they reflect is then in the history read after them, so
        # ``state`` never reconciles against a position its pages cannot explain yet (fills
        # newer than ``taken_at`` make it skip the symbol instead).
        positions, unknown = self._positions(await self._rest.positions())
        listed = {p.symbol for p in positions}
        self._held, self._held_before = self._held_before | listed, listed
        self._quantities = {p.symbol: p.qty for p in positions}
        figures = convert_account(await self._rest.account())
        open_raw = await self._rest.open_orders()
        open_orders = self._convert(open_raw)
        live = {item.order.id: (item.order.parent_id or item.order.id) for item in open_orders if item.order.is_live}
        gone_families = self._unexplained_families(live)
        await self._publish_orders(self._order_sources(gone_families), is_backfill=False)
        after = self._fill_floor_ns if self.fill_cursor_ns is None else self.fill_cursor_ns - FILL_OVERLAP_NS
        news = await self._publish_fills(after_ns=after, is_backfill=False)
        self._fulls += 1
        if self._fulls % BUST_SWEEP_EVERY == 0:
            news += await self._sweep_busts()
        corporate_after = self._fill_floor_ns if self.corporate_cursor_ns is None else self.corporate_cursor_ns
        news += await self._publish_corporate(after_ns=max(self._fill_floor_ns, corporate_after - CORPORATE_OVERLAP_NS))
        news += len(gone_families) + (self.order_cursor_ns != orders_before)
        if isinstance(figures, Rejected):
            self._reject("account", figures)
            cash = equity = buying_power = last_equity = None
        else:
            cash, equity = figures.cash, figures.equity
            buying_power, last_equity = figures.buying_power, figures.last_equity
        self._open_families = live
        self._stream_final &= live.keys()  # a report about an order still listed open stays useful
        flat = not positions and unknown == () and not open_orders and not self.pending_symbols
        figured = figures if flat and not isinstance(figures, Rejected) else None
        self.still = figured is not None and figured == self._still_figures and not news
        self._still_figures = figured
        if unknown is None:  # a position without a usable symbol: nothing unlisted is known flat
            self.counters["snapshots_withheld"] += 1
            log.warning("snapshot withheld account=%s: a position names no usable symbol", self.slug)
            return
        snapshot = SnapshotTaken(
            account=self.slug,
            taken_at=taken_at,
            positions=tuple(positions),
            open_orders=tuple(item.order for item in open_orders),
            open_orders_json=tuple(item.json for item in open_orders),
            cash=cash,
            equity=equity,
            reason=reason,
            unknown_symbols=unknown,
            buying_power=buying_power,
            last_equity=last_equity,
            pending_symbols=self.pending_symbols,
        )
        self._sink.publish(topic_snapshot(self.slug), snapshot)
        self.counters["snapshots"] += 1
        log.debug("snapshot published account=%s reason=%s positions=%d", self.slug, reason, len(positions))

    def note_update(self, order: Order, legs: Iterable[Order] = ()) -> None:
        """Record the orders a trade_updates event shows final (see the module docstring)."""
        for item in (order, *legs):
            if not item.is_live:
                self._stream_final.add(item.id)

    def _unexplained_families(self, live: Mapping[str, str]) -> list[str]:
        """Return the families that left the open list and that the stream did not report final."""
        gone: dict[str, list[str]] = {}
        for order_id, top in self._open_families.items():
            if order_id not in live:
                gone.setdefault(top, []).append(order_id)
        unexplained = sorted(top for top, ids in gone.items() if not all(i in self._stream_final for i in ids))
        self.counters["order_reads_saved_by_stream"] += len(gone) - len(unexplained)
        return unexplained

    async def wait_partial_turn(self) -> None:
        """Wait until the budget can serve a partial snapshot (the symbols asked meanwhile join it)."""
        await self._urgent.wait_ready()

    async def partial(self, symbols: Sequence[str]) -> None:
        """Publish the positions of ``symbols`` only (a symbol absent from it is flat)."""
        taken_at = self._clock_ns()
        wanted = tuple(sorted({s.upper() for s in symbols}))
        if len(wanted) >= PARTIAL_LIST_FROM:  # one request, not one per symbol (docs/broker-budget.md)
            listed, unknown = self._positions(await self._urgent.positions())
            positions = [p for p in listed if p.symbol in wanted]
        else:
            raw = [await self._urgent.position(symbol) for symbol in wanted]
            positions, unknown = self._positions([item for item in raw if item is not None])
        # A refused row without a usable symbol may be any of them: every wanted one not listed is unknown.
        listed_symbols = {p.symbol for p in positions}
        unknown_wanted = tuple(s for s in wanted if s not in listed_symbols) if unknown is None \
            else tuple(s for s in unknown if s in wanted)  # fmt: skip
        snapshot = SnapshotTaken(
            account=self.slug, taken_at=taken_at, positions=tuple(positions), symbols=wanted, reason="fill",
            unknown_symbols=unknown_wanted, pending_symbols=tuple(s for s in self.pending_symbols if s in wanted),
        )
        self._sink.publish(topic_snapshot(self.slug), snapshot)
        self.counters["partial_snapshots"] += 1

    # --- history ------------------------------------------------------------------------------

    async def _order_sources(self, families: Sequence[str]) -> AsyncIterator[list[Any]]:
        """Yield raw order pages: families that left the open list, then orders after the cursor."""
        if families:
            yield [await self._rest.order(order_id) for order_id in families]
        # Overlap the cursor: ``after`` is exclusive, equal timestamps are common, and an order is
        # listed up to 170 ms after its ``submitted_at``.
        after = self._fill_floor_ns if self.order_cursor_ns is None else self.order_cursor_ns - ORDER_OVERLAP_NS
        async for page in self._rest.order_pages("all", after):
            yield page

    async def _publish_orders(self, pages: AsyncIterator[list[Any]], *, is_backfill: bool) -> int:
        """Publish each page as an ``OrdersPage`` (the last one marked); return the order count."""
        total, pending, newest = 0, None, self.order_cursor_ns
        last_log = time.monotonic()
        async for raw in pages:
            converted = self._convert(raw)
            if pending is not None:
                self._send_orders(pending, is_last=False, is_backfill=is_backfill)
            pending = converted
            total += len(converted)
            newest = max([newest or 0, *(_submitted(item) for item in converted)]) or None
            if is_backfill and time.monotonic() - last_log >= PROGRESS_LOG_INTERVAL_S:
                last_log = time.monotonic()
                log.info("backfill progress account=%s orders=%d", self.slug, total)
        self._send_orders(pending or [], is_last=True, is_backfill=is_backfill)
        self.order_cursor_ns = newest
        return total

    def _send_orders(self, items: Sequence[ConvertedOrder], *, is_last: bool, is_backfill: bool) -> None:
        page = OrdersPage(
            account=self.slug,
            orders=tuple(item.order for item in items),
            orders_json=tuple(item.json for item in items),
            is_last=is_last,
            is_backfill=is_backfill,
        )
        self._sink.publish(topic_orders(self.slug), page)

    async def _publish_fills(self, *, after_ns: int, is_backfill: bool) -> int:
        """Publish FILL activities after ``after_ns`` not published yet; return the count."""
        total = 0
        read_at = self._clock_ns()
        pending: tuple[list[Fill], list[ActivityRecord], list[Fill]] | None = None
        async for raw in self._rest.activity_pages("FILL", after_ns=after_ns):
            converted = [c for c in self._activities(raw) if self._is_news(c.record)]
            fresh = [c.record for c in converted]
            fills = [c.fill for c in converted if c.fill is not None]
            busted = [c.busted for c in converted if c.busted is not None]
            if pending is not None:
                self._send_fills(*pending, is_last=False, is_backfill=is_backfill)
            pending = (fills, fresh, busted)
            total += len(fresh)
            for record in fresh:
                # Advance per page: a failure later re-reads from here, never from the start.
                self._remember_fill(record)
        # The last page goes out even empty: it carries how far the history is complete, and
        # "no page" would say nothing (absence is not evidence).
        self._send_fills(*(pending or ([], [], [])), is_last=True, is_backfill=is_backfill,
                         coverage=(after_ns, read_at, after_ns <= self._fill_floor_ns))
        return total

    async def _sweep_busts(self) -> int:
        """Publish, once each, the FILLs of the last ``BUST_LOOKBACK_NS`` the broker now lists as canceled."""
        records: list[ActivityRecord] = []
        busted: list[Fill] = []
        async for raw in self._rest.activity_pages("FILL", after_ns=self._clock_ns() - BUST_LOOKBACK_NS):
            for converted in self._activities(raw):
                if converted.busted is not None and converted.record.id not in self._swept_busts:
                    self._swept_busts.add(converted.record.id)
                    records.append(converted.record)
                    busted.append(converted.busted)
        self.counters["bust_sweeps"] += 1
        if busted:
            self.counters["busts_found_by_sweep"] += len(busted)
            log.info("busted fills found by the lookback account=%s count=%d", self.slug, len(busted))
            self._send_fills([], records, busted, is_last=True, is_backfill=False)
        return len(busted)

    async def _publish_corporate(self, *, after_ns: int) -> int:
        """Publish the corporate actions booked after ``after_ns`` not published yet (docs/spec.md §8).

        Every leg of the window is read again each time, so a pair split across two reads is
        still paired; an action is published once (by id). A leg that pairs with nothing is
        reported once, after ``LEG_WINDOW_NS`` (its partner may simply not be listed yet).
        """
        read_at = self._clock_ns()
        readable = [code for code in CORPORATE_READ if code not in self.refused_codes]
        records = await self._corporate_together(readable, after_ns)
        retried = [code for code in CORPORATE_READ if code in self.refused_codes] if records is not None else []
        if records is None:  # a code refused: read each alone, so that it stops only itself
            records, retried = [], list(CORPORATE_READ)
        for code in retried:
            records += await self._corporate_code(code, after_ns)
        # complete only when every code was read: a refused one hides its legs (absence is not evidence)
        complete = not any(code in self.refused_codes for code in CORPORATE_READ)
        now = self._clock_ns()
        self._first_seen = {r.id: self._first_seen.get(r.id, now) for r in records}  # the window's legs only
        if records:  # the cursor by the legs' own stamps (before an announcement re-times them)
            self.corporate_cursor_ns = max(self.corporate_cursor_ns or 0, *(r.transaction_time for r in records))
        self._pending_why = {}
        records = await self._when_announced(records, now)
        self._show_refused()
        legs_read = corporate_legs(records)

        def is_settled(leg: ActionLeg) -> bool:  # a lone leg: a worthless removal / stock dividend yet?
            first = self._first_seen.get(leg.id, now)
            announced = announced_removal(leg, self._announced) or announced_dividend(leg, self._announced)
            return announced or first <= now - REMOVAL_SETTLE_NS

        actions, problems = actions_from_legs(legs_read, settled=is_settled)
        problems = self._removals_waiting(legs_read, problems, is_settled)
        actions = await self._allocate_spinoffs(actions, now)
        fresh = [a for a in actions if a.id not in self._published_actions]
        fresh, withheld = self._against_announcements(fresh, legs_read, records)
        # A leg listed again as canceled cancels the action it formed (the broker's correction;
        # a re-booked action comes as new legs): sent once per pass until published, and again
        # after a rewind (``state`` ignores the ids it never booked).
        canceled = sorted({r.id for r in records if r.status == "canceled"} - self._sent_canceled)
        settled = self._clock_ns() - LEG_WINDOW_NS
        leg_times = {r.id: r.transaction_time for r in records}  # (or first read: a re-timed leg may be dated ahead)
        late = [p for p in problems if p.id not in self._reported_legs
                and min(leg_times.get(p.id, 0), self._first_seen.get(p.id, now)) < settled]
        for problem in late:
            self._reported_legs.add(problem.id)
            self.counters["corporate_problems"] += 1
            log.warning("corporate action leg not booked account=%s id=%s reason=%s", self.slug, problem.id,
                        problem.reason)  # fmt: skip
        legs = [r for r in records if self._published_legs.get(r.id) != r.status and r.id not in withheld]
        # Sent even empty: the page says how far the actions are complete (absence is not evidence).
        page = CorporateActionsPage(
            account=self.slug, actions=tuple(fresh), activities=tuple(legs),
            problems=tuple(f"{p.id}: {p.reason}" for p in late), canceled=tuple(canceled),
            complete_after_ns=after_ns, complete_to_ns=read_at if complete else None,
            is_from_floor=after_ns <= self._fill_floor_ns,
        )  # fmt: skip
        self._sink.publish(topic_fills(self.slug), page)
        self._published_actions |= {a.id for a in fresh}
        self._published_legs.update({r.id: r.status for r in legs})
        self._sent_canceled.update(canceled)
        self.counters["corporate_actions"] += len(fresh)
        self.counters["corporate_actions_canceled"] += len(canceled)
        self._show_pending()
        return len(fresh)

    def _removals_waiting(self, legs: Sequence[ActionLeg], problems: list[ActionProblem],
                          settled: Callable[[ActionLeg], bool]) -> list[ActionProblem]:
        """Keep the symbol of a lone REORG shares-out leg (or SPLIT shares-in leg) not settled yet
        pending (its cash leg or a split's other leg, or a worthless-removal or stock-dividend
        announcement, decides what it is: reconciled meanwhile, the broker's moved position would
        be booked as a MANUAL exit or a ``recon:`` lot) and do not report it as a leg without a partner."""
        unpaired = {p.id for p in problems}  # (a lone leg that is part of an action is not a problem)
        waiting = {leg.id: leg for leg in legs if is_lone_leg(leg) and leg.id in unpaired and not settled(leg)}
        for leg in waiting.values():
            why = ("removal", "its cash leg or a worthless-removal announcement (up to an hour)")
            if leg.code != "REORG":
                why = ("stock_dividend", "a split's other leg or a stock-dividend announcement (up to an hour)")
            self._pending_why.setdefault(leg.symbol, (why[0], _day(leg.ts), why[1]))
        return [p for p in problems if p.id not in waiting]

    def _against_announcements(
        self, fresh: list[CorporateAction], legs: Sequence[ActionLeg], records: Sequence[ActivityRecord]
    ) -> tuple[list[CorporateAction], set[str]]:
        """Return the actions whose legs agree with their announcement's rates, and the ids of the
        legs withheld (docs/corporate-actions.md "Rates against quantities").

        An action whose legs state other quantities than its announcement implies for the shares
        held is held whole: not published, its legs not stored, its symbols pending (not
        reconciled), counted (``corporate_mismatches``), logged once and shown
        (``corporate_mismatch_<account>``, ``chmgr doctor``, the dashboard) until the broker
        re-books it or the announcement changes.
        """
        out_qty = {r.id: -r.qty for r in records if r.qty is not None and r.qty < 0}
        kept: list[CorporateAction] = []
        withheld: set[str] = set()
        reasons: list[str] = []
        for action in fresh:
            held = self._quantities.get(action.symbol) if action.type == "spinoff" else out_qty.get(action.id)
            problem = check_announced(action, held, self._announced)
            if problem is None:
                kept.append(action)
                continue
            withheld |= {leg.id for leg in legs_of(action, legs)}
            reasons.append(f"{action.id}: {problem.reason}")
            for symbol in action.symbols:
                self._pending_why[symbol] = (action.type, _day(action.ts), "the broker's correction: " + problem.reason)
            if action.id not in self._reported_mismatches:
                self._reported_mismatches.add(action.id)
                log.warning("corporate action held: legs disagree with the announcement account=%s id=%s reason=%s",
                            self.slug, action.id, problem.reason)  # fmt: skip
        self.counters["corporate_mismatches"] = len(reasons)
        key = f"corporate_mismatch_{self.slug}"
        if reasons:
            self._details[key] = "; ".join(reasons)[:300]
        else:
            self._details.pop(key, None)
        return kept, withheld

    def _show_pending(self) -> None:
        """Publish the pending symbols and why each waits in the heartbeat's details (``chmgr
        doctor``'s ``corporate_held_<account>``, the dashboard's ``corporate_pending_<account>``)."""
        self.pending_symbols = tuple(sorted({*self.pending_symbols, *self._pending_why}))
        held, listed = f"corporate_held_{self.slug}", f"corporate_pending_{self.slug}"
        if not self.pending_symbols:
            self._details.pop(held, None)
            self._details.pop(listed, None)
            return
        self._details[held] = "pending: " + ",".join(self.pending_symbols)[:200]
        unknown = ("corporate action", "", "its legs or its announcement")
        shown = [{"symbol": s, "type": why[0], "effective": why[1], "waits_for": why[2]}
                 for s in self.pending_symbols[:PENDING_SHOWN] for why in [self._pending_why.get(s, unknown)]]
        self._details[listed] = json.dumps(shown, separators=(",", ":"))

    async def _allocate_spinoffs(self, actions: list[CorporateAction], now: int) -> list[CorporateAction]:
        """Return ``actions`` with each spin-off whose leg states no basis allocated by default, or
        left out while it waits (docs/corporate-actions.md "Spin-offs").

        The parent, the rates and the ex-date come from the spin_offs announcement, the two prices
        from the data API's daily bars: each symbol's close of the ex-date (``ex_date_closes``).
        Missing one (the ex-date not over, the bars not published or unreadable), the spin-off
        waits, its new symbol pending (not reconciled), up to ``SPINOFF_CLOSES_WAIT_NS`` from when
        its leg was first read; then it is published as it is (held, reported: ``chmgr corporate
        basis`` books it). The price the broker lists later is never used: it is not the ex-date's.
        """
        kept: list[CorporateAction] = []
        waiting: set[str] = set()
        for action in actions:
            bare = action.type == "spinoff" and action.price is None and not is_allocated(action)
            if not bare or action.id in self._published_actions:
                kept.append(action)
                continue
            closes = await self._ex_date_closes(action, now)
            allocated = spinoff_by_announcement(action, self._announced, closes) if closes else None
            if allocated is not None:
                kept.append(allocated)
                self.counters["spinoff_bases_allocated"] += 1
                log.info("spin-off allocated by default account=%s id=%s parent=%s parent_share=%s closes=%s",
                         self.slug, action.id, allocated.symbol, allocated.basis_share, closes)  # fmt: skip
            elif self._first_seen.get(action.id, now) > now - SPINOFF_CLOSES_WAIT_NS:
                waiting.add(action.new_symbol or action.symbol)
                self._pending_why[action.new_symbol or action.symbol] = (
                    "spin_off", _day(action.ts), "the announcement's rates and both ex-date closes")  # fmt: skip
            else:
                kept.append(action)  # waited long enough: held and reported by ``state``
        key = f"corporate_held_{self.slug}"
        if waiting:
            self.pending_symbols = tuple(sorted({*self.pending_symbols, *waiting}))
            self._details[key] = "pending: " + ",".join(self.pending_symbols)[:200]
        elif not self.pending_symbols:
            self._details.pop(key, None)
        self.counters["spinoffs_waiting"] = len(waiting)
        return kept

    async def _ex_date_closes(self, action: CorporateAction, now: int) -> dict[str, Decimal] | None:
        """Return the parent's and the new shares' daily closes of the spin-off's ex-date (or of the
        first session after it on which both closed), or None while they are not known."""
        found = spinoff_announcement(action, self._announced)
        today = datetime.fromtimestamp(now / 1e9, tz=NEW_YORK).date()
        if found is None or self._bars is None or found.effective >= today:  # the ex-date's close comes after it
            return None
        last = min(found.effective + timedelta(days=SPINOFF_CLOSE_DAYS), today - timedelta(days=1))
        try:
            closes = await read_daily_closes(self._bars, found.symbols, found.effective, last, self.counters,
                                             account=self.slug)  # fmt: skip
        except BrokerError as e:  # unreadable: the spin-off waits (absence is not evidence)
            self.counters["spinoff_closes_failed"] += 1
            log.warning("spin-off ex-date closes unreadable account=%s id=%s: %s", self.slug, action.id, e)
            return None
        return ex_date_closes(closes, found.symbols, found.effective, today)

    async def _when_announced(self, records: list[ActivityRecord], now: int) -> list[ActivityRecord]:
        """Return the legs to book, each at the instant its announcement says the action takes
        effect (``corporate.retime_legs``); set ``pending_symbols`` (docs/corporate-actions.md
        "Announcements").

        A leg no announcement explains waits ``ANNOUNCEMENT_WAIT_NS`` from when it was first
        read (the announcement may be late, or the data API unreachable), then is booked on its
        own stamp. An action announced effective from ``LEGS_WAIT_DAYS`` ago to the next weekday
        whose legs are not listed yet keeps its symbols pending too: the broker may have changed
        the position first.
        Pending symbols are not reconciled (``SnapshotTaken.pending_symbols``) and are shown.
        """
        if self._announcements is None:
            self.pending_symbols = ()  # (a spin-off waiting for its allocation adds its symbol)
            return records
        today = datetime.fromtimestamp(now / 1e9, tz=NEW_YORK).date()
        legs = [r for r in records if r.activity_type in CORPORATE_CODES and r.activity_type != "CFEE" and r.symbol]
        symbols = sorted({r.symbol for r in legs if r.symbol} | self._held)
        # one data-API request a full snapshot (docs/broker-budget.md): an action announced
        # before its legs are listed must be seen at once (the position may move first)
        announced = await self._read_announcements(symbols, today)
        self._announced = announced if announced is not None else self._announced
        waiting: list[ActivityRecord] = []
        if announced is None:  # every leg waits (bounded) as if none were announced yet
            matched, unexplained = [r for r in records if r not in legs], legs
        else:
            matched, unexplained = self._hold_on_rates(retime_legs(records, announced), waiting)
            for record in waiting:  # (held on absurd announced rates)
                self._pending_why[record.symbol or ""] = (
                    _LEG_TYPES.get(record.activity_type, record.activity_type), _day(record.transaction_time),
                    "usable rates: its announcement's are absurd")  # fmt: skip
        for record in unexplained:
            if self._first_seen.get(record.id, now) > now - ANNOUNCEMENT_WAIT_NS:
                waiting.append(record)
                self._pending_why[record.symbol or ""] = (
                    _LEG_TYPES.get(record.activity_type, record.activity_type), _day(record.transaction_time),
                    "its announcement (up to a day)")  # fmt: skip
            else:
                matched.append(record)  # waited long enough: booked on its own stamp
        pending = {r.symbol for r in waiting if r.symbol}
        if announced is not None:
            explained = {r.symbol for r in legs if r not in unexplained and r.symbol}
            ahead = today + timedelta(days=1)  # the broker books an action from the evening before its ex-date
            while ahead.weekday() >= 5:
                ahead += timedelta(days=1)
            recent = [a for a in announced if today - timedelta(days=LEGS_WAIT_DAYS) <= a.effective <= ahead]
            pending |= self._awaiting_legs([a for a in recent if not explained & set(a.symbols)])
        self.pending_symbols = tuple(sorted(pending))
        key = f"corporate_held_{self.slug}"
        if pending:
            self._details[key] = "pending: " + ",".join(self.pending_symbols)[:200]
        else:
            self._details.pop(key, None)
        self.counters["corporate_legs_waiting"] = len(waiting)
        return matched

    def _awaiting_legs(self, announced: Sequence[Announcement]) -> set[str]:
        """Return the symbols of actions announced whose legs are not listed yet (noting why they wait)."""
        for a in announced:
            for symbol in a.symbols:
                self._pending_why.setdefault(symbol, (a.group.removesuffix("s"), a.effective.isoformat(),
                                                      "the broker's legs"))
        return {s for a in announced for s in a.symbols}

    def _hold_on_rates(
        self, split: tuple[list[ActivityRecord], list[ActivityRecord]], waiting: list[ActivityRecord]
    ) -> tuple[list[ActivityRecord], list[ActivityRecord]]:
        """Move the legs of the symbols an announcement with absurd rates names to ``waiting``:
        held (pending, not booked) while that announcement stands (``convert.screen_announcements``)."""
        matched, unexplained = split
        held = {r.id for r in (*matched, *unexplained) if r.activity_type in CORPORATE_CODES
                and r.symbol in self._held_by_rates}  # fmt: skip
        waiting += [r for r in (*matched, *unexplained) if r.id in held]
        return [r for r in matched if r.id not in held], [r for r in unexplained if r.id not in held]

    async def _read_announcements(self, symbols: Sequence[str], today: date) -> list[Announcement] | None:
        """Return the announcements of ``symbols`` around today; None when they cannot be read."""
        assert self._announcements is not None
        start = (today - timedelta(days=ANNOUNCEMENT_LOOKBACK_DAYS)).isoformat()
        # up to a week ahead: legs dated on the payable date precede the ex-date
        end = (today + timedelta(days=ANNOUNCEMENT_MATCH_DAYS)).isoformat()
        if not symbols:  # nothing held, no legs: nothing to explain (never the whole market's list)
            return []
        params = {"symbols": ",".join(symbols), "start": start, "end": end, "limit": "1000"}
        found: list[Announcement] = []
        held: set[str] = set()
        try:
            for _ in range(ANNOUNCEMENT_PAGES):  # alpaca-py's paging: next_page_token until null
                body = await self._announcements.get("/corporate-actions", params)
                screened = screen_announcements(body)  # what the store, the bus and the arithmetic take
                for rejected in screened.rejects:
                    self._reject("announcements", rejected)
                held |= screened.held
                found += parse_announcements(screened.body)
                token = body.get("next_page_token") if isinstance(body, Mapping) else None
                if not token:
                    break
                params["page_token"] = str(token)
        except BrokerError as e:
            self.counters["corporate_announcements_failed"] += 1
            if self.refused_codes.get("announcements") is None:
                log.warning("corporate-actions announcements unreadable account=%s: %s", self.slug, e)
            self.refused_codes["announcements"] = getattr(e, "status", 0)
            return None
        self.refused_codes.pop("announcements", None)
        self._held_by_rates = frozenset(held)
        return found

    async def _corporate_together(self, codes: Sequence[str], after_ns: int) -> list[ActivityRecord] | None:
        """Return the legs of ``codes`` after ``after_ns`` read in one listing (``activity_types=CIL,MA,…``).

        One request instead of one per code (the key's budget, docs/broker-budget.md). None when
        the broker refuses the list (or fewer than two codes are left): the caller then reads
        code by code, which finds the refused one and leaves the others readable.
        """
        if len(codes) < 2:
            return None
        found: list[ActivityRecord] = []
        try:
            async for raw in self._rest.activity_pages(",".join(codes), after_ns=after_ns):
                found += [c.record for c in self._activities(raw)]
        except BrokerRefused:
            self.counters["corporate_list_refused"] += 1
            return None
        return found

    async def _corporate_code(self, code: str, after_ns: int) -> list[ActivityRecord]:
        """Return the legs of one code after ``after_ns``; none (logged, counted) if it is refused.

        A refused code yields nothing for this pass, not a partial list: its legs are unknown,
        and the actions they belong to wait (their symbols stay unexplained) until it is read.
        """
        found: list[ActivityRecord] = []
        try:
            async for raw in self._rest.activity_pages(code, after_ns=after_ns):
                found += [c.record for c in self._activities(raw)]
        except BrokerRefused as e:  # one refused filter value must never stop the other codes
            self.counters["corporate_code_refused"] += 1
            if self.refused_codes.get(code) != e.status:
                log.warning("corporate activity code refused account=%s code=%s status=%s: its legs are not read",
                            self.slug, code, e.status)  # fmt: skip
            self.refused_codes[code] = e.status
            return []
        if self.refused_codes.pop(code, None) is not None:
            log.info("corporate activity code read again account=%s code=%s", self.slug, code)
        return found

    def _show_refused(self) -> None:
        key = f"corporate_refused_{self.slug}"
        if self.refused_codes:
            self._details[key] = " ".join(f"{c}:{s}" for c, s in sorted(self.refused_codes.items()))
        else:
            self._details.pop(key, None)

    def _is_news(self, record: ActivityRecord) -> bool:
        seen = self._recent_fill_ids.get(record.id)
        return seen is None or seen[1] != record.status

    def _remember_fill(self, record: ActivityRecord) -> None:
        ts = record.transaction_time
        if self.fill_cursor_ns is None or ts > self.fill_cursor_ns:
            self.fill_cursor_ns = ts
        self._recent_fill_ids[record.id] = (ts, record.status)
        floor = self.fill_cursor_ns - FILL_OVERLAP_NS
        if len(self._recent_fill_ids) > 64:
            self._recent_fill_ids = {k: v for k, v in self._recent_fill_ids.items() if v[0] >= floor}

    def _send_fills(
        self, fills: list[Fill], records: list[ActivityRecord], busted: list[Fill], *, is_last: bool, is_backfill: bool,
        coverage: tuple[int, int, bool] | None = None,
    ) -> None:
        after, upto, from_floor = coverage if coverage is not None else (None, None, False)
        page = FillsPage(
            account=self.slug, fills=tuple(fills), activities=tuple(records), is_last=is_last,
            is_backfill=is_backfill, busted=tuple(busted), complete_after_ns=after, complete_to_ns=upto,
            is_from_floor=from_floor,
        )  # fmt: skip
        self._sink.publish(topic_fills(self.slug), page)

    # --- conversion with counting -------------------------------------------------------------

    def _convert(self, raw: Iterable[object]) -> list[ConvertedOrder]:
        converted, rejects = convert_orders(list(raw), now_ns=self._clock_ns())
        for rejected in rejects:
            self._reject("orders", rejected)
        return converted

    def _positions(self, raw: Iterable[object]) -> tuple[list[BrokerPosition], tuple[str, ...] | None]:
        """Return the converted positions and the symbols of those refused (unknown, not flat).

        ``None`` instead of the symbols: a refused position names no usable symbol, so no
        symbol missing from the list can be read as flat.
        """
        positions: list[BrokerPosition] = []
        unknown: set[str] = set()
        for item in raw:
            result = convert_position(item)
            if isinstance(result, Rejected):
                self._reject("positions", result)
                symbol = position_symbol(item)
                if symbol is None:
                    return positions, None
                unknown.add(symbol)
            else:
                positions.append(result)
        return positions, tuple(sorted(unknown))

    def _activities(self, raw: Iterable[object]) -> list[ConvertedActivity]:
        converted: list[ConvertedActivity] = []
        for item in raw:
            result = convert_activity(item, now_ns=self._clock_ns())
            if isinstance(result, Rejected):
                self._reject("activities", result)
                continue
            converted.append(result)
        return converted

    def _reject(self, what: str, rejected: Rejected) -> None:
        self.counters["rejects"] += 1
        self.counters[f"rejects_{what}_{rejected.reason}"] += 1
        if self._reject_log.first(f"{what}:{rejected.reason}:{rejected.detail}"):  # every snapshot re-reads it
            log.warning(
                "rejected broker %s account=%s reason=%s detail=%s", what, self.slug, rejected.reason, rejected.detail
            )


def _submitted(item: ConvertedOrder) -> int:
    """The order's ``submitted_at`` (Alpaca's filter field), else its ``created_at``."""
    return item.order.submitted_at or item.order.created_at


def _day(ts: int) -> str:
    """Return the New York date of an instant (a re-timed leg's: its effective date), ISO."""
    return datetime.fromtimestamp((ts + 1_000) / 1e9, tz=NEW_YORK).date().isoformat()
