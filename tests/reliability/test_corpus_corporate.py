"""Bad-input corpus for corporate actions: the fake broker's ``/sim`` control bodies.

The same generator as ``test_corpus_broker.py`` (``_variants``: every field replaced by every
hostile value or removed, and hostile whole bodies), on one good ``POST /sim/corporate-actions``
body of each type (the field names of alpaca-py's ``alpaca/data/models/corporate_actions.py``
groups, as ``coldharbour/sim/corporate.py`` takes them), plus extreme decimals (1e-30,
"1e999999", 26+ decimals), dates (0001-01-01, 9999-12-31, 2026-02-30) and symbols with NUL or
ESC bytes.

The contract (``sim/corporate.py``): every hostile value of a required field, and every one of a
date or timing field except null (the default), is a 400 whose one-line message names the field,
and nothing changes in the account; a removed optional field takes its default. What the fake
books lists legs our own converter takes (``convert_activity``): the fake never hands the mirror
a leg the store would refuse. Through the wire, garbage is a 4xx with a JSON message, never a
500, and the fake keeps serving.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec
import pytest

from coldharbour.broker.convert import (
    ANNOUNCED_DATES,
    ANNOUNCED_RATES,
    ANNOUNCED_SYMBOLS,
    Rejected,
    convert_activity,
    screen_announcements,
)
from coldharbour.broker.rest import BrokerRest
from coldharbour.broker.sync import AccountSync
from coldharbour.broker.validate import MAX_ID_CHARS, MAX_SYMBOL_CHARS, MAX_TIME_NS
from coldharbour.config import Dsn
from coldharbour.domain.corporate import (
    MAX_RATIO,
    MIN_RATIO,
    Announcement,
    CorporateAction,
    announced_quantities,
    effective_instant,
    parse_announcements,
    spinoff_by_announcement,
)
from coldharbour.domain.money import MAX_ABS
from coldharbour.domain.schedule import NEW_YORK
from coldharbour.domain.types import from_datetime
from coldharbour.messages import CorporateActionsPage, decode, encode
from coldharbour.sim.corporate import ACTION_TYPES, GROUPS, announcement, parse_corporate_action
from coldharbour.sim.engine import Engine
from coldharbour.sim.wire import SimError
from tests.broker.support import RecordingSink, account_for
from tests.fixtures.broker import BrokerFactory, FakeBroker
from tests.fixtures.bus import InprocBus
from tests.reliability.test_corpus_broker import HTML_PAGES, NUMBERS, REMOVED, Case, _decimal, _store_text, _variants
from tests.reliability.test_corpus_bus import HOSTILE_VALUES
from tests.sim.builders import at, make_engine, order_body, price
from tests.workers.state_harness import StateHarness

EXTREME_NUMBERS: list[object] = [
    "1e-30", "1e308", "1e999999", "-1e999999", "1e-999999", "Infinity", "-0", "0.0",
    "1." + "1" * 26 + "5", 10**30, "9" * 40,
]  # fmt: skip
EXTREME_DATES: list[object] = [
    "0001-01-01", "9999-12-31", "2026-02-30", "2026-13-01", "", "2026-03-01T00:00:00Z", 20260301,
]  # fmt: skip
EXTREME_SYMBOLS: list[object] = ["AA\x00PL", "AA\x1bPL", "\x1b[31mRED", "A" * 13, " ", "\t", "AAPL\n"]
BAD_VALUES: list[object] = [*HOSTILE_VALUES, *NUMBERS, *EXTREME_NUMBERS, *EXTREME_DATES, *EXTREME_SYMBOLS]

# One good body of each type (sim/corporate.py's docstring); dates left to their defaults.
GOOD: dict[str, dict[str, object]] = {
    "forward_split": {"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2"},
    "reverse_split": {"type": "reverse_split", "symbol": "AAPL", "old_rate": "10", "new_rate": "1"},
    "unit_split": {"type": "unit_split", "symbol": "AAPL", "old_rate": "1", "new_symbol": "AAPW", "new_rate": "1",
                   "alternate_symbol": "AAPU", "alternate_rate": "0.5"},
    "stock_dividend": {"type": "stock_dividend", "symbol": "AAPL", "rate": "0.05"},
    "cash_merger": {"type": "cash_merger", "symbol": "AAPL", "rate": "120", "effective_date": "2024-03-05"},
    "stock_merger": {"type": "stock_merger", "symbol": "AAPL", "acquirer_symbol": "BIG", "acquirer_rate": "2",
                     "acquiree_rate": "1"},
    "stock_and_cash_merger": {"type": "stock_and_cash_merger", "symbol": "AAPL", "acquirer_symbol": "BIG",
                              "acquirer_rate": "1", "acquiree_rate": "2", "cash_rate": "10.25"},
    "redemption": {"type": "redemption", "symbol": "AAPL", "rate": "25", "payable_date": "2024-03-05"},
    "spin_off": {"type": "spin_off", "symbol": "AAPL", "new_symbol": "SPUN", "source_rate": "3", "new_rate": "1",
                 "ex_date": "2024-03-05", "legs": "ex_date", "position": "together"},
    "name_change": {"type": "name_change", "symbol": "AAPL", "new_symbol": "APPL"},
    "worthless_removal": {"type": "worthless_removal", "symbol": "AAPL"},
}  # fmt: skip
OPTIONAL = ("ex_date", "effective_date", "payable_date", "legs", "position")  # a default when removed
DATES = ("ex_date", "effective_date", "payable_date")


def sim_corpus() -> list[tuple[str, Case]]:
    """Return (type, case) for every hostile body (deterministic)."""
    assert sorted(GOOD) == sorted(ACTION_TYPES)
    return [(kind, case) for kind, body in GOOD.items() for case in _variants(body, BAD_VALUES)]


SYMBOLS = ("symbol", "new_symbol", "acquirer_symbol", "alternate_symbol")


def _expected_fault(case: Case) -> bool:
    """Return True when the case must be a 400 (see the module docstring).

    A symbol is printable text of 1..12 characters ("NaN" is one); a rate a positive number
    ``money.to_decimal`` takes whose action stays within the ratio bounds (shares per share
    1e-5..1e5, cash per share at most 1e7) and in order (a forward split's new rate above its old
    one): of the values here only the 28-digit 1.11…5 is such a rate (in (0, 2): every good
    body's pair stays in order with it); a date null (the default) or a real day in 1970..2262.
    """
    if not case.field:
        return True
    if case.value is REMOVED:
        return case.field not in OPTIONAL
    if case.field in SYMBOLS:
        value = case.value if isinstance(case.value, str) else ""
        return not (value.strip() and len(value.strip()) <= 12 and value.isprintable())
    if case.field.endswith("rate"):
        number = _decimal(case.value)
        return not (isinstance(number, Decimal) and 0 < number < 2)
    return not (case.value is None and case.field in DATES)


def _holding() -> Engine:
    engine = make_engine()
    engine.set_prices({"AAPL": price("100"), "BIG": price("50")}, at(0))
    engine.submit_order("demo", order_body(symbol="AAPL", qty=10), at(1))
    return engine


def test_corpus_sim_corporate_action_bodies_are_400_or_booked_as_the_store_takes_them() -> None:
    corpus = sim_corpus()
    engine = _holding()
    outcomes: Counter[str] = Counter()
    mismatches: list[str] = []

    for kind, case in corpus:
        label = f"{kind} {case.field or '<whole body>'}={case.value!r:.50}"
        try:
            _, legs, _ = engine.corporate_action(case.data, at(3))
        except SimError as e:
            outcomes["400"] += 1
            named = not case.field or case.field in e.message or case.field == "type"
            if e.status != 400 or "\n" in e.message or len(e.message) > 300 or not named:
                mismatches.append(f"{label}: {e.status} {e.message!r:.120}")
            elif not _expected_fault(case):
                mismatches.append(f"{label}: expected booked, got 400 {e.message!r:.120}")
            if engine.accounts["demo"].positions["AAPL"].qty != Decimal(10):
                mismatches.append(f"{label}: refused but the position changed")
                engine = _holding()
            continue
        except Exception as e:  # a crash of the fake: what this corpus is for
            mismatches.append(f"{label}: {type(e).__name__}: {e!s:.120}")
            engine = _holding()
            continue
        outcomes["booked"] += 1
        if _expected_fault(case):
            mismatches.append(f"{label}: expected 400, got booked")
        refused = [r.reason for r in map(convert_activity, legs) if isinstance(r, Rejected)]
        if refused:
            mismatches.append(f"{label}: booked legs the converter refuses: {refused}")
        engine = _holding()

    print(f"sim corporate-action corpus: cases={len(corpus)} outcomes={dict(outcomes)}")
    assert mismatches == [], "\n".join(mismatches)
    assert len(corpus) >= 2000


WIRE_BODIES: list[object] = [
    {**GOOD["forward_split"], "new_rate": "1e999999"},
    {**GOOD["forward_split"], "old_rate": "1e-30"},
    {**GOOD["spin_off"], "new_rate": 1e308},
    {**GOOD["stock_dividend"], "rate": "9" * 40},
    {**GOOD["stock_and_cash_merger"], "cash_rate": "1e15"},
    {**GOOD["forward_split"], "ex_date": "9999-12-31"},
    {**GOOD["forward_split"], "payable_date": "0001-01-01", "legs": "payable_date"},
    {**GOOD["name_change"], "new_symbol": "AA\x00PL"},
    {**GOOD["name_change"], "new_symbol": "A\x1b"},
    {**GOOD["name_change"], "new_symbol": "A" * 100_000},
    [],
    "x",
    None,
    5,
]


def test_wire_garbage_corporate_action_and_cancel_bodies_are_4xx_and_the_fake_keeps_serving(
    fake_broker: FakeBroker,
) -> None:
    """``POST /sim/corporate-actions`` and ``…/{id}/cancel`` (sim/control.py) over HTTP."""
    fake_broker.set_prices({"AAPL": 100})
    fake_broker.request("POST", "/v2/orders", json={"symbol": "AAPL", "qty": "10", "side": "buy", "type": "market",
                                                    "time_in_force": "day"})  # fmt: skip
    answers: list[tuple[object, int, Any]] = []
    for body in WIRE_BODIES:
        answer = fake_broker.request("POST", "/sim/corporate-actions", account=None, json=body)
        answers.append((body, answer.status_code, answer.json()))
    booked = fake_broker.request("POST", "/sim/corporate-actions", account=None, json=GOOD["forward_split"]).json()
    cancel = f"/sim/corporate-actions/{booked['id']}/cancel"
    for body in [*({"rebook": b} for b in WIRE_BODIES if b is not None), [], "x", 5, {"rebook": {}, "more": 1}]:
        answer = fake_broker.request("POST", cancel, account=None, json=body)
        answers.append((body, answer.status_code, answer.json()))
    for path in ("/sim/corporate-actions/%00/cancel", "/sim/corporate-actions/" + "9" * 5000 + "/complete"):
        answer = fake_broker.request("POST", path, account=None, json={})
        answers.append((path, answer.status_code, answer.json()))
    canceled = fake_broker.request("POST", cancel, account=None, json={})
    position = fake_broker.request("GET", "/v2/positions/AAPL").json()

    wrong = [
        (f"{b!r:.60}", status, reply)
        for b, status, reply in answers
        if not (400 <= status < 500 and isinstance(reply.get("message"), str) and "\n" not in reply["message"])
    ]
    assert wrong == []
    assert canceled.status_code == 200
    assert position["qty"] == "10"  # the only booked action was canceled: the holding as it was


# --- the data API's announcements: through the edge screen, the domain, the bus and PostgreSQL ----

# One good item of each group, as the fake lists it (``sim/corporate.py`` ``announcement``: the
# fields of alpaca-py's ``alpaca/data/models/corporate_actions.py`` models).
POSTED_AT = datetime(2024, 3, 1, 15, tzinfo=UTC)
GOOD_ITEMS: dict[str, dict[str, object]] = {
    GROUPS[kind]: announcement(parse_corporate_action(body, POSTED_AT), f"ca-{kind}") for kind, body in GOOD.items()
}
ANNOUNCED_VALUES: list[object] = [
    *BAD_VALUES, "1e-30", "1e-20", "0.5", "SP\x00UN", "ß" * 20, "\ud800", "2262-04-11",
]  # fmt: skip


def announcement_corpus() -> list[tuple[str, Case]]:
    """Return (group, case) for every hostile announcement item (deterministic)."""
    return [(group, case) for group, item in GOOD_ITEMS.items() for case in _variants(item, ANNOUNCED_VALUES)]


def _expected_announcement(group: str, case: Case) -> str:
    """The edge's contract (``convert.screen_announcements``): "" (taken), "held" (its rates
    taken out, its symbols held) or the reject reason."""
    if not case.field:
        return "" if isinstance(case.value, Mapping) else "announcement"
    value = case.value
    if value is REMOVED or value is None:
        return ""
    if case.field == "id" or case.field in ANNOUNCED_SYMBOLS:
        if not isinstance(value, str):
            return "announcement"
        if case.field == "id":
            return "" if _store_text(value, MAX_ID_CHARS) else "announcement_text"
        # a symbol is kept upper-cased: its upper case must fit ("ß" * 20 is 40 characters then)
        return (
            ""
            if _store_text(value, MAX_SYMBOL_CHARS) and len(value.upper()) <= MAX_SYMBOL_CHARS
            else ("announcement_text")
        )
    if case.field in ANNOUNCED_DATES:
        try:
            day = date.fromisoformat(value[:10]) if isinstance(value, str) else None
        except ValueError:
            day = None
        return "" if day is not None and date(1970, 1, 2) <= day <= date(2262, 4, 10) else "announcement_time"
    if case.field in ANNOUNCED_RATES:
        number = _decimal(value)
        # one rate replaced, the others as in GOOD: a usable number (at most 1e7, shares or cash per
        # share) keeps the share ratios in 1e-5..1e5 when it is within 1e-3..1e3 (GOOD's rates run
        # from 0.05 to 120); of the values here, none falls in between
        if not isinstance(number, Decimal):
            return "held"
        if group in ("cash_mergers", "redemptions") or case.field == "cash_rate":  # cash per share: no ratio
            return "" if 0 < number <= 10**7 else "held"
        if group == "stock_dividends":  # new shares per share
            return "" if MIN_RATIO <= number <= MAX_RATIO else "held"
        usable = Decimal("1e-3") <= number <= Decimal("1e3")
        return "" if usable else "held"
    return ""  # cusip and the like: not read


def _storable(found: Announcement) -> bool:
    """Return True when what the domain makes of an announcement is what the store and the bus take."""
    instant = effective_instant(found.effective)
    return (all(_store_text(symbol, MAX_SYMBOL_CHARS) for symbol in found.symbols)
            and 0 <= instant <= MAX_TIME_NS and _store_text(found.id, MAX_ID_CHARS)
            and all(MIN_RATIO <= rate <= MAX_ABS for rate in found.rates or ()))  # fmt: skip


def test_corpus_announcements_are_taken_held_or_rejected_and_what_is_taken_is_storable() -> None:
    corpus = announcement_corpus()
    outcomes: Counter[str] = Counter()
    mismatches: list[str] = []
    prices = {"AAPL": Decimal("150"), "SPUN": Decimal("12.5")}

    for group, case in corpus:
        label = f"{group} {case.field or '<whole item>'}={case.value!r:.50}"
        expected = _expected_announcement(group, case)
        screened = screen_announcements({"corporate_actions": {group: [case.data]}})
        reasons = [r.reason for r in screened.rejects]
        got = "held" if reasons == ["announcement_rate"] and screened.held else (reasons[0] if reasons else "")
        outcomes[expected or "taken"] += 1
        found = parse_announcements(screened.body)
        if got != expected or len(reasons) > 1 or any("\n" in r.detail for r in screened.rejects):
            mismatches.append(f"{label}: expected {expected or 'taken'}, got {reasons} held={sorted(screened.held)}")
        elif expected not in ("", "held") and found:
            mismatches.append(f"{label}: rejected but parsed {found}")
        elif expected == "held" and any(a.rates for a in found):
            mismatches.append(f"{label}: held but its rates were kept {found}")
        elif not all(map(_storable, found)):
            mismatches.append(f"{label}: the domain made what the store refuses: {found}")
        for quantities in (announced_quantities(a, Decimal(30)) for a in found):  # the rates-vs-legs check's figures
            if quantities and not all(abs(q) < MAX_ABS for q in quantities.values()):
                mismatches.append(f"{label}: the announced quantities are past the cap: {quantities}")
        spin = CorporateAction(id="leg-1", type="spinoff", symbol="SPUN", ts=effective_instant(date(2024, 3, 5)),
                               ratio=Decimal(1), new_symbol="SPUN")  # fmt: skip
        allocated = spinoff_by_announcement(spin, found, prices)  # never raises (Overflow, InvalidOperation)
        if allocated is not None and not (0 < allocated.basis_share < 1 and _store_text(allocated.symbol, 32)):
            mismatches.append(f"{label}: allocated {allocated}")

    for body in [*HTML_PAGES, *HOSTILE_VALUES, {"corporate_actions": HOSTILE_VALUES}]:
        assert parse_announcements(screen_announcements(body).body) == []

    print(f"announcement corpus: cases={len(corpus)} expected={dict(outcomes)}")
    assert mismatches == [], "\n".join(mismatches)
    assert len(corpus) >= 3000


class AnnouncementsHost:
    """The data host's ``GET /v1/corporate-actions`` (``BrokerRest.get``'s part), answering ``body``
    as JSON text decoded the way ``rest.py`` decodes it (msgspec)."""

    def __init__(self, body: Mapping[str, object]) -> None:
        self.text = json.dumps(body, allow_nan=False)

    async def get(self, path: str, params: Mapping[str, str]) -> Any:
        assert path == "/corporate-actions"
        return msgspec.json.decode(self.text)


def _as_json(item: object) -> object | None:
    """``item`` when JSON can carry it (no NaN, no lone surrogate), else None."""
    try:
        return msgspec.json.decode(json.dumps(item, allow_nan=False))
    except (ValueError, TypeError, msgspec.DecodeError):
        return None


@pytest.mark.asyncio
async def test_announcement_poison_through_snapshot_bus_and_state_books_the_good_spinoff_holds_the_absurd(
    fake_broker_factory: BrokerFactory, migrated_dsn: Dsn, bus: InprocBus
) -> None:
    """A spin-off booked by the fake broker (its SPIN leg), read by ``AccountSync`` with
    announcements that carry the whole corpus beside the good one: poison items naming the
    spin-off's symbols at its ex-date (a NUL or 5,000-character parent, dates of 9999) listed
    *first*, so that without the edge screen they would be chosen. The good one allocates the
    basis; what ``snapshot`` publishes crosses the bus into a running ``state`` and PostgreSQL with
    no failed commit. A second read whose only spin-off announcement states absurd rates
    (1e999999) holds the action: not published, its symbols pending, counted. The fake runs on its
    own clock: the allocation takes the ex-date's daily closes, read the day after."""
    now = [datetime(2026, 11, 10, 10, 0, tzinfo=NEW_YORK)]
    fake_broker = fake_broker_factory(clock=lambda: now[0].astimezone(UTC))
    fake_broker.set_prices({"AAPL": 150})
    fake_broker.request("POST", "/v2/orders", json={"symbol": "AAPL", "qty": "30", "side": "buy", "type": "market",
                                                    "time_in_force": "day"})  # fmt: skip
    sink, held_sink = RecordingSink(), RecordingSink()
    counters, held_counters = Counter[str](), Counter[str]()
    session = aiohttp.ClientSession()
    rest = BrokerRest(account_for(fake_broker), session, Counter())
    bars = BrokerRest(account_for(fake_broker), session, Counter())
    sync = AccountSync(rest, sink, counters, announcements=AnnouncementsHost({}),  # type: ignore[arg-type]
                       bars=bars, clock_ns=lambda: from_datetime(now[0]))  # fmt: skip
    held = AccountSync(rest, held_sink, held_counters, announcements=AnnouncementsHost({}),  # type: ignore[arg-type]
                       bars=bars, clock_ns=lambda: from_datetime(now[0]))  # fmt: skip
    for each in (sync, held):
        await each.backfill(1)
    posted = {"type": "spin_off", "symbol": "AAPL", "new_symbol": "SPUN", "source_rate": "2", "new_rate": "1",
              "ex_date": "2026-11-11", "legs": "ex_date"}  # fmt: skip
    listed = fake_broker.request("POST", "/sim/corporate-actions", account=None, json=posted)
    assert listed.status_code == 200, listed.text
    today = now[0].date()
    window = {"symbols": "AAPL,SPUN", "start": str(today - timedelta(days=3)), "end": str(today + timedelta(days=9))}
    (good,) = fake_broker.request("GET", "/v1/corporate-actions", params=window).json()["corporate_actions"][
        "spin_offs"
    ]
    poison = [
        {**good, "id": "0-nul", "source_symbol": "AA\x00PL"}, {**good, "id": "0-long", "source_symbol": "A" * 5000},
        {**good, "id": "0-date", "record_date": "9999-12-31"}, {**good, "id": "0\x00id"},
        {**good, "id": "0-ss", "source_symbol": "ß" * 20},
    ]  # fmt: skip
    corpus = [item for _, case in announcement_corpus() if (item := _as_json(case.data)) is not None]
    rejected = [item for item in corpus if isinstance(item, dict) and screen_announcements(
        {"corporate_actions": {"spin_offs": [item]}}).rejects]  # fmt: skip
    dropping = {"corporate_actions": {"spin_offs": [*poison, good, *(i for i in rejected if not _held(i))]}}
    absurd = {"corporate_actions": {"spin_offs": [{**good, "new_rate": "1e999999"}]}}
    now[0] = datetime(2026, 11, 11, 10, 0, tzinfo=NEW_YORK)  # the ex-date
    fake_broker.set_prices({"AAPL": 100, "SPUN": 50})
    now[0] = datetime(2026, 11, 12, 10, 0, tzinfo=NEW_YORK)  # its closes are out
    sync._announcements = AnnouncementsHost(dropping)  # type: ignore[assignment]
    held._announcements = AnnouncementsHost(absurd)  # type: ignore[assignment]
    async with session:
        for each in (sync, held):
            await each.full("test")

    (action,) = [a for page in sink.of(CorporateActionsPage) for a in page.actions]
    assert (action.type, action.symbol, action.new_symbol) == ("spinoff", "AAPL", "SPUN")
    assert action.basis_share == Decimal(200) / Decimal(250)  # 2 x 100 against 1 x 50, the ex-date closes
    assert counters["rejects_announcements_announcement_text"] >= 4
    assert counters["rejects_announcements_announcement_time"] >= 1
    assert [a for page in held_sink.of(CorporateActionsPage) for a in page.actions] == []
    assert held_counters["rejects_announcements_announcement_rate"] == 1
    assert "SPUN" in held.pending_symbols  # its leg withheld (the parent's position is unchanged by a spin-off)
    for _, message in held_sink.items:
        decode(encode(message))  # the held read's pages cross the bus too

    harness = StateHarness(migrated_dsn, bus)
    await harness.start()
    try:
        for topic, message in sink.items:
            harness.inject(topic, message)
        await harness.settle()
        bases = await harness.query("SELECT action_id, parent FROM accounts.spinoff_bases_demo")
        failures = harness.ctx.counters["commit_failures"]
        alive = not harness.task.done()
    finally:
        await harness.close()

    assert alive
    assert failures == 0
    assert bases == [(action.id, "AAPL")]


def _held(item: dict[str, object]) -> bool:
    return bool(screen_announcements({"corporate_actions": {"spin_offs": [item]}}).held)
