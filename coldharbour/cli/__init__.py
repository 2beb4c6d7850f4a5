"""`chmgr`: the operator's command line (typer). Parse, call the library, print; exit 0/1/2.

The boundary (docs/architecture.md §7, errors): a ``ChmgrError`` (bad configuration, database or
supervisord trouble, unknown program) is printed as one line on stderr and exits 1; a usage
error (unknown command or option, missing argument) is one line on stderr and exits 2. Secrets
never reach the output: settings are printed through ``config.describe`` and DSNs redacted.

Commands live in one module per concern: ``control`` (up, down, start, stop, restart),
``status``, ``database`` (db init, positions, watch), ``doctor``, ``report``, ``corporate``
(corporate basis); this module wires them,
and holds ``config`` and the ``sim`` pass-throughs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Final

import typer

from coldharbour import config, runtime
from coldharbour.cli import control, corporate, database, doctor, report, status
from coldharbour.errors import ChmgrError

PROG_NAME: Final = "chmgr"
# What a group called without a command raises (typer's NoArgsIsHelpError, not public): its help text.
HELP_PREFIX: Final = "Usage: "

app = typer.Typer(
    name=PROG_NAME,
    help="Cold Harbour Account Manager: run and inspect the account mirror.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
corporate_app = typer.Typer(help="Corporate actions: how they are booked.", no_args_is_help=True)
sim_app = typer.Typer(help="Simulators: fake broker, price feed, demo bot (arguments passed through).")

app.command("status")(status.status)
app.command("start")(control.start)
app.command("stop")(control.stop)
app.command("restart")(control.restart)
app.command("up")(control.up)
app.command("down")(control.down)
app.command("positions")(database.positions)
app.command("watch")(database.watch)
app.command("doctor")(doctor.doctor)
app.command("report")(report.report)
db_app.command("init")(database.init)
app.add_typer(db_app, name="db")
corporate_app.command("basis")(corporate.basis)
app.add_typer(corporate_app, name="corporate")
app.add_typer(sim_app, name="sim")

_PASS_THROUGH: Final = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command("config")
def show_config() -> None:
    """Print the effective settings (environment + CHMGR_CONFIG), secrets redacted."""
    settings = runtime.load_from_environment()
    names = config.ENV_NAMES
    for field, value in config.describe(settings).items():
        if field in ("accounts", "disabled_accounts"):
            continue
        shown = ",".join(value) if isinstance(value, tuple) else value
        typer.echo(f"{names[field]}={'' if shown is None else shown}")
    for account in settings.accounts:
        typer.echo(
            f"account {account.name}: slug={account.slug} base_url={account.base_url} "
            f"api_key=*** secret_key=*** trade_stream={account.enable_trade_stream}"
        )
    for name, reason in settings.disabled_accounts:
        typer.echo(f"account {name}: disabled ({reason})")


@sim_app.command("broker", context_settings=_PASS_THROUGH, add_help_option=False)
def sim_broker(ctx: typer.Context) -> None:
    """Run the fake Alpaca broker (`--port P [--seed N] [--account NAME:KEY:SECRET]… [--history-sessions N]`)."""
    from coldharbour.sim import broker

    raise typer.Exit(broker.main(list(ctx.args)))


@sim_app.command("feed", context_settings=_PASS_THROUGH, add_help_option=False)
def sim_feed(ctx: typer.Context) -> None:
    """Run the price feed simulator (`--endpoint E --symbols A,B --rate N [--broker-url URL]`)."""
    from coldharbour.sim import feed

    raise typer.Exit(feed.main(list(ctx.args)))


@sim_app.command("bot", context_settings=_PASS_THROUGH, add_help_option=False)
def sim_bot(ctx: typer.Context) -> None:
    """Run the demo trading bot (`--broker-url URL --key K --secret S`)."""
    from coldharbour.sim import bot

    raise typer.Exit(bot.main(list(ctx.args)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``chmgr`` with ``argv`` (default: the process arguments); return the exit code."""
    command = typer.main.get_command(app)
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        result = command.main(args=args, prog_name=PROG_NAME, standalone_mode=False)
    except typer.TyperException as e:  # usage errors (exit 2) and click's own failures (exit 1)
        message = e.format_message()
        if message.startswith(HELP_PREFIX):  # `chmgr` or `chmgr db` alone: the help is the message
            print(message, file=sys.stderr)
            return e.exit_code
        return _fail(message, e.exit_code)
    except ChmgrError as e:
        return _fail(str(e), runtime.EXIT_FAILURE)
    except (typer.Abort, KeyboardInterrupt):
        return _fail("interrupted", runtime.EXIT_FAILURE)
    except SystemExit as e:  # a pass-through simulator's argparse exits by itself
        return e.code if isinstance(e.code, int) else runtime.EXIT_FAILURE
    return result if isinstance(result, int) else runtime.EXIT_OK


def _fail(message: str, code: int) -> int:
    """Print ``message`` as one line on stderr; return ``code``."""
    line = " ".join(message.split())
    print(f"{PROG_NAME}: {line}", file=sys.stderr)
    return code


__all__ = ["app", "main"]
