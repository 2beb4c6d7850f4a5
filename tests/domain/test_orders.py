"""Order chains: roots, successors, roles, cycles, unknown ids, the versioned book."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest

from coldharbour.domain.orders import (
    OrderBook,
    describe,
    entry_key,
    latest_successor,
    leg_role,
    live_legs,
    root_of,
)
from coldharbour.domain.types import from_datetime, to_datetime
from tests.domain.builders import T0, at, bracket, make_order, replace_order


def _grandchild_book(depth: int) -> tuple[OrderBook, str]:
    """A bracket whose stop was replaced ``depth`` times; return the book and the live stop."""
    orders = bracket("A")
    book = OrderBook(orders)
    current = orders[2]
    for n in range(1, depth + 1):
        retired, current = replace_order(current, f"A-sl-r{n}", when=at(n), stop_price=95 + n)
        book.upsert(retired)
        book.upsert(current)
    return book, current.id


@pytest.mark.parametrize("depth", [0, 1, 2, 5, 20])
def test_root_of_replaced_leg_any_depth_reaches_entry(depth: int) -> None:
    book, live = _grandchild_book(depth)
    found = root_of(book, live)
    assert found.ok
    assert found.order_id == "A"
    assert len(found.path) == depth + 2


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_latest_successor_follows_replacements_to_live_end(depth: int) -> None:
    book, live = _grandchild_book(depth)
    found = latest_successor(book, "A-sl")
    assert found.ok
    assert found.order_id == live


def test_root_of_entry_is_itself_and_replaced_entry_is_original() -> None:
    first = make_order(id="E1", order_type="limit", status="new", limit_price=100)
    retired, second = replace_order(first, "E2", when=at(1), limit_price=101)
    book = OrderBook([retired, second])
    assert root_of(book, "E1").order_id == "E1"
    assert root_of(book, "E2").order_id == "E1"
    assert entry_key(book, "E2").order_id == "E1"


def test_root_of_unknown_order_returns_error_not_exception() -> None:
    found = root_of(OrderBook(), "nope")
    assert not found.ok
    assert found.error is not None
    assert found.error.reason == "unknown_order"
    assert found.order_id == "nope"


def test_root_of_leg_with_unknown_parent_resolves_to_parent_id_with_error() -> None:
    book = OrderBook([make_order(id="L", side="sell", order_type="limit", parent_id="P")])
    found = root_of(book, "L")
    assert found.order_id == "P"
    assert found.error is not None
    assert found.error.order_id == "P"


@pytest.mark.parametrize("ids", [("X",), ("X", "Y"), ("X", "Y", "Z")])
def test_replacement_cycle_is_reported_and_terminates(ids: tuple[str, ...]) -> None:
    orders = [make_order(id=i, replaces=ids[(n + 1) % len(ids)], replaced_by=ids[n - 1])
              for n, i in enumerate(ids)]
    book = OrderBook(orders)
    for order_id in ids:
        up, down = root_of(book, order_id), latest_successor(book, order_id)
        assert up.error is not None
        assert up.error.reason == "cycle"
        assert down.error is not None
        assert down.error.reason == "cycle"
        assert leg_role(book, order_id) is None
        describe(book, order_id)  # never raises


def test_parent_cycle_is_reported() -> None:
    book = OrderBook([make_order(id="P", parent_id="Q"), make_order(id="Q", parent_id="P")])
    found = root_of(book, "P")
    assert found.error is not None
    assert found.error.reason == "cycle"


def test_latest_successor_with_unknown_successor_stops_at_last_known() -> None:
    book = OrderBook([make_order(id="S", status="replaced", replaced_by="S2")])
    found = latest_successor(book, "S")
    assert found.order_id == "S"
    assert found.error is not None
    assert found.error.order_id == "S2"


@pytest.mark.parametrize(("order_type", "role"), [
    ("limit", "take_profit"),
    ("stop", "stop_loss"),
    ("stop_limit", "stop_loss"),  # docs/defects.md D6: a stop-limit is a stop, not a take-profit
    ("trailing_stop", "stop_loss"),
    ("market", None),
])
def test_leg_role_by_order_type(order_type: str, role: str | None) -> None:
    book = OrderBook([make_order(id="P"), make_order(id="L", side="sell", parent_id="P",
                                                     order_type=order_type)])
    assert leg_role(book, "L") == role


def test_leg_role_of_entry_and_simple_order_is_none() -> None:
    book = OrderBook([*bracket("A"), make_order(id="M", side="sell", order_type="limit")])
    assert leg_role(book, "A") is None
    assert leg_role(book, "M") is None


def test_leg_role_follows_replacement_back_to_original_leg() -> None:
    book, live = _grandchild_book(3)
    assert leg_role(book, live) == "stop_loss"


def test_leg_linked_only_through_parent_legs_list() -> None:
    """D23: a leg version without parent_id is still a leg when the parent lists it."""
    parent = make_order(id="P", legs=("L",))
    leg = make_order(id="L", side="sell", order_type="stop")
    book = OrderBook([leg, parent])
    assert root_of(book, "L").order_id == "P"
    assert leg_role(book, "L") == "stop_loss"


def test_oco_top_level_is_take_profit_and_its_leg_is_stop() -> None:
    top = make_order(id="O", side="sell", order_type="limit", order_class="oco", legs=("O-sl",))
    stop = make_order(id="O-sl", side="sell", order_type="stop", order_class="oco",
                      parent_id="O")
    book = OrderBook([top, stop])
    assert leg_role(book, "O") == "take_profit"
    assert leg_role(book, "O-sl") == "stop_loss"
    assert describe(book, "O-sl").root_is_oco


def test_entry_key_of_exit_leg_is_the_leg_itself() -> None:
    book = OrderBook(bracket("A"))
    assert entry_key(book, "A").order_id == "A"
    assert entry_key(book, "A-tp").order_id == "A-tp"
    assert entry_key(OrderBook(), "ghost").order_id == "ghost"


def test_book_keeps_newest_version_and_reports_stale() -> None:
    book = OrderBook()
    newer = make_order(id="X", status="filled", updated_at=at(10))
    older = make_order(id="X", status="new", updated_at=at(5))
    same_time = make_order(id="X", status="canceled", updated_at=at(10))
    outcomes = [book.upsert(newer), book.upsert(older), book.upsert(newer),
                book.upsert(same_time)]
    assert outcomes == ["new", "stale", "unchanged", "updated"]
    stored = book.get("X")
    assert stored is not None
    assert stored.status == "canceled"


def test_overlay_shows_new_version_without_changing_book() -> None:
    book = OrderBook([make_order(id="P")])
    leg = make_order(id="L", side="sell", order_type="limit", parent_id="P")
    view = book.overlay(leg)
    assert root_of(view, "L").order_id == "P"
    assert view.legs_of("P") == ("L",)
    assert book.get("L") is None
    assert book.legs_of("P") == ()


def test_live_legs_follow_replacements_and_skip_dead_legs() -> None:
    book, live = _grandchild_book(2)
    retired = book.get("A-tp")
    assert retired is not None
    book.upsert(msgspec.structs.replace(retired, status="canceled", updated_at=at(9)))
    legs = live_legs(book, "A")
    assert legs.take_profit is None
    assert legs.stop_loss is not None
    assert legs.stop_loss.order_id == live
    assert legs.stop_loss.price == Decimal(97)
    assert legs.stop_loss.original_price == Decimal(95)
    assert legs.stop_loss.is_replaced


def test_live_legs_of_entry_without_legs_is_empty() -> None:
    legs = live_legs(OrderBook([make_order(id="E", created_at=T0)]), "E")
    assert legs.take_profit is None
    assert legs.stop_loss is None


def test_describe_lists_unknown_dependencies() -> None:
    book = OrderBook([make_order(id="R", side="sell", order_type="stop", replaces="L0")])
    info = describe(book, "R")
    assert info.root == "L0"
    assert info.unknown == frozenset({"L0"})
    assert {"R", "L0"} <= info.deps


def test_live_legs_of_replaced_entry_include_legs_of_the_replacement() -> None:
    first = make_order(id="E1", order_type="limit", status="new", limit_price=100)
    retired, second = replace_order(first, "E2", when=at(1), limit_price=101)
    take = make_order(id="TP", side="sell", order_type="limit", limit_price=120, parent_id="E2",
                      status="new")
    book = OrderBook([retired, second, take])
    legs = live_legs(book, root_of(book, "E2").order_id)
    assert legs.take_profit is not None
    assert legs.take_profit.order_id == "TP"


def test_time_conversions_round_trip_and_reject_naive() -> None:
    moment = datetime(2024, 3, 1, 15, 0, 0, 123456, tzinfo=UTC)
    assert to_datetime(from_datetime(moment)) == moment
    assert from_datetime(moment) == T0 + 123_456_000
    with pytest.raises(ValueError, match="naive"):
        from_datetime(datetime(2024, 3, 1))  # noqa: DTZ001
