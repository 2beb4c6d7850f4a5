"""Glue for the analytics workers (cashflows, equity, metrics): fetch, compute, publish.

Each module reads the DB through read-only connections and the broker through
``broker.reads``, hands the inputs to the pure ``coldharbour.domain`` functions, and publishes
the results on the bus for ``state`` (the only writer) to store. Nothing here writes to the DB.
"""
