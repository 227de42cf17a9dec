"""What every ``bulkfetch`` command shares: option parsing and the one way to fail."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from .api import exit_code_for
from .config import Rate
from .errors import BulkfetchError, ManifestError, UsageError

__all__ = ["fail", "rate_option"]


def rate_option(ctx: click.Context, param: click.Parameter, value: str) -> Rate:
    """Click callback: ``10/min`` → :class:`Rate`, or a usage error naming the option."""
    try:
        return Rate.parse(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def fail(exc: BulkfetchError) -> NoReturn:
    """Print ``exc`` as a user reads it (a file's problems one per line), and exit with
    its code. Never a traceback."""
    if isinstance(exc, ManifestError):
        n = len(exc.problems)
        click.echo(f"bulkfetch: the {exc.what} has {n} problem{'s' if n != 1 else ''}:", err=True)
        click.echo(str(exc), err=True)
        click.echo("nothing was sent.", err=True)
    else:
        click.echo(f"bulkfetch: error: {exc}", err=True)
    sys.exit(exit_code_for(exc))
