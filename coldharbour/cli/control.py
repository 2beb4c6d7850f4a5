"""`chmgr up|down|start|stop|restart`: supervisord itself and the programs it runs.

``up`` starts supervisord from the project's ``supervisord.conf`` with the current environment,
after preparing the run directory (``config.prepare_run_dir``: created with mode 0700, never a
chmod of a directory the project did not create), exporting it as an absolute path and putting
this interpreter first on ``PATH`` (the conf runs ``python -m workers.<program>``). The conf
keeps everything in ``<project root>/run`` (the default run directory); when ``CHMGR_RUN_DIR``
names another one, ``up`` starts supervisord from a copy rendered for it,
``$CHMGR_RUN_DIR/supervisord.conf`` (``--write-conf`` only writes it and prints its path).
Program names are checked against ``runtime.PROGRAMS``.
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
from coldharbour.cli.status import stack_health
from coldharbour.cli.terminal import printable
from coldharbour.config import LOGS_DIR_NAME, Settings, prepare_run_dir
from coldharbour.errors import ChmgrError, SupervisorError
from coldharbour.health import Health, Streaming, client_for, first_cause
from coldharbour.retry import poll_until
from coldharbour.supervisor import (
    CONFIG_TEMPLATE,
    UNIX_SOCKET_PATH_MAX,
    SupervisorClient,
    render_config,
    socket_path,
)

HEARTBEAT_LISTEN_S: Final = 1.5
ALL: Final = "all"
UP_TIMEOUT_S: Final = 20.0
UP_WORKING_S: Final = 60.0  # `up` waits this long for every account to work
UP_POLL_S: Final = 1.0
DOWN_TIMEOUT_S: Final = 120.0

ProgramArgument = Annotated[str, typer.Argument(help="a program name (bus, state, …) or 'all'", show_default=False)]


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


def conf_for(run_dir: Path, conf: Path) -> Path:
    """Return the conf supervisord must read for ``run_dir``: ``conf`` itself when its
    ``%(here)s/run`` is ``run_dir``, else a copy rendered for ``run_dir`` at
    ``run_dir/supervisord.conf`` (how ``CHMGR_RUN_DIR`` wins over the conf's default)."""
    if not conf.is_file():
        raise ChmgrError(f"supervisord configuration not found at {conf}: pass --conf")
    if conf.resolve().parent / "run" == run_dir:
        return conf
    return render_config(run_dir / CONFIG_TEMPLATE.name, run_dir, template=conf)


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
    write_conf: Annotated[
        bool, typer.Option("--write-conf", help="only prepare the run dir and print the conf supervisord -c needs")
    ] = False,
    wait_s: Annotated[
        float, typer.Option("--wait-s", min=0.0, help="wait this long for every account to work (0: do not wait)")
    ] = UP_WORKING_S,
) -> None:
    """Start supervisord (daemonised) with the current environment; every program starts with it.

    Then wait until every account works (``coldharbour.health``), or until a cause is known: it
    is printed as one line and the command exits 1 (so does a wait that runs out). While it
    waits, each move of the start-up's progress is printed (``trades: n of N accounts streaming``).
    """
    settings = runtime.load_from_environment()
    run_dir = Path(settings.run_dir).resolve()
    sock = socket_path(run_dir)
    if len(str(sock)) > UNIX_SOCKET_PATH_MAX:
        raise ChmgrError(
            f"CHMGR_RUN_DIR: {run_dir} is too long for a unix socket path ({len(str(sock))} > "
            f"{UNIX_SOCKET_PATH_MAX} characters): choose a shorter directory"
        )
    client = SupervisorClient(sock)
    if not write_conf and client.is_running():
        typer.echo(f"supervisord is already running (socket {sock})")
        wait_working(settings, client, wait_s)
        return
    prepare_run_dir(run_dir)
    conf = conf_for(run_dir, conf)
    if write_conf:
        typer.echo(str(conf))
        return
    command = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
    env = supervisord_environment(settings, dict(os.environ))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=UP_TIMEOUT_S, check=False)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        detail = lines[0] if lines else f"exit status {result.returncode}"
        raise SupervisorError(f"supervisord did not start: {detail}")
    if not poll_until(client.is_running, UP_TIMEOUT_S):  # polled: it binds the socket, then daemonises
        raise SupervisorError(
            f"supervisord did not answer on {sock} within {UP_TIMEOUT_S:.0f} s: see {run_dir / LOGS_DIR_NAME}"
        )
    typer.echo(f"supervisord running (pid {client.pid()}, socket {sock}, logs {run_dir / LOGS_DIR_NAME})")
    wait_working(settings, client, wait_s)


def wait_working(settings: Settings, client: SupervisorClient, wait_s: float) -> None:
    """Return once every account works; raise ``ChmgrError`` (one line) with the first cause
    seen twice in a row (a passing start-up blip is not a cause), or when ``wait_s`` runs out."""
    if wait_s <= 0:
        return
    seen: list[str | None] = [None]
    last: list[Health] = []
    progress: list[Streaming | None] = [None]

    def working() -> bool:
        infos = {info.name: info for info in client.info()}
        health, _, _ = stack_health(settings, infos, HEARTBEAT_LISTEN_S)
        last[:] = [health]
        if health.is_working:
            return True
        streaming = health.streaming
        if streaming is not None and not streaming.complete and streaming != progress[0]:
            typer.echo(printable(streaming.line))  # start-up progress: n of N accounts streaming
        progress[0] = streaming
        cause = first_cause(health.findings, settled=True)
        line = cause.line if cause is not None else None
        if line is not None and line == seen[0]:
            raise ChmgrError(printable(line))
        seen[0] = line
        return False

    # Polled: the programs report in their heartbeats, once a second.
    if poll_until(working, wait_s, interval_s=UP_POLL_S):
        typer.echo(printable(f"working: account {', account '.join(last[0].working)}"))
        return
    health = last[0]
    cause = first_cause(health.findings)
    what = cause.line if cause else (f"waiting: {health.waiting[0]}" if health.waiting else "not working")
    raise ChmgrError(printable(f"not working after {wait_s:.0f} s: {what}"))


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
    # Polled: the daemon is not our child, so there is nothing to wait() on.
    if not poll_until(lambda: not _alive(pid), max(0.0, deadline - time.monotonic())):
        raise SupervisorError(f"supervisord (pid {pid}) did not exit within {DOWN_TIMEOUT_S:.0f} s")
    typer.echo(f"supervisord stopped (pid {pid})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
