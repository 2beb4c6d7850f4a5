"""`chmgr corporate basis ACCOUNT ACTION_ID PARENT_PCT`: rebook a spin-off with another basis split.

A spin-off's basis is split between the parent and the new shares by default from the
announcement's rates and the two prices (docs/corporate-actions.md "Spin-offs"); an issuer's
basis statement (e.g. a Form 8937) may say otherwise. This command publishes a
``SpinoffBasisSet`` on the bus; ``state``, the only writer, stores the choice and rebooks the
two symbols. The command then waits until the stored allocation is the one asked (it publishes
again meanwhile: a message sent before the bus connection is up would be lost), and fails with
one line when ``state`` did not apply it in time (its log says why: ``spinoff_basis_refused``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Final

import psycopg
import typer
import zmq

from coldharbour import runtime
from coldharbour.bus import Publisher
from coldharbour.config import Settings
from coldharbour.db import checks
from coldharbour.db.connect import connect_sync
from coldharbour.db.names import account_names
from coldharbour.errors import ChmgrError, DatabaseError
from coldharbour.messages import SpinoffBasisSet, topic_spinoff_basis
from coldharbour.retry import poll_until

PROGRAM: Final = "chmgr"
REPUBLISH_S: Final = 1.0
HUNDRED: Final = Decimal(100)


def parent_share(text: str) -> Decimal:
    """Return PARENT_PCT (a percentage strictly between 0 and 100) as the share the parent keeps."""
    try:
        pct = Decimal(text.strip())
    except InvalidOperation:
        raise typer.BadParameter(f"PARENT_PCT must be a number, found {text!r}") from None
    if not (pct.is_finite() and 0 < pct < HUNDRED):
        raise typer.BadParameter(f"PARENT_PCT must be strictly between 0 and 100, found {text!r}")
    return pct / HUNDRED


def stored_share(settings: Settings, slug: str, action_id: str) -> tuple[str, Decimal, str] | None:
    """Return the stored (parent, parent share, source) of ``action_id``, or None."""
    names = account_names(settings, slug)
    table = names.spinoff_bases
    try:
        with connect_sync(settings.reader_dsn, PROGRAM, read_only=True) as conn:
            return checks.spinoff_basis(conn, names, action_id)
    except psycopg.errors.UndefinedTable:
        raise DatabaseError(f"table {table.schema}.{table.name} does not exist: run `chmgr db init`") from None
    except psycopg.Error as e:
        raise DatabaseError(f"cannot read {table.schema}.{table.name}: {type(e).__name__}") from None


def basis(
    account: str = typer.Argument(..., help="the account slug"),
    action_id: str = typer.Argument(..., help="the spin-off's id (its SPIN leg's activity id, in state's log)"),
    parent_pct: str = typer.Argument(..., help="the percentage of the basis the parent keeps (0 < PCT < 100)"),
    parent: str | None = typer.Option(None, "--parent", help="the parent symbol, when no announcement named it"),
    wait_s: float = typer.Option(30.0, "--wait-s", min=1.0, help="how long to wait for state to apply it"),
) -> None:
    """Rebook a spin-off: the parent keeps PARENT_PCT % of its basis, the new shares get the rest."""
    settings = runtime.load_from_environment()
    slug = settings.account(account).slug
    share = parent_share(parent_pct)
    request = SpinoffBasisSet(account=slug, action_id=action_id, parent_share=share,
                              parent=parent.upper() if parent else None)  # fmt: skip
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    publisher = Publisher(context, settings.bus_in, PROGRAM)
    found: tuple[str, Decimal, str] | None = None

    def applied() -> bool:
        nonlocal found
        publisher.publish(topic_spinoff_basis(slug), request)  # again each time: the bus may not have had us yet
        found = stored_share(settings, slug, action_id)
        return found is not None and found[1] == share and found[2] == "override"

    try:
        if not poll_until(applied, wait_s, interval_s=REPUBLISH_S) or found is None:
            raise ChmgrError(f"state did not apply the basis of {action_id} within {wait_s:g} s: see its log "
                             "(spin-off basis override refused) and `chmgr status`")  # fmt: skip
        typer.echo(f"spin-off {action_id} rebooked: {found[0]} keeps {parent_pct.strip()} % of its basis")
    finally:
        publisher.close()
        context.term()
