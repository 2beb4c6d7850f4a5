"""The open-position row of a lot (docs/spec.md §2.2) and the decision to push it to the UI (§4, §6).

With ``q`` = qty, ``e`` = avg_fill, ``b`` = avg_px_symbol (broker WAC, else ``e``), ``m`` = mark,
``s`` = +1 long / −1 short:

* ``buy_value = q·e``; ``mkt_value = q·m``; ``profit_loss = s·q·(m − b)`` (broker basis);
  ``profit_loss_lot = s·q·(m − e)`` (strategy basis);
* ``tp_sl_reach_pct``: progress toward the take-profit is positive, toward the stop negative,
  rounded to 2 decimals;
* no mark → ``mkt_px``, ``mkt_value``, both P&Ls and the reach are null, never 0 (docs/defects.md D16);
* ``moved_flag``: ``OK`` (a replacement moved the stop to break-even), ``Already`` (placed
  there), ``—`` (not protective, or no stop);
* ``days_to_expire``: whole days to the earliest live exit leg's expiry (capped at the GTC
  horizon), null without legs; ``holding_days``: whole days since the first entry fill.

Parameters (``RowParams``) and the clock (``now``, UTC ns) are arguments.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import msgspec

from coldharbour.domain.money import HUNDRED, ZERO, round_pct, tick_size
from coldharbour.domain.types import (
    NO_BREAK_EVEN,
    NS_PER_DAY,
    Leg,
    Lot,
    LotLegs,
    LotSide,
    MovedFlag,
    OpenRow,
    side_sign,
)

# Fields whose change is pushed at once (docs/spec.md §4 "structural"); the mark has its threshold.
STRUCTURAL_FIELDS: Final = ("qty", "side", "avg_fill", "avg_px_symbol", "sl_child", "sl_px",
                            "tp_child", "tp_px", "moved_flag")


class RowParams(msgspec.Struct, frozen=True, kw_only=True):
    """Knobs of the row formulas: ``MIN_STOP_GAP`` (dollars) and ``ALPACA_GTC_DAYS``."""

    min_stop_gap: Decimal = Decimal("0.01")
    gtc_days: int = 90


DEFAULT_PARAMS: Final = RowParams()


def holding_days(filled_at: int, now: int) -> int:
    """Return whole days from ``filled_at`` to ``now`` (both UTC ns)."""
    return (now - filled_at) // NS_PER_DAY


def days_to_expire(legs: LotLegs, now: int, gtc_days: int = 90) -> int | None:
    """Return whole days until the earliest live leg expires (≤ ``gtc_days``); None without legs.

    A leg without ``expires_at`` expires ``gtc_days`` after its creation (Alpaca's GTC horizon).
    """
    expiries = [leg.expires_at if leg.expires_at is not None
                else leg.created_at + gtc_days * NS_PER_DAY
                for leg in (legs.take_profit, legs.stop_loss) if leg is not None]
    if not expiries:
        return None
    return min((min(expiries) - now) // NS_PER_DAY, gtc_days)


def break_even_level(side: LotSide, avg_fill: Decimal, min_stop_gap: Decimal) -> Decimal:
    """Return ``L = e − s·max(MIN_STOP_GAP, tick)``: the least protective stop price."""
    gap = max(min_stop_gap, tick_size(avg_fill))
    return avg_fill - side_sign(side) * gap


def moved_flag(side: LotSide, avg_fill: Decimal, stop: Leg | None,
               min_stop_gap: Decimal) -> MovedFlag:
    """Return ``OK``, ``Already`` or ``—`` (U+2014) for the lot's live stop leg."""
    if stop is None or stop.price is None:
        return NO_BREAK_EVEN
    level = break_even_level(side, avg_fill, min_stop_gap)
    sign = side_sign(side)

    def is_protective(price: Decimal | None) -> bool:
        return price is not None and sign * (price - level) >= 0

    if not is_protective(stop.price):
        return NO_BREAK_EVEN
    if stop.is_replaced and not is_protective(stop.original_price):
        return "OK"
    return "Already"


def tp_sl_reach_pct(side: LotSide, avg_fill: Decimal, mark: Decimal | None,
                    tp_px: Decimal | None, sl_px: Decimal | None) -> Decimal | None:
    """Return the signed progress toward TP (+) or SL (−) in percent, rounded to 2 decimals."""
    if mark is None:
        return None
    move = mark - avg_fill
    toward_tp = side_sign(side) * move >= 0
    target = tp_px if toward_tp else sl_px
    if target is None or target == avg_fill:
        return None
    pct = HUNDRED * move / (target - avg_fill)
    return round_pct(pct if toward_tp else -pct)


def _mark_fields(row_side: LotSide, qty: Decimal, avg_fill: Decimal, wac: Decimal,
                 mark: Decimal | None, tp_px: Decimal | None,
                 sl_px: Decimal | None) -> dict[str, Decimal | None]:
    if mark is None:
        return {"mkt_px": None, "mkt_value": None, "profit_loss": None,
                "profit_loss_lot": None, "tp_sl_reach_pct": None}
    sign = side_sign(row_side)
    return {
        "mkt_px": mark,
        "mkt_value": qty * mark,
        "profit_loss": sign * qty * (mark - wac),
        "profit_loss_lot": sign * qty * (mark - avg_fill),
        "tp_sl_reach_pct": tp_sl_reach_pct(row_side, avg_fill, mark, tp_px, sl_px),
    }


def build_open_row(lot: Lot, *, legs: LotLegs, mark: Decimal | None, wac: Decimal | None,
                   now: int, params: RowParams = DEFAULT_PARAMS, bar_px: Decimal | None = None,
                   bar_ts: int | None = None) -> OpenRow:
    """Return the open-position row of ``lot`` with every derived column.

    Parameters
    ----------
    legs: the lot's live exit legs (``orders.live_legs``).
    mark: the last trade price (dollars), or None when no tick was seen: P&Ls stay null.
    wac: the broker's average entry price for the symbol; None falls back to ``avg_fill``.
    now: UTC ns, for ``holding_days``, ``days_to_expire`` and ``updated_at``.
    """
    avg_fill = lot.avg_fill
    wac_px = wac if wac is not None else avg_fill
    tp, sl = legs.take_profit, legs.stop_loss
    tp_px = tp.price if tp is not None else None
    sl_px = sl.price if sl is not None else None
    marks = _mark_fields(lot.side, lot.qty, avg_fill, wac_px, mark, tp_px, sl_px)
    return OpenRow(
        parent_id=lot.parent_id, symbol=lot.symbol, side=lot.side, filled_at=lot.filled_at,
        qty=lot.qty, avg_fill=avg_fill, avg_px_symbol=wac_px,
        sl_child=sl.order_id if sl is not None else None, sl_px=sl_px,
        tp_child=tp.order_id if tp is not None else None, tp_px=tp_px,
        mkt_px=marks["mkt_px"], bar_px=bar_px, bar_ts=bar_ts,
        moved_flag=moved_flag(lot.side, avg_fill, sl, params.min_stop_gap),
        buy_value=lot.qty * avg_fill, holding_days=holding_days(lot.filled_at, now),
        days_to_expire=days_to_expire(legs, now, params.gtc_days),
        mkt_value=marks["mkt_value"], profit_loss=marks["profit_loss"],
        profit_loss_lot=marks["profit_loss_lot"], tp_sl_reach_pct=marks["tp_sl_reach_pct"],
        updated_at=now,
    )


def with_mark(row: OpenRow, mark: Decimal | None, now: int) -> OpenRow:
    """Return ``row`` re-priced at ``mark`` (the tick path: only mark-derived fields change)."""
    marks = _mark_fields(row.side, row.qty, row.avg_fill, row.avg_px_symbol, mark, row.tp_px,
                         row.sl_px)
    return msgspec.structs.replace(row, updated_at=now, **marks)


def should_push(previous: OpenRow | None, current: OpenRow, threshold_pct: Decimal) -> bool:
    """Return True when ``current`` must be pushed now rather than at the next flush.

    ``previous`` is the row as last pushed (None: never pushed). A structural field change, a
    mark appearing or disappearing, or a mark move of at least ``threshold_pct`` percent of the
    last pushed mark triggers a push.
    """
    if previous is None:
        return True
    for name in STRUCTURAL_FIELDS:
        if getattr(previous, name) != getattr(current, name):
            return True
    before, after = previous.mkt_px, current.mkt_px
    if before is None or after is None:
        return (before is None) != (after is None)
    if before == ZERO:
        return after != ZERO
    return abs(after - before) * HUNDRED >= threshold_pct * abs(before)
