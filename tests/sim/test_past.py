"""The fake broker with history (``--history-sessions``): every endpoint tells the same past.

Shapes are Alpaca's: positions (docs.alpaca.markets/reference/getallopenpositions), activities
(.../getaccountactivities: FILL ``qty``/``price``/``side``, non-trade ``net_amount``), orders
(.../getallorders, ``nested``), account (.../getaccount), portfolio history
(.../getaccountportfoliohistory). They come from the fake's HTTP surface, as ``snapshot`` reads them.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from datetime import date
from decimal import Decimal
from typing import Any

from tests.fixtures.broker import BrokerFactory

SESSIONS = 9
START_CASH = Decimal(100_000)


def _all(broker: Any, path: str, **params: str) -> list[dict[str, Any]]:
    """Every item of a paged listing (``page_token`` for activities, ``after`` for orders)."""
    items: list[dict[str, Any]] = []
    query = {"direction": "asc", **params}
    while True:
        page = broker.request("GET", path, params=query).json()
        if not page:
            return items
        items += page
        if path.endswith("/activities"):
            query["page_token"] = page[-1]["id"]
        else:
            query["after"] = page[-1]["submitted_at"]
            if len(page) < int(query.get("limit", "50")):
                return items


def test_the_history_agrees_on_every_endpoint(fake_broker_factory: BrokerFactory) -> None:
    broker = fake_broker_factory(seed=3, history_sessions=SESSIONS)
    activities = _all(broker, "/v2/account/activities", page_size="100")
    orders = _all(broker, "/v2/orders", status="all", limit="500", nested="false")
    positions = broker.request("GET", "/v2/positions").json()
    account = broker.request("GET", "/v2/account").json()
    history = broker.request("GET", "/v2/account/portfolio/history", params={"period": "1M", "timeframe": "1D"}).json()

    fills = [a for a in activities if a["activity_type"] == "FILL"]
    held: dict[str, Decimal] = defaultdict(Decimal)
    cash = START_CASH
    for item in fills:
        sign = 1 if item["side"] == "buy" else -1
        held[item["symbol"]] += sign * Decimal(item["qty"])
        cash -= sign * Decimal(item["qty"]) * Decimal(item["price"])
    cash += sum((Decimal(a["net_amount"]) for a in activities if a["activity_type"] != "FILL"), Decimal(0))
    filled = Counter[str]()
    for item in fills:
        filled[item["order_id"]] += 1

    assert {p["symbol"]: Decimal(p["qty"]) for p in positions} == {s: q for s, q in held.items() if q}
    assert Decimal(account["cash"]) == cash
    by_order: dict[str, Decimal] = defaultdict(Decimal)
    for item in fills:
        by_order[item["order_id"]] += Decimal(item["qty"])
    assert {o["id"]: Decimal(o["filled_qty"]) for o in orders if Decimal(o["filled_qty"])} == by_order
    assert Decimal(str(history["equity"][-1])) == Decimal(account["equity"])  # no print since the last close
    kinds = {a["activity_type"] for a in activities}
    assert {"FILL", "CSD", "DIV", "DIVNRA", "FEE", "CSW", "JNLC"} <= kinds
    sessions = {s.day for s in broker.server.history}
    [journal] = [a for a in activities if a["activity_type"] == "JNLC"]
    assert date.fromisoformat(journal["date"]) not in sessions  # a flow on a day without a session
    assert max(filled.values()) >= 3  # partial fills
    nested = _all(broker, "/v2/orders", status="all", limit="500", nested="true")
    legs = [leg for o in nested for leg in o.get("legs") or ()]
    assert any(leg["type"] == "limit" and leg["status"] == "filled" for leg in legs)  # a bracket exit (take-profit)
    assert any(o["order_class"] == "bracket" and o["side"] == "sell" and o["status"] == "filled"
               for o in nested)  # a short entry
    assert len(broker.server.history) == SESSIONS


def test_the_same_seed_gives_the_same_history(fake_broker_factory: BrokerFactory) -> None:
    first, second = (fake_broker_factory(seed=5, history_sessions=3) for _ in range(2))

    def listed(broker: Any) -> list[tuple[Any, ...]]:
        return [(a["id"], a["activity_type"], a.get("qty") or a.get("net_amount"))
                for a in _all(broker, "/v2/account/activities", page_size="100")]

    assert listed(first) == listed(second)
    assert listed(first)


def test_the_command_line_takes_history_sessions() -> None:
    result = subprocess.run([sys.executable, "-m", "coldharbour.sim.broker", "--help"], capture_output=True,
                            text=True, timeout=60, check=True)
    assert "--history-sessions N" in result.stdout
