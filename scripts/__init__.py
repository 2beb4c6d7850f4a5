"""Developer scripts (demo, benchmarks); not part of the installed package."""
