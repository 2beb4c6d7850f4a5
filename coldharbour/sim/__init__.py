"""The fake Alpaca broker (REST + trade_updates stream + matching engine) and simulators.

``engine`` and the modules it uses are pure; ``http``, ``ws`` and ``broker`` do the I/O.
Importing this package has no side effects.
"""
