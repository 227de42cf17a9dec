"""The ``bulkfetch`` command group, and the one way every command exits.

The commands live in their own modules: ``run`` (:mod:`bulkfetch.cli.run`), ``plan`` and
``validate`` (:mod:`bulkfetch.cli.plan`), ``status`` (:mod:`bulkfetch.cli.status`); the
others are imported only when used (:class:`_LazyGroup`). Exit codes are documented in
``bulkfetch.api``; an interrupt is 130 wherever it lands.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from typing import ClassVar, NoReturn

import click

from bulkfetch._malloc import tune_malloc
from bulkfetch._version import __version__
from bulkfetch.api import EXIT_OK
from bulkfetch.cli.plan import plan_command, validate_command
from bulkfetch.cli.run import run_command
from bulkfetch.cli.status import status_command

__all__ = ["cli", "main"]


class _LazyGroup(click.Group):
    """A group whose other modules' commands are imported when one is run or listed.

    ``run`` should not pay at every start for importing the simulator, the HTML report
    and scene search (PIL, aiohttp.web): about a third of the CLI's import time.
    """

    #: name -> (module, attribute) of the command
    LAZY: ClassVar[dict[str, tuple[str, str]]] = {
        "colormaps": ("bulkfetch.cli.colormaps", "colormaps_command"),
        "demo": ("bulkfetch.cli.demo", "demo_command"),
        "report": ("bulkfetch.cli.report", "report_command"),
        "search": ("bulkfetch.cli.search", "search_command"),
        "simulate": ("bulkfetch.simulator.cli", "simulate"),
        "stac": ("bulkfetch.cli.stac", "stac_command"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            module, attr = self.LAZY[cmd_name]
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="bulkfetch")
def cli() -> None:
    """Download EOS "Download visual" images in bulk, at the API's rate limit, resumably."""


for _command in (run_command, plan_command, status_command, validate_command):
    cli.add_command(_command)


def main() -> None:
    """Console entry point."""
    tune_malloc()  # (why: see _malloc)
    try:
        code = _main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, int | None):
            click.echo(str(exc.code), err=True)
    _exit(code)


def _main() -> int:
    # Not click's standalone mode: it turns Ctrl-C into "Aborted!" and exit 1, which cron
    # would read as "jobs failed". An interrupt is 130 wherever it lands.
    try:
        cli.main(prog_name="bulkfetch", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("bulkfetch: interrupted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return EXIT_OK


def _exit(code: int) -> NoReturn:
    """Exit with ``code``. After a bucket destination, skip the interpreter's finalisation:
    obstore's Tokio worker threads outlive the command, and one caught mid-task while the
    interpreter is torn down aborts the process (SIGABRT, seen once in CI after ``plan``
    had printed everything, exit -6 instead of 0), turning a finished command into a
    failure for cron. Everything is written and closed by then: flush and leave."""
    if "obstore" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
