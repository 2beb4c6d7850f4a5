"""XML-RPC client for supervisord over its unix socket; supervisord faults become sentences.

``SupervisorClient(socket_path)`` is what ``chmgr`` and the ``scheduler`` use to start, stop
and inspect programs. Programs are addressed by their plain name (``prices``), whatever group
supervisord put them in (``session:prices``): the client resolves the group itself.

Every failure leaves as ``SupervisorError`` with one readable line: an unknown name lists the
known ones, a spawn failure names the program's log file, an unreachable socket says how to
start supervisord. Starting a running program and stopping a stopped one are successes.

The production ``supervisord.conf`` (project root) is the only configuration. Every path it
writes is under ``%(here)s/run`` (the default run directory), and it hands that directory to
every program as ``CHMGR_RUN_DIR``, so ``supervisord -c supervisord.conf`` needs nothing else.
For another run directory ``render_config`` writes a copy with ``%(here)s/run`` replaced by it
and ``%(here)s`` pinned to the project root (``chmgr up`` does this when ``CHMGR_RUN_DIR`` is set
elsewhere; tests put their copy in ``tmp_path``), so the copy behaves exactly like the original.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

from coldharbour.config import PROJECT_ROOT
from coldharbour.errors import SupervisorError
from coldharbour.retry import poll_until

CONFIG_TEMPLATE: Final = PROJECT_ROOT / "supervisord.conf"
# How supervisord.conf names its run directory: the project root's run/.
CONF_RUN_DIR: Final = "%(here)s/run"
SOCKET_NAME: Final = "supervisor.sock"
PIDFILE_NAME: Final = "supervisord.pid"
# Linux sun_path holds 108 bytes including the terminating NUL; macOS 104.
UNIX_SOCKET_PATH_MAX: Final = 103

# Fault codes of supervisor.xmlrpc.Faults (copied: that module has no type information).
FAULT_SHUTDOWN_STATE: Final = 6
FAULT_BAD_NAME: Final = 10
FAULT_NO_FILE: Final = 20
FAULT_NOT_EXECUTABLE: Final = 21
FAULT_FAILED: Final = 30
FAULT_ABNORMAL_TERMINATION: Final = 40
FAULT_SPAWN_ERROR: Final = 50
FAULT_ALREADY_STARTED: Final = 60
FAULT_NOT_RUNNING: Final = 70

QUERY_TIMEOUT_S: Final = 10.0
# States in which supervisord has stopped trying to start a program.
GAVE_UP_STATES: Final = frozenset({"FATAL", "EXITED", "UNKNOWN"})
# start/stop wait for the program: startsecs, or stopwaitsecs (30 s) plus the final kill.
CONTROL_TIMEOUT_S: Final = 90.0

T = TypeVar("T")


class ProcessInfo(NamedTuple):
    """One supervised program as supervisord reports it."""

    name: str
    group: str
    state: str  # RUNNING, STARTING, BACKOFF, STOPPING, STOPPED, EXITED, FATAL, UNKNOWN
    pid: int | None
    uptime_s: float | None
    description: str
    log_path: str

    @property
    def namespec(self) -> str:
        """Return the name supervisord addresses this process by (``group:name`` in a group)."""
        return self.name if self.group == self.name else f"{self.group}:{self.name}"


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, with a timeout on connect and on every read."""

    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path
        self._timeout_s = timeout_s

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._timeout_s)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    """xmlrpc transport for ``unix://`` (what supervisor's own SupervisorTransport does, plus timeouts)."""

    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__()
        self._path = path
        self._timeout_s = timeout_s

    def make_connection(self, host: object) -> http.client.HTTPConnection:
        return _UnixHTTPConnection(self._path, self._timeout_s)


class SupervisorClient:
    """Control supervisord through ``<run dir>/supervisor.sock``."""

    def __init__(self, socket_path: str | Path) -> None:
        self.socket_path = Path(socket_path)

    # --- the calls the scheduler relies on: start / stop / states --------------------------

    def start(self, name: str, *, wait: bool = True) -> None:
        """Start ``name``; a program that is already running counts as started."""
        spec = self._namespec(name)
        try:
            self._call("startProcess", spec, wait, timeout_s=CONTROL_TIMEOUT_S)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode == FAULT_ALREADY_STARTED:
                return
            raise self._explain(fault, name, "start") from None

    def stop(self, name: str, *, wait: bool = True) -> None:
        """Stop ``name``; a program that is not running counts as stopped."""
        spec = self._namespec(name)
        try:
            self._call("stopProcess", spec, wait, timeout_s=CONTROL_TIMEOUT_S)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode == FAULT_NOT_RUNNING:
                return
            raise self._explain(fault, name, "stop") from None

    def restart(self, name: str) -> None:
        """Stop ``name`` (if running) and start it again, waiting for both."""
        self.stop(name)
        self.start(name)

    def wait_running(self, names: Iterable[str], timeout_s: float = CONTROL_TIMEOUT_S) -> None:
        """Wait until every program in ``names`` is RUNNING; raise naming the ones that gave up."""
        wanted = set(names)
        waiting: list[str] = []

        def all_running() -> bool:
            infos = {info.name: info for info in self.info() if info.name in wanted}
            failed = [info for info in infos.values() if info.state in GAVE_UP_STATES]
            if failed:
                detail = "; ".join(f"{info.name} is {info.state}, see {info.log_path}" for info in failed)
                raise SupervisorError(f"programs failed to start: {detail}")
            waiting[:] = sorted(name for name in wanted if infos.get(name) is None or infos[name].state != "RUNNING")
            return not waiting

        # Polled: supervisord counts a program as started only after its startsecs.
        if not poll_until(all_running, timeout_s, interval_s=0.2):
            raise SupervisorError(f"programs not running after {timeout_s:.0f} s: {', '.join(waiting)}")

    def states(self) -> dict[str, str]:
        """Return {program: state name} for every program supervisord knows."""
        return {info.name: info.state for info in self.info()}

    # --- inspection and supervisord itself ---------------------------------------------------

    def info(self) -> list[ProcessInfo]:
        """Return every supervised program, in supervisord's order."""
        raw = self._guarded(lambda: self._call("getAllProcessInfo", timeout_s=QUERY_TIMEOUT_S), "list programs")
        return [_to_info(item) for item in raw]

    def process(self, name: str) -> ProcessInfo:
        """Return the one program ``name`` (``SupervisorError`` naming the known ones if unknown)."""
        for info in self.info():
            if info.name == name:
                return info
        raise self._unknown(name)

    def is_running(self) -> bool:
        """Return True if supervisord answers on the socket and is in its RUNNING state."""
        try:
            state = self._call("getState", timeout_s=QUERY_TIMEOUT_S)
        except (OSError, SupervisorError, xmlrpc.client.Error):
            return False
        return isinstance(state, dict) and state.get("statename") == "RUNNING"

    def pid(self) -> int:
        """Return supervisord's own pid."""
        return int(self._guarded(lambda: self._call("getPID", timeout_s=QUERY_TIMEOUT_S), "read its pid"))

    def shutdown(self) -> None:
        """Ask supervisord to stop every program and exit (returns at once; see ``wait_gone``)."""
        self._guarded(lambda: self._call("shutdown", timeout_s=QUERY_TIMEOUT_S), "shut down")

    def wait_gone(self, timeout_s: float) -> bool:
        """Return True once nothing answers on the socket any more, False at the deadline."""

        def gone() -> bool:
            try:
                self._call("getPID", timeout_s=1.0)
            except (OSError, SupervisorError, xmlrpc.client.Error):
                return True
            return False

        return poll_until(gone, timeout_s)  # polled: supervisord stops its programs one by one

    # --- internals ------------------------------------------------------------------------

    def _call(self, method: str, *args: object, timeout_s: float) -> Any:  # XML-RPC values are untyped
        transport = _UnixTransport(str(self.socket_path), timeout_s)
        proxy = xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=transport, allow_none=True)
        try:
            return getattr(proxy.supervisor, method)(*args)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise self._not_running(e) from None
        except (TimeoutError, OSError) as e:
            raise SupervisorError(f"supervisord at {self.socket_path} did not answer {method}: {e}") from None
        except xmlrpc.client.ProtocolError as e:
            raise SupervisorError(
                f"supervisord at {self.socket_path} refused {method}: HTTP {e.errcode} {e.errmsg}"
            ) from None
        finally:
            proxy("close")()

    def _guarded(self, call: Callable[[], T], what: str) -> T:
        try:
            return call()
        except xmlrpc.client.Fault as fault:
            raise SupervisorError(f"supervisord could not {what}: {fault.faultString}") from None

    def _not_running(self, error: OSError) -> SupervisorError:
        reason = "no socket" if isinstance(error, FileNotFoundError) else "nothing listening on the socket"
        return SupervisorError(f"supervisord is not running ({reason} at {self.socket_path}): start it with `chmgr up`")

    def _namespec(self, name: str) -> str:
        for info in self.info():
            if info.name == name:
                return info.namespec
        raise self._unknown(name)

    def _unknown(self, name: str, known: Iterable[str] | None = None) -> SupervisorError:
        names = list(known) if known is not None else [info.name for info in self.info()]
        return SupervisorError(f"no such program {name!r} (known: {', '.join(names) or 'none'})")

    def _explain(self, fault: xmlrpc.client.Fault, name: str, verb: str) -> SupervisorError:
        code, detail = fault.faultCode, fault.faultString
        if code == FAULT_BAD_NAME:
            return self._unknown(name)
        if code in (FAULT_SPAWN_ERROR, FAULT_ABNORMAL_TERMINATION, FAULT_NO_FILE, FAULT_NOT_EXECUTABLE):
            return SupervisorError(f"program {name!r} failed to {verb} ({detail}): see {self._log_path(name)}")
        if code == FAULT_SHUTDOWN_STATE:
            return SupervisorError(f"cannot {verb} {name!r}: supervisord is shutting down")
        return SupervisorError(f"supervisord could not {verb} {name!r}: {detail}")

    def _log_path(self, name: str) -> str:
        try:
            return self.process(name).log_path or "the supervisord log"
        except SupervisorError:
            return "the supervisord log"


def _to_info(item: object) -> ProcessInfo:
    if not isinstance(item, dict):
        raise SupervisorError(f"supervisord answered getAllProcessInfo with {type(item).__name__}, expected a struct")
    pid = int(item.get("pid") or 0)
    start, now = int(item.get("start") or 0), int(item.get("now") or 0)
    running = item.get("statename") == "RUNNING" and pid > 0
    return ProcessInfo(
        name=str(item["name"]),
        group=str(item["group"]),
        state=str(item["statename"]),
        pid=pid if pid > 0 else None,
        uptime_s=float(now - start) if running and start else None,
        description=str(item.get("description", "")),
        log_path=str(item.get("stdout_logfile", "")),
    )


def socket_path(run_dir: str | Path) -> Path:
    """Return supervisord's XML-RPC socket in ``run_dir`` (docs/architecture.md §8)."""
    return Path(run_dir) / SOCKET_NAME


def render_config(destination: str | Path, run_dir: str | Path | None = None, template: Path = CONFIG_TEMPLATE) -> Path:
    """Write the production ``supervisord.conf`` to ``destination`` and return its path.

    ``%(here)s/run`` becomes ``run_dir`` (absolute) when given, and ``%(here)s`` (the directory of
    the conf) is pinned to the template's directory, so the copy starts the same programs from the
    same project, with every socket, pid file and log (and the programs' ``CHMGR_RUN_DIR``) in
    ``run_dir``.
    """
    text = template.read_text(encoding="utf-8")
    if run_dir is not None:
        text = text.replace(CONF_RUN_DIR, str(Path(run_dir).absolute()).replace("%", "%%"))
    text = text.replace("%(here)s", str(template.resolve().parent))
    target = Path(destination)
    if target.is_dir():
        target = target / template.name
    target.write_text(text, encoding="utf-8")
    return target

