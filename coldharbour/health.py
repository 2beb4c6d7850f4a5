"""Health is function, not process: the one model `chmgr status`, `up`, `doctor` and `web` share.

A program being RUNNING says nothing about whether it can do its work. Each program reports,
in its heartbeat, the conditions it needs (``messages.Condition``, kept by the program's
``runtime.Conditions``): ``snapshot`` whether the
broker accepts each account's credentials (``broker``), ``trades`` whether each account's
trade stream is authorized and open (``stream``), ``state`` whether it has stored each
account's first snapshot (``snapshot``) and whether its own database connection commits
(``database``). ``assess`` joins them with supervisord's view
of the programs and with what the asking command found itself (the database reachable or not)
and returns a ``Health``:

- ``findings``: causes, one line each, naming the program and the account
  (``snapshot: account demo: credentials rejected by http://… (HTTP 403): check
  ALPACA_API_KEY_DEMO and ALPACA_SECRET_KEY_DEMO``);
- ``waiting``: what has not been shown to work yet (an account whose snapshot program has not
  yet had an answer from the broker). The absence of a failure is not taken as success: an
  account is working only once its programs said so;
- ``streaming``: how many of the accounts with a trade stream ``trades`` said are streaming (its
  ``stream`` condition ok in a fresh heartbeat): the start-up's progress, "n of N accounts
  streaming" (docs/scaling.md).

``is_working`` is true only with neither. A session program parked by the scheduler at night
(``sleeping (schedule)``) is not expected to report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from coldharbour import runtime
from coldharbour.config import Settings, env_suffix
from coldharbour.domain.schedule import Phase
from coldharbour.messages import Heartbeat
from coldharbour.supervisor import ProcessInfo, SupervisorClient, socket_path

SLEEPING: Final = "sleeping (schedule)"
HEALTHY_STATES: Final = frozenset({"RUNNING", SLEEPING})
PASSING_STATES: Final = frozenset({"STARTING", "STOPPING"})  # on its way: awaited, not a cause
RETRYING: Final = "BACKOFF"  # supervisord restarting it: a cause, but one a start-up may pass through
DEGRADED: Final = "degraded"
# What each program reports per account, and the words of "not shown to work yet".
NEED_BROKER: Final = "broker"
NEED_STREAM: Final = "stream"
NEED_DATABASE: Final = "database"
NEED_SNAPSHOT: Final = "snapshot"  # state: the account's first broker snapshot is stored (committed)
HEARTBEAT_STALE_S: Final = 10.0  # a RUNNING program silent this long is hung or cut off the bus


def credentials_rejected(settings_name: str, where: str, status: object) -> str:
    """Return the cause line of refused credentials (names the variables, never their values)."""
    suffix = env_suffix(settings_name)
    return f"credentials rejected by {where} ({status}): check ALPACA_API_KEY_{suffix} and ALPACA_SECRET_KEY_{suffix}"


def client_for(settings: Settings) -> SupervisorClient:
    """Return the client for the supervisord of ``settings.run_dir``."""
    return SupervisorClient(socket_path(Path(settings.run_dir).resolve()))


def is_parked(info: ProcessInfo, states: Mapping[str, str], settings: Settings, phase: Phase | None) -> bool:
    """Return True if ``info`` is a session program the scheduler has stopped for the night."""
    return (
        info.name in runtime.SESSION_PROGRAMS
        and info.state == "STOPPED"
        and states.get("scheduler") == "RUNNING"
        and not settings.disable_session_sleep
        and phase in (None, Phase.CLOSED)
    )


def shown_state(info: ProcessInfo | None, states: Mapping[str, str], settings: Settings, phase: Phase | None) -> str:
    """Return the state to show for a program (``sleeping (schedule)`` for a parked session program)."""
    if info is None:
        return "not configured"
    return SLEEPING if is_parked(info, states, settings, phase) else info.state


def is_degraded(heartbeat: Heartbeat | None) -> bool:
    """Return True when a running program reports it works but cannot keep up (``db_degraded``:
    the writer's last commit hit its statement or lock timeout)."""
    return heartbeat is not None and heartbeat.counters.get("db_degraded", 0) > 0


@dataclass(frozen=True)
class Finding:
    """A cause: what does not work, where (``program`` and ``account`` name, either may be empty)."""

    program: str
    account: str
    cause: str

    @property
    def line(self) -> str:
        """Return the one line every surface shows."""
        where = [part for part in (self.program, f"account {self.account}" if self.account else "") if part]
        return ": ".join([*where, self.cause])


@dataclass(frozen=True)
class Streaming:
    """How many of the accounts with a trade stream ``trades`` said are streaming."""

    open: int
    total: int

    @property
    def line(self) -> str:
        """Return the progress line every surface shows."""
        return f"trades: {self.open} of {self.total} accounts streaming"

    @property
    def complete(self) -> bool:
        """Return True when every account's stream was said to be open."""
        return self.open == self.total


@dataclass
class Health:
    """The verdict: causes, what is not shown to work yet, and which accounts work."""

    findings: list[Finding] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    working: list[str] = field(default_factory=list)  # account names
    streaming: Streaming | None = None  # None: no account streams, or trades is parked for the night

    @property
    def is_working(self) -> bool:
        """Return True when nothing failed and everything expected has been shown to work."""
        return not self.findings and not self.waiting

    def lines(self) -> list[str]:
        """Return the causes, then what is awaited, one line each."""
        return [f.line for f in self.findings] + [f"waiting: {w}" for w in self.waiting]


def assess(
    settings: Settings,
    infos: Mapping[str, ProcessInfo] | None,
    heartbeats: Mapping[str, Heartbeat],
    now_ns: int,
    *,
    phase: Phase | None = None,
    supervisor_error: str | None = None,
    database_error: str | None = None,
) -> Health:
    """Return the stack's health (``infos`` None: supervisord could not be asked, see ``supervisor_error``)."""
    health = Health()
    if database_error is not None:
        health.findings.append(Finding("", "", database_error))
    if infos is None:
        health.findings.append(Finding("", "", f"supervisord: {supervisor_error or 'not reachable'}"))
        return health
    states = {name: info.state for name, info in infos.items()}
    shown = {name: shown_state(infos.get(name), states, settings, phase) for name in _names(infos)}
    for name, state in shown.items():
        beat = heartbeats.get(name)
        if state in PASSING_STATES:
            health.waiting.append(f"{name}: {state.lower()}")
        elif state not in HEALTHY_STATES:
            health.findings.append(Finding(name, "", state))
        elif state == "RUNNING":
            health.findings.extend(_running(name, beat, now_ns, settings))
    _accounts(settings, shown, heartbeats, health)
    health.streaming = _streaming(settings, shown, heartbeats.get("trades"), now_ns)
    return health


def _names(infos: Mapping[str, ProcessInfo]) -> list[str]:
    return [*runtime.PROGRAMS, *sorted(set(infos) - set(runtime.PROGRAMS))]


def _running(name: str, beat: Heartbeat | None, now_ns: int, settings: Settings) -> list[Finding]:
    if beat is None:
        return []  # not heard within the listening window: awaited below when it matters
    age_s = (now_ns - beat.ts) / 1e9
    if age_s > HEARTBEAT_STALE_S:
        return [Finding(name, "", f"no heartbeat for {age_s:.0f} s (hung, or cut off from the bus)")]
    found = []
    if is_degraded(beat):
        found.append(Finding(name, "", f"{DEGRADED} (database statement/lock timeouts: a held lock or overload)"))
    names = {a.slug: a.name for a in settings.accounts}
    for condition in beat.conditions:
        if not condition.ok:
            found.append(Finding(name, names.get(condition.account, condition.account), condition.cause))
    return found


def _accounts(
    settings: Settings, shown: Mapping[str, str], heartbeats: Mapping[str, Heartbeat], health: Health
) -> None:
    """Per account: working only when each program it needs said so (``waiting`` otherwise)."""
    for account in settings.accounts:
        needs = [("snapshot", NEED_BROKER, "no answer from the broker yet", "snapshot")]
        if account.enable_trade_stream:
            needs.append(("trades", NEED_STREAM, "trade stream not connected yet", "trades"))
        # state says when it has stored the account's first snapshot (a snapshot parked for the
        # night sends none, so it is not awaited then)
        needs.append(("state", NEED_SNAPSHOT, "first snapshot not stored yet", "snapshot"))
        missing = []
        for program, need, awaited, source in needs:
            if shown.get(source) == SLEEPING:
                continue  # parked for the night: nothing to show
            if not _said_ok(heartbeats.get(program), need, account.slug):
                missing.append(f"{program}: account {account.name}: {awaited}")
        failed = any(f.account == account.name for f in health.findings)
        if not missing and not failed:
            health.working.append(account.name)
        elif not failed:
            health.waiting.extend(missing)


def _streaming(settings: Settings, shown: Mapping[str, str], beat: Heartbeat | None, now_ns: int) -> Streaming | None:
    """Count the accounts ``trades`` said are streaming; a silent or stale ``trades`` said nothing."""
    slugs = [a.slug for a in settings.accounts if a.enable_trade_stream]
    if not slugs or shown.get("trades") == SLEEPING:
        return None
    fresh = beat is not None and (now_ns - beat.ts) / 1e9 <= HEARTBEAT_STALE_S
    said = {c.account for c in beat.conditions if c.ok and c.need == NEED_STREAM} if beat and fresh else set()
    return Streaming(sum(slug in said for slug in slugs), len(slugs))


def _said_ok(beat: Heartbeat | None, need: str, slug: str) -> bool:
    return beat is not None and any(c.ok and c.need == need and c.account == slug for c in beat.conditions)


def first_cause(findings: Iterable[Finding], *, settled: bool = False) -> Finding | None:
    """Return the finding to report first: an account's cause before a program's state
    (``settled``: leave out a program supervisord is still restarting, which a start-up may pass through)."""
    kept = [f for f in findings if not (settled and f.cause == RETRYING)]
    ordered = sorted(kept, key=lambda f: (not f.account, not f.program))
    return ordered[0] if ordered else None
