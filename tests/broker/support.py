"""Test doubles for the broker adapter: a recording sink and account settings for a fake broker."""

from __future__ import annotations

from typing import TypeVar

from coldharbour.config import AccountSettings, Secret
from coldharbour.messages import Msg
from tests.fixtures.broker import FakeBroker

M = TypeVar("M", bound=Msg)


class RecordingSink:
    """A ``Sink`` that keeps every (topic, message) it is given, in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Msg]] = []

    def publish(self, topic: str, message: Msg) -> Msg:
        self.items.append((topic, message))
        return message

    def of(self, kind: type[M]) -> list[M]:
        """Return the messages of type ``kind``."""
        return [m for _, m in self.items if isinstance(m, kind)]


def account_for(
    broker: FakeBroker, name: str = "demo", *, secret: str | None = None, slug: str | None = None
) -> AccountSettings:
    """Return settings of ``name`` at ``broker`` (optionally with a wrong secret)."""
    key, real_secret = broker.keys(name)
    return AccountSettings(
        name=name,
        slug=slug or name.replace("-", "_"),
        api_key=Secret(key),
        secret_key=Secret(secret if secret is not None else real_secret),
        base_url=broker.base_url,
    )
