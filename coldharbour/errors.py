"""The error hierarchy: everything we raise on purpose derives from ``ChmgrError``."""

from __future__ import annotations


class ChmgrError(Exception):
    """Root of every error Cold Harbour raises on purpose; its message is one readable line."""


class ConfigError(ChmgrError):
    """A setting is missing or invalid; the message names the variable, expectation and value."""


class BusError(ChmgrError):
    """A bus endpoint cannot be bound or connected."""


class DatabaseError(ChmgrError):
    """PostgreSQL is unreachable or refused an operation (message is DSN-redacted)."""


class SchemaError(DatabaseError):
    """The database schema is missing, newer than this code, or a migration failed."""


class BrokerError(ChmgrError):
    """The broker answered with an error, a malformed body, or not within the deadline."""


class SupervisorError(ChmgrError):
    """supervisord is unreachable or refused a request (fault turned into a sentence)."""
