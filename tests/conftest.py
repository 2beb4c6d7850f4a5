"""Suite-wide configuration: fixture plugins and hypothesis profiles.

Markers are declared in pyproject.toml (``--strict-markers``): ``integration`` (real processes),
``slow`` (excluded by default), ``chaos`` (fault injection).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

pytest_plugins = [
    "tests.fixtures.pg",
    "tests.fixtures.bus",
    "tests.fixtures.broker",
    "tests.fixtures.stack",
]

# A 2-core CI machine shared with PostgreSQL and subprocesses: no per-example deadline.
settings.register_profile(
    "ci", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
