"""A corpus of broker payloads in the shapes Alpaca documents, written for this project.

Sources followed (shapes only, values invented):
- ORDERS, TRADE_UPDATES: Alpaca's Orders object and trade_updates stream
  (https://docs.alpaca.markets/docs/orders-at-alpaca, https://docs.alpaca.markets/docs/websocket-streaming)
  and alpaca-py's ``Order``/``TradeUpdate`` models (alpaca/trading/models.py); docs/broker.md §3-4.
  ``accepted`` carries only event, timestamp and order (alpaca-py#371); a fill may lack
  ``execution_id`` (alpaca-py#210); crypto orders carry ``commission``.
- POSITIONS, ACCOUNT: the Positions and Account objects (https://docs.alpaca.markets/docs/positions,
  alpaca-py ``Position``/``TradeAccount``): crypto positions say ``BTCUSD`` with
  ``asset_class`` ``crypto`` and ``exchange`` ``CRYPTO``.
- ACTIVITIES: the TradeActivity and NonTradeActivity objects of
  https://docs.alpaca.markets/us/docs/account-activities.md, codes from docs/spec.md §8 and the
  docs.alpaca.markets changelog 2026-11-06 "activity types"; corporate-action legs carry
  ``qty``/``price`` (the SPLIT pair: old shares out, new shares in).
"""

from __future__ import annotations

from typing import Any

ACCOUNT_ID = "e6fe16f3-64a4-4921-8928-cadf02f92f98"
ASSET_AAPL = "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415"
ASSET_BTC = "276e2673-764b-4ab6-a611-caf665ca6340"


def order(oid: str, **fields: Any) -> dict[str, Any]:
    """An order object with every documented field; ``fields`` override."""
    base: dict[str, Any] = {
        "id": oid, "client_order_id": f"c-{oid[:8]}",
        "created_at": "2024-03-01T15:00:00.150000Z", "updated_at": "2024-03-01T15:00:00.300000Z",
        "submitted_at": "2024-03-01T15:00:00.082000Z", "filled_at": None, "expired_at": None,
        "expires_at": "2024-05-30T20:00:00Z", "canceled_at": None, "failed_at": None,
        "replaced_at": None, "replaced_by": None, "replaces": None,
        "asset_id": ASSET_AAPL, "symbol": "AAPL", "asset_class": "us_equity",
        "notional": None, "qty": "10", "filled_qty": "0", "filled_avg_price": None,
        "order_class": "", "order_type": "market", "type": "market", "side": "buy",
        "position_intent": "buy_to_open", "time_in_force": "day", "limit_price": None,
        "stop_price": None, "status": "new", "extended_hours": False, "legs": None,
        "trail_percent": None, "trail_price": None, "hwm": None, "commission": "0",
        "subtag": None, "source": None,
    }  # fmt: skip
    base.update(fields)
    return base


P = "6aa91d53-7fe6-4d24-9b5f-e5b78b643dd2"
TP = "0b8e2f38-8a44-4c55-9a8a-6c1f4a7b1e01"
SL = "0b8e2f38-8a44-4c55-9a8a-6c1f4a7b1e02"

ORDERS: dict[str, dict[str, Any]] = {
    "bracket": order(
        P, order_class="bracket", status="filled", filled_qty="10", filled_avg_price="180.25",
        filled_at="2024-03-01T15:00:00.300000Z", time_in_force="gtc",
        legs=[
            order(TP, order_class="bracket", type="limit", order_type="limit", side="sell",
                  limit_price="195", status="new", time_in_force="gtc", position_intent="sell_to_close"),
            order(SL, order_class="bracket", type="stop", order_type="stop", side="sell",
                  stop_price="170", status="held", time_in_force="gtc", position_intent="sell_to_close"),
        ],
    ),
    "oto": order(
        "1c2d3e4f-0000-4000-8000-000000000001", order_class="oto", type="limit", order_type="limit",
        limit_price="180", status="new", time_in_force="gtc",
        legs=[order("1c2d3e4f-0000-4000-8000-000000000002", order_class="oto", type="stop",
                    order_type="stop", side="sell", stop_price="170", status="held", time_in_force="gtc")],
    ),
    "oco": order(
        "1c2d3e4f-0000-4000-8000-000000000003", order_class="oco", type="limit", order_type="limit",
        side="sell", limit_price="200", status="new", time_in_force="gtc",
        legs=[order("1c2d3e4f-0000-4000-8000-000000000004", order_class="oco", type="stop",
                    order_type="stop", side="sell", stop_price="170", status="new", time_in_force="gtc")],
    ),
    "trailing_stop": order(
        "1c2d3e4f-0000-4000-8000-000000000005", type="trailing_stop", order_type="trailing_stop",
        side="sell", trail_percent="2.5", hwm="184.1", stop_price="179.4975", status="new", time_in_force="gtc",
    ),
    "notional": order(
        "1c2d3e4f-0000-4000-8000-000000000006", qty=None, notional="1000", filled_qty="5.547850208",
        filled_avg_price="180.25", status="filled", filled_at="2024-03-01T15:00:00.300000Z",
    ),
    "crypto": order(
        "1c2d3e4f-0000-4000-8000-000000000007", symbol="BTC/USD", asset_id=ASSET_BTC, asset_class="crypto",
        qty="0.123456789", filled_qty="0.123456789", filled_avg_price="60000.5", status="filled",
        time_in_force="gtc", commission="1.85", filled_at="2024-03-03T03:00:00.300000Z",
    ),
}  # fmt: skip

POSITIONS: dict[str, dict[str, Any]] = {
    "long": {"asset_id": ASSET_AAPL, "symbol": "AAPL", "exchange": "NASDAQ", "asset_class": "us_equity",
             "asset_marginable": True, "qty": "10", "qty_available": "10", "side": "long",
             "avg_entry_price": "180.25", "cost_basis": "1802.5", "market_value": "1850.1",
             "current_price": "185.01", "lastday_price": "183", "unrealized_pl": "47.6"},
    "short": {"asset_id": ASSET_AAPL, "symbol": "MSFT", "exchange": "NASDAQ", "asset_class": "us_equity",
              "qty": "-2", "side": "short", "avg_entry_price": "400", "cost_basis": "-800",
              "market_value": "-780", "current_price": "390"},
    "fractional": {"asset_id": ASSET_AAPL, "symbol": "AAPL", "exchange": "NASDAQ", "asset_class": "us_equity",
                   "qty": "5.547850208", "side": "long", "avg_entry_price": "180.25",
                   "cost_basis": "1000", "current_price": "181"},
    "crypto": {"asset_id": ASSET_BTC, "symbol": "BTCUSD", "exchange": "CRYPTO", "asset_class": "crypto",
               "asset_marginable": False, "qty": "0.123456789", "side": "long", "avg_entry_price": "60000.5",
               "cost_basis": "7407.46", "current_price": "61000"},
}  # fmt: skip

ACCOUNT: dict[str, Any] = {
    "id": ACCOUNT_ID, "account_number": "PA3FAKE00001", "status": "ACTIVE", "crypto_status": "ACTIVE",
    "currency": "USD", "cash": "98197.5", "equity": "100047.6", "last_equity": "100000",
    "portfolio_value": "100047.6", "buying_power": "199000.5", "multiplier": "2",
    "created_at": "2024-01-02T14:00:00.123456Z", "balance_asof": "2024-03-01",
}  # fmt: skip


def nta(code: str, net_amount: str, n: int, **fields: Any) -> dict[str, Any]:
    """A NonTradeActivity object (account-activities page) with ``fields`` added."""
    return {
        "id": f"20240301000000{n:03d}::5f596936-6f23-4cef-bdf1-3806aae5{n:04d}",
        "activity_type": code, "date": "2024-03-01", "net_amount": net_amount,
        "description": f"{code} sample", "status": "executed", **fields,
    }  # fmt: skip


# (activity, expected category, expected amount); one per docs/spec.md §8 code.
NTA_CODES: dict[str, tuple[str, str]] = {
    "OPTRD": ("trade", "-120"),
    "DIV": ("income", "2.4"), "DIVCGL": ("income", "1.1"), "DIVCGS": ("income", "0.6"),
    "DIVNRA": ("income", "-0.36"), "DIVROC": ("income", "0.5"), "DIVTXEX": ("income", "0.7"),
    "DIVWH": ("income", "-0.36"), "DIVFT": ("income", "-0.05"), "DIVTW": ("income", "-0.12"),
    "DIVFEE": ("income", "-0.02"),
    "INT": ("interest", "3.12"), "INTNRA": ("interest", "-0.94"), "INTTW": ("interest", "-0.75"),
    "INTPNL": ("interest", "0.4"),
    "FEE": ("fee", "-0.02"), "CFEE": ("fee", "-1.5"), "PTC": ("fee", "-0.01"), "PTR": ("fee", "0.01"),
    "WH": ("tax", "-15"),
    "CSD": ("external", "5000"), "CSW": ("external", "-500"), "JNLC": ("external", "250"),
    "JNLS": ("external", "0"), "ACATC": ("external", "10000"), "ACATS": ("external", "0"),
    "SPLIT": ("corporate", "0"), "SSP": ("corporate", "0"), "SPIN": ("corporate", "0"),
    "SSO": ("corporate", "0"), "MA": ("corporate", "250"), "NC": ("corporate", "0"),
    "SC": ("corporate", "0"), "REORG": ("corporate", "0"), "CIL": ("corporate", "12.34"),
    "OPASN": ("corporate", "0"), "OPEXC": ("corporate", "0"), "OPEXP": ("corporate", "0"),
    "OPCA": ("corporate", "0"),
    "MISC": ("other", "1"), "SWP": ("other", "0.3"), "FXTRD": ("other", "-2"),
    "ZZNEW": ("unclassified", "7"),
}  # fmt: skip

ACTIVITIES: dict[str, dict[str, Any]] = {
    code: nta(code, amount, n, symbol="AAPL") for n, (code, (_, amount)) in enumerate(NTA_CODES.items())
}
FILL: dict[str, Any] = {
    "activity_type": "FILL", "cum_qty": "10", "id": "20240301100000300::7f0c4a8e-1d6e-4b7a-9b65-5c7d2f6a1e01",
    "leaves_qty": "0", "price": "180.25", "qty": "10", "side": "buy", "symbol": "AAPL",
    "transaction_time": "2024-03-01T15:00:00.300123Z", "order_id": P, "type": "fill", "order_status": "filled",
}  # fmt: skip
SPLIT_PAIR: list[dict[str, Any]] = [
    nta("SPLIT", "0", 900, symbol="AAPL", qty="-10", price="100", description="Split: 2 for 1 AAPL"),
    nta("SPLIT", "0", 901, symbol="AAPL", qty="20", price="50", description="Split: 2 for 1 AAPL"),
]
CFEE_IN_COIN: dict[str, Any] = nta(
    "CFEE", "0", 902, symbol="BTCUSD", qty="-0.000025", price="60000", description="Coin Pair Transaction Fee"
)


def update(event: str, status: str, *, execution: bool = False, **fields: Any) -> dict[str, Any]:
    """A trade_updates frame; ``execution`` adds the execution's price/qty/position_qty."""
    data: dict[str, Any] = {"event": event, "timestamp": "2024-03-01T10:00:00.300123456-05:00",
                            "order": order(P, status=status, **fields)}
    if event != "accepted":
        data["execution_id"] = "2f63ea93-423d-4169-b3f6-3fdafc10c418"
    if execution:
        data.update(price="180.25", qty=fields.get("filled_qty", "10"), position_qty="10")
    return {"stream": "trade_updates", "data": data}


TRADE_UPDATES: dict[str, dict[str, Any]] = {
    "new": update("new", "new"),
    "accepted": update("accepted", "accepted"),
    "pending_new": update("pending_new", "pending_new"),
    "fill": update("fill", "filled", execution=True, filled_qty="10", filled_avg_price="180.25"),
    "partial_fill": update("partial_fill", "partially_filled", execution=True, filled_qty="4",
                           filled_avg_price="180.25"),
    "canceled": update("canceled", "canceled", canceled_at="2024-03-01T15:01:00Z"),
    "expired": update("expired", "expired", expired_at="2024-03-01T21:00:00Z"),
    "replaced": update("replaced", "replaced", replaced_by=TP, replaced_at="2024-03-01T15:01:00Z"),
    "rejected": update("rejected", "rejected", failed_at="2024-03-01T15:00:01Z"),
    "done_for_day": update("done_for_day", "done_for_day"),
    "stopped": update("stopped", "stopped"),
    "pending_cancel": update("pending_cancel", "pending_cancel"),
    "pending_replace": update("pending_replace", "pending_replace"),
    "calculated": update("calculated", "calculated"),
    "suspended": update("suspended", "suspended"),
    "order_replace_rejected": update("order_replace_rejected", "new"),
    "order_cancel_rejected": update("order_cancel_rejected", "new"),
    "restated": update("restated", "new"),
}  # fmt: skip
FILL_WITHOUT_EXECUTION_ID: dict[str, Any] = update(
    "fill", "filled", execution=True, filled_qty="10", filled_avg_price="180.25"
)
del FILL_WITHOUT_EXECUTION_ID["data"]["execution_id"]
