"""Who may reach the dashboard: the bind address, and the token any non-loopback bind requires.

``parse_bind("127.0.0.1:8765")`` gives ``("127.0.0.1", 8765)``; ``check_bind`` refuses (one
``ConfigError`` line) a bind that is not loopback unless ``CHMGR_WEB_TOKEN`` is set. A request
carries the token as ``Authorization: Bearer <token>``, in the ``chmgr_token`` cookie, or once
as ``?token=`` (which sets the cookie and redirects to the same path, ``same_origin_path``); it
is compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from typing import Final

from coldharbour.config import Secret, Settings
from coldharbour.errors import ConfigError

COOKIE: Final = "chmgr_token"
QUERY: Final = "token"
LOOPBACK_NAMES: Final = frozenset({"localhost"})
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# A path a redirect may name: one leading slash, then plain path characters (no backslash, no
# ``//``, no control character: a browser reads ``/\\host`` or ``//host`` as another origin).
SAFE_PATH: Final = re.compile(r"/(?:[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)*/?)?")


def parse_bind(bind: str) -> tuple[str, int]:
    """Return (host, port) of ``host:port`` or ``[v6]:port``; ``ConfigError`` when malformed."""
    host, _, port_text = bind.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65_536:
        raise ConfigError(f"CHMGR_WEB_BIND: expected host:port such as 127.0.0.1:8765, found {bind!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Return True if ``host`` only ever means this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> tuple[str, int]:
    """Return where to listen; refuse a non-loopback bind without a token."""
    host, port = parse_bind(settings.web_bind)
    if not is_loopback(host) and not settings.web_token:
        raise ConfigError(
            f"CHMGR_WEB_BIND: {settings.web_bind} is not a loopback address; set CHMGR_WEB_TOKEN to serve it"
        )
    return host, port


def token_matches(expected: Secret, offered: str | None) -> bool:
    """Return True if ``offered`` is the token (constant-time compare; no token set → anyone)."""
    if not expected:
        return True
    if not offered:
        return False
    return hmac.compare_digest(expected.reveal().encode(), offered.encode())


def bearer(header: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` header, if any."""
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def same_origin_path(path: str) -> str:
    """Return ``path`` if a redirect to it stays on this origin, else ``/``."""
    return path if SAFE_PATH.fullmatch(path) else "/"
