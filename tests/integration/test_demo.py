"""`scripts/demo --check`: the one-command demo reaches live positions and leaves nothing behind.

Full tier (``integration``): it starts its own PostgreSQL, fake broker, bot, feed and supervisord.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHECK_S = 60
DEMO_TIMEOUT_S = 300


def _processes_marked(demo_dir: str) -> list[int]:
    """Return pids whose environment carries the demo's marker (every process it started has it)."""
    marker = f"CHMGR_DEMO_DIR={demo_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_check_reaches_live_positions_and_cleans_up() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "demo"), "--check", str(CHECK_S)],
        capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, check=False,
    )  # fmt: skip

    output = result.stdout + result.stderr
    demo_dir = re.search(r"working directory (/tmp/chd-\S+)", output)
    assert demo_dir is not None, output
    ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", output)]
    assert result.returncode == 0, output[-3000:]
    assert "demo: positions live:" in output
    assert "demo: every program running with a heartbeat" in output
    assert "demo: stopped; nothing left running" in output
    assert not Path(demo_dir.group(1)).exists()
    assert _processes_marked(demo_dir.group(1)) == []
    assert ports
    assert not any(_listening(port) for port in set(ports))
