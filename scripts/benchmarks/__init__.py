"""`scripts/bench`: hot-path figures, each beside its raw baseline measured in the same run."""
