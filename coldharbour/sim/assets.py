"""Asset classes as Alpaca names them: ``us_equity`` symbols and ``crypto`` pairs.

Alpaca writes a crypto pair with a slash on orders, fills and activities (``BTC/USD``) and
without one on positions (``BTCUSD``); ``GET /v2/positions/{symbol}`` takes either form (the
slashed one URL-encoded or not). The fake keeps the slashed form in its book and renders the
position form at the wire.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

CRYPTO_QUOTES: Final = ("USD", "USDT", "USDC", "BTC")


def is_crypto(symbol: str) -> bool:
    """Return True for a crypto pair in the slashed form (``BTC/USD``)."""
    base, slash, quote = symbol.partition("/")
    return bool(slash and base and quote in CRYPTO_QUOTES)


def asset_class(symbol: str) -> str:
    """Return Alpaca's ``asset_class`` of ``symbol`` (``crypto`` or ``us_equity``)."""
    return "crypto" if is_crypto(symbol) else "us_equity"


def position_symbol(symbol: str) -> str:
    """Return the symbol as Alpaca writes it on a position (``BTC/USD`` -> ``BTCUSD``)."""
    return symbol.replace("/", "") if is_crypto(symbol) else symbol


def book_symbol(text: str, held: Iterable[str]) -> str:
    """Return the book's symbol for a path segment: ``BTCUSD``/``BTC/USD`` -> ``BTC/USD`` when held."""
    wanted = text.strip().upper()
    for symbol in held:
        if wanted in {symbol, position_symbol(symbol)}:
            return symbol
    return wanted
