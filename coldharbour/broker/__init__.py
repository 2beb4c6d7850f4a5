"""The broker adapter: Alpaca JSON → domain types, REST with deadlines and retries, the stream.

``convert`` is pure; ``rest``, ``stream`` and ``sync`` do the I/O (aiohttp, alpaca-py's
``TradingStream`` and ``websockets``); ``feed`` decodes the external price feed. alpaca-py
models and raw JSON never cross into ``coldharbour.domain``: everything leaves as domain types
or bus messages.
"""
