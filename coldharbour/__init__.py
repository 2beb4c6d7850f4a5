"""Cold Harbour Account Manager."""

__version__ = "0.1.0"
