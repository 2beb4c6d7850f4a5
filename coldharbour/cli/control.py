"""`chmgr up|down|start|stop|restart`: supervisord itself and the programs it runs.

``up`` starts supervisord from the project's ``supervisord.conf`` with the current environment,
after creating ``$CHMGR_RUN_DIR`` and its ``logs/`` with mode 0700, exporting the run dir as an
absolute path and putting this interpreter first on ``PATH`` (the conf runs ``python -m
workers.<program>``). Program names are checked against ``runtime.PROGRAMS``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Final

import typer

from coldharbour import runtime
from coldharbour.config import Settings
from coldharbour.errors import ChmgrError, SupervisorError
from coldharbour.supervisor import (
    CONFIG_TEMPLATE,
    LOGS_DIR_NAME,
    UNIX_SOCKET_PATH_MAX,
    SupervisorClient,
    socket_path,
)

ALL: Final = "all"
UP_TIMEOUT_S: Final = 20.0
DOWN_TIMEOUT_S: Final = 120.0
RUN_DIR_MODE: Final = 0o700

ProgramArgument = Annotated[str, typer.Argument(help="a program name (bus, state, …) or 'all'", show_default=False)]


def client_for(settings: Settings) -> SupervisorClient:
    """Return the client for the supervisord of ``settings.run_dir``."""
    return SupervisorClient(socket_path(Path(settings.run_dir).resolve()))


def check_program(name: str) -> list[str]:
    """Return the programs ``name`` stands for (itself, or every program for 'all')."""
    if name == ALL:
        return list(runtime.PROGRAMS)
    if name not in runtime.PROGRAMS:
        raise ChmgrError(f"no such program {name!r} (known: {', '.join(runtime.PROGRAMS)}, or all)")
    return [name]


def _configured(client: SupervisorClient, names: Sequence[str]) -> list[str]:
    known = [info.name for info in client.info()]
    missing = [name for name in names if name not in known]
    if missing and len(names) == 1:
        raise SupervisorError(f"no such program {names[0]!r} in supervisord (known: {', '.join(known) or 'none'})")
    return [name for name in names if name in known]


def _start_all(client: SupervisorClient, names: Sequence[str]) -> None:
    """Start ``names`` in order and wait for all of them (one program: supervisord's own wait)."""
    if len(names) == 1:
        client.start(names[0])
        return
    for name in names:
        client.start(name, wait=False)
    client.wait_running(names)


def start(program: ProgramArgument) -> None:
    """Start a program (or all, bus first), waiting until supervisord reports it RUNNING."""
    names = check_program(program)
    client = client_for(runtime.load_from_environment())
    configured = _configured(client, names)
    _start_all(client, configured)
    after = {info.name: info for info in client.info()}
    for name in configured:
        typer.echo(f"{name}: {after[name].state.lower()} (pid {after[name].pid})")


def stop(program: ProgramArgument) -> None:
    """Stop a program (or all, in reverse start order), waiting for it to exit."""
    names = check_program(program)
    client = client_for(runtime.load_from_environment())
    for name in reversed(_configured(client, names)):
        client.stop(name)
        typer.echo(f"{name}: stopped")


def restart(program: ProgramArgument) -> None:
    """Restart a program (or all: stop in reverse order, then start in order); print old and new pid."""
    names = check_program(program)
    client = client_for(runtime.load_from_environment())
    configured = _configured(client, names)
    before = {info.name: info.pid for info in client.info()}
    for name in reversed(configured):
        client.stop(name)
    _start_all(client, configured)
    after = {info.name: info for info in client.info()}
    for name in configured:
        typer.echo(f"{name}: restarted, {after[name].state.lower()} (pid {before.get(name)} -> {after[name].pid})")


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` and ``run_dir/logs`` with mode 0700 (and tighten an existing one)."""
    for directory in (run_dir, run_dir / LOGS_DIR_NAME):
        directory.mkdir(parents=True, exist_ok=True, mode=RUN_DIR_MODE)
        os.chmod(directory, RUN_DIR_MODE)


def supervisord_environment(settings: Settings, environ: dict[str, str]) -> dict[str, str]:
    """Return the environment supervisord (and so every program) runs with."""
    env = dict(environ)
    env["CHMGR_RUN_DIR"] = str(Path(settings.run_dir).resolve())
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]).rstrip(os.pathsep)
    if env.get("CHMGR_CONFIG"):
        # Programs run in the project directory: a relative path would point elsewhere.
        env["CHMGR_CONFIG"] = str(Path(env["CHMGR_CONFIG"]).resolve())
    return env


def up(
    conf: Annotated[Path, typer.Option(help="supervisord configuration to use")] = CONFIG_TEMPLATE,
) -> None:
    """Start supervisord (daemonised) with the current environment; every program starts with it."""
    settings = runtime.load_from_environment()
    run_dir = Path(settings.run_dir).resolve()
    sock = socket_path(run_dir)
    if len(str(sock)) > UNIX_SOCKET_PATH_MAX:
        raise ChmgrError(
            f"CHMGR_RUN_DIR: {run_dir} is too long for a unix socket path ({len(str(sock))} > "
            f"{UNIX_SOCKET_PATH_MAX} characters): choose a shorter directory"
        )
    if not conf.is_file():
        raise ChmgrError(f"supervisord configuration not found at {conf}: pass --conf")
    client = SupervisorClient(sock)
    if client.is_running():
        typer.echo(f"supervisord is already running (socket {sock})")
        return
    prepare_run_dir(run_dir)
    command = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
    env = supervisord_environment(settings, dict(os.environ))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=UP_TIMEOUT_S, check=False)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        detail = lines[0] if lines else f"exit status {result.returncode}"
        raise SupervisorError(f"supervisord did not start: {detail}")
    deadline = time.monotonic() + UP_TIMEOUT_S
    while not client.is_running():
        if time.monotonic() >= deadline:
            raise SupervisorError(
                f"supervisord did not answer on {sock} within {UP_TIMEOUT_S:.0f} s: see {run_dir / LOGS_DIR_NAME}"
            )
        time.sleep(0.1)  # poll: supervisord binds the socket, then daemonises
    typer.echo(f"supervisord running (pid {client.pid()}, socket {sock}, logs {run_dir / LOGS_DIR_NAME})")


def down() -> None:
    """Stop every program and supervisord itself; wait until it has exited."""
    settings = runtime.load_from_environment()
    client = client_for(settings)
    if not client.is_running():
        typer.echo(f"supervisord is not running (socket {client.socket_path})")
        return
    pid = client.pid()
    client.shutdown()
    deadline = time.monotonic() + DOWN_TIMEOUT_S
    client.wait_gone(DOWN_TIMEOUT_S)
    while _alive(pid):
        if time.monotonic() >= deadline:
            raise SupervisorError(f"supervisord (pid {pid}) did not exit within {DOWN_TIMEOUT_S:.0f} s")
        time.sleep(0.1)  # poll: the daemon is not our child, so there is nothing to wait() on
    typer.echo(f"supervisord stopped (pid {pid})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
