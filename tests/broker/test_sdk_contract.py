"""The private alpaca-py hooks ``coldharbour/broker/sdk_stream.py`` relies on, on the installed version.

``_HookedTradingStream`` overrides ``_start_ws``, ``_dispatch``, ``close`` and ``_consume``, runs
``_run_forever``, stops with ``stop_ws``, closes ``_ws`` itself and writes our backoff over
``_reconnect_min_backoff``/``_reconnect_max_backoff``. None of that is public API: an alpaca-py
release that renames one breaks the primary stream silently (it would fall back, or stop
reconnecting with our delays). This test fails first, naming the hook. The shapes are those of
alpaca-py 0.44's ``alpaca/trading/stream.py`` (github.com/alpacahq/alpaca-py).
"""

from __future__ import annotations

import inspect
from importlib.metadata import version
from pathlib import Path

import pytest
from alpaca.trading.stream import TradingStream

from coldharbour.broker.sdk_stream import _HookedTradingStream

# name → parameter names after ``self``
COROUTINE_HOOKS = {
    "_start_ws": [],
    "_dispatch": ["msg"],
    "close": [],
    "_run_forever": [],
    "stop_ws": [],
    "_consume": [],
}


def test_alpaca_py_is_below_its_next_major() -> None:
    major = int(version("alpaca-py").split(".")[0])

    assert major < 1, f"alpaca-py {version('alpaca-py')}: re-check every hook in sdk_stream.py, then the pin"


@pytest.mark.parametrize(("name", "params"), COROUTINE_HOOKS.items(), ids=list(COROUTINE_HOOKS))
def test_trading_stream_has_the_coroutine_hook(name: str, params: list[str]) -> None:
    method = getattr(TradingStream, name, None)

    assert method is not None, f"TradingStream.{name} is gone"
    assert inspect.iscoroutinefunction(method), f"TradingStream.{name} is no longer a coroutine"
    assert list(inspect.signature(method).parameters)[1:] == params


def test_trading_stream_takes_the_constructor_arguments_we_pass() -> None:
    params = inspect.signature(TradingStream.__init__).parameters

    assert {"api_key", "secret_key", "raw_data", "url_override", "websocket_params"} <= set(params)


def test_trading_stream_keeps_the_fields_we_read_and_overwrite() -> None:
    stream = TradingStream("key", "secret", raw_data=True, url_override="ws://127.0.0.1:9/stream")

    assert stream._ws is None
    assert (stream._reconnect_min_backoff, stream._reconnect_max_backoff) == (1.0, 30.0)
    # The SDK must read the fields we write, not only set them (else our backoff is ignored).
    # The module's text, not inspect.getsource(TradingStream): that parses with ``ast``, which on
    # CPython 3.11 raises "AST constructor recursion depth mismatch" after an earlier test hit
    # the recursion limit (the 5,000-deep TOML case).
    source = Path(inspect.getsourcefile(TradingStream) or "").read_text(encoding="utf-8")
    assert source.count("self._reconnect_min_backoff") >= 2
    assert source.count("self._reconnect_max_backoff") >= 2


def test_our_subclass_overrides_exactly_the_hooks_it_means_to() -> None:
    overridden = {name for name in vars(_HookedTradingStream) if name in COROUTINE_HOOKS}

    assert overridden == {"_start_ws", "_dispatch", "close", "_consume"}


def test_the_sdk_receive_loop_we_replace_still_does_what_ours_does() -> None:
    """``_HookedTradingStream._consume`` is the SDK's loop without the per-frame ``wait_for``:
    it must still be the loop ``_run_forever`` runs, reading the same stop queue, setting the
    same reconnect flag and handing each frame to ``_dispatch``."""
    source = Path(inspect.getsourcefile(TradingStream) or "").read_text(encoding="utf-8")
    consume = source[source.index("async def _consume(self)") : source.index("async def _run_forever(self)")]

    assert "await self._consume()" in source
    assert "self._stop_stream_queue.empty()" in consume
    assert "await self.close()" in consume
    assert "self._ws.recv()" in consume
    assert 'if msg.get("stream") == "trade_updates":\n' in consume
    assert "self._data_received = True" in consume
    assert "await self._dispatch(msg)" in consume
    assert source.count("self._stop_stream_queue.put_nowait") == 1  # stop_ws: then PrimaryClient.stop closes
