"""Pure domain logic: orders, ledger, positions, equity, metrics, cash flows, schedules.

Nothing in this package does I/O, reads a clock or the environment, or logs. Time and inputs
are arguments; outcomes (including rejections with a reason) are return values.
"""
