"""Typed changes: splitting (poison isolation) and chunking (start-up commits) keep every row once."""

from __future__ import annotations

from datetime import date

from coldharbour.domain import changes as ch


def _rows(changes: list[ch.Change]) -> list[object]:
    out: list[object] = []
    for change in changes:
        match change:
            case ch.OpenRows(upserts=ups, deletes=dels) | ch.ClosedSlices(upserts=ups, deletes=dels):
                out += [*ups, *dels]
            case ch.RawOrders(rows=rows):
                out += rows
    return out


def test_chunks_cut_big_changes_by_rows_and_keep_every_row_once() -> None:
    opened = ch.OpenRows("demo", tuple((f"p{i}",) for i in range(12)), ("gone",))
    closed = ch.ClosedSlices("demo", (("l1", "x1"), ("l2", "x1")), (ch.Announce.NEVER, ch.Announce.ALWAYS),
                             (("l0", "x0"),))
    orders = ch.RawOrders("demo", (("o1",),))

    groups = ch.chunks([opened, closed, orders], 5)

    # 13 open rows cut 5 + 5 + 2 (+ 1 delete); a piece never straddles groups
    assert [sum(ch.size(c) for c in g) for g in groups] == [5, 5, 3, 4]
    assert _rows([c for g in groups for c in g]) == _rows([opened, closed, orders])
    split_closed = [c for g in groups for c in g if isinstance(c, ch.ClosedSlices) and c.upserts]
    assert [c.announce for c in split_closed] == [(ch.Announce.NEVER, ch.Announce.ALWAYS)]


def test_split_gives_one_row_per_change() -> None:
    daily = ch.DailyEquity("demo", (("d1",), ("d2",)), (date(2024, 3, 1),))

    parts = ch.split(daily)

    assert parts == [ch.DailyEquity("demo", (("d1",),)), ch.DailyEquity("demo", (("d2",),)),
                     ch.DailyEquity("demo", keep_only=(date(2024, 3, 1),))]
    assert all(ch.size(p) == 1 for p in parts)
