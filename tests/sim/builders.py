"""Builders for engine tests: an engine at a fixed instant, order bodies with defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from coldharbour.sim.engine import DEFAULT_ACCOUNTS, AccountSpec, Engine, EngineConfig, TradeUpdate

# A Friday during regular hours (15:00 UTC = 10:00 New York).
T0 = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """Return ``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def make_engine(
    *accounts: AccountSpec, partial_fills: bool = False, slices: int = 3, pending_new: bool = False
) -> Engine:
    """Return an engine at ``T0`` (account ``demo`` unless others are given)."""
    config = EngineConfig(partial_fills=partial_fills, partial_fill_slices=slices, pending_new_events=pending_new)
    return Engine(accounts or DEFAULT_ACCOUNTS, T0, seed=1, config=config)


def order_body(**overrides: Any) -> dict[str, Any]:
    """Return a market buy of 10 AAPL, day, with ``overrides`` applied (None removes a key)."""
    body: dict[str, Any] = {"symbol": "AAPL", "qty": 10, "side": "buy", "type": "market", "time_in_force": "day"}
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def bracket_body(take_profit: float = 200.0, stop: float = 170.0, **overrides: Any) -> dict[str, Any]:
    """Return a GTC market bracket buy of 10 AAPL with the given exits."""
    return order_body(
        time_in_force="gtc",
        order_class="bracket",
        take_profit={"limit_price": take_profit},
        stop_loss={"stop_price": stop},
        **overrides,
    )


def events(updates: list[TradeUpdate]) -> list[tuple[str, str]]:
    """Return (event, order type) per update, to compare sequences."""
    return [(str(u.data["event"]), str(u.data["order"]["type"])) for u in updates]  # type: ignore[index]


def order_of(update: TradeUpdate) -> dict[str, Any]:
    """Return the order JSON carried by a trade update."""
    return update.data["order"]  # type: ignore[return-value]


def price(text: str | float) -> Decimal:
    """Return a Decimal price."""
    return Decimal(str(text))
