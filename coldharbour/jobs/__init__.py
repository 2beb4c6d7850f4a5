"""When work runs: the job clock, the periodic per-account job loop, session phases, the scheduler.

``clock`` is the time port (``SystemClock``, ``ManualClock`` for tests) and ``run_periodic`` /
``run_per_account``, the loop every periodic job shares; ``phases`` tells a worker which
``SessionPhaseChanged`` is a session start or end; ``scheduler`` turns the broker calendar into
session phases and starts and stops the session programs through supervisord.
"""
