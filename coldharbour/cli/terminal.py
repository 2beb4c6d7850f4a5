"""What reaches the operator's terminal: text from the broker, the database or a log, made inert.

A symbol, an account name or a log line may hold an ESC byte (a terminal escape sequence that
can rewrite the screen or the window title), another control character or a bidirectional
override; ``printable`` shows each as a visible escape (``\\x1b``, ``\\u202e``). Values are
put in rich tables as ``Text`` so that ``[`` in a value is never read as markup.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from rich.text import Text

# C0 and C1 controls and DEL; format characters (Cf: bidi overrides, zero-width) are checked below.
CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """Return ``text`` with every control or format character written as a visible escape."""
    if text.isprintable():
        return text
    text = CONTROL.sub(lambda m: _escape(m.group()), text)
    return "".join(_escape(c) if unicodedata.category(c) == "Cf" else c for c in text)


def cell(text: str) -> Text:
    """Return ``text`` made printable as a rich ``Text`` (no markup)."""
    return Text(printable(text))
