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

from collections import Counter
from decimal import Decimal
from typing import Any

from coldharbour.broker.convert import Rejected, convert_activity
from coldharbour.sim.corporate import ACTION_TYPES
from coldharbour.sim.engine import Engine
from coldharbour.sim.wire import SimError
from tests.fixtures.broker import FakeBroker
from tests.reliability.test_corpus_broker import NUMBERS, REMOVED, Case, _decimal, _variants
from tests.reliability.test_corpus_bus import HOSTILE_VALUES
from tests.sim.builders import at, make_engine, order_body, price

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
