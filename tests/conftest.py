"""Suite-wide configuration: fixture plugins, hypothesis profiles and the tier guard.

Markers are declared in pyproject.toml (``--strict-markers``): ``integration`` (the full tier:
real processes, a browser, or long), ``smoke`` (an integration test kept in the default run),
``chaos`` (fault injection). The tiers are described in docs/testing.md.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = [
    "tests.fixtures.pg",
    "tests.fixtures.bus",
    "tests.fixtures.broker",
    "tests.fixtures.stack",
]

# A 2-core CI machine shared with PostgreSQL and subprocesses: no per-example deadline. CI runs on
# a clean clone, so its examples must not depend on a random seed or a saved example database:
# derandomized (the same examples every run, so a red run repeats), no database, and a failure
# prints the blob that reproduces it (@reproduce_failure).
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
    print_blob=True,
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


# Fixtures that start real processes or a browser: a test using one belongs to the full tier.
FULL_TIER_FIXTURES = frozenset({"stack_dir", "chaos_stack", "browser", "page"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test that starts programs or a browser without ``@pytest.mark.integration``.

    The default run must stay fast (docs/testing.md): a test is kept there only by being
    unmarked or by ``smoke``; this makes the first kind impossible for whole-stack tests.
    """
    unmarked = [
        item.nodeid for item in items
        if FULL_TIER_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("integration") is None
    ]  # fmt: skip
    if unmarked:
        raise pytest.UsageError(
            "these tests start programs or a browser but are not marked integration "
            f"(docs/testing.md): {', '.join(unmarked[:10])}"
        )
