"""What every ``bulkfetch`` command shares: option parsing and the one way to fail."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from bulkfetch.api import exit_code_for
from bulkfetch.config import Rate, read_config_file
from bulkfetch.errors import BulkfetchError, ManifestError, UsageError
from bulkfetch.sink.destination import store_url
from bulkfetch.units import counted

__all__ = ["SHORT_O_DEPRECATED", "apply_config_file", "fail", "rate_option"]


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
        click.echo(f"bulkfetch: the {exc.what} has {counted(n, 'problem')}:", err=True)
        click.echo(str(exc), err=True)
        click.echo("nothing was sent.", err=True)
    else:
        click.echo(f"bulkfetch: error: {exc}", err=True)
    sys.exit(exit_code_for(exc))


def apply_config_file(
    ctx: click.Context, file: Path, params: dict[str, Any], *, table: str | None = None
) -> None:
    """Fill ``params`` (click's, by parameter name) from the TOML ``file``, where the
    command line left an option at its default: flags win, the file fills in.

    Keys are the flags' own names (``max-creates`` for ``--max-creates``), never click's
    internal parameter names, which can differ; values are converted and checked as the
    flag's would be. ``table``: read that table (``[search]``) instead of the top level.
    """
    by_flag = {
        opt[2:].replace("-", "_"): p
        for p in ctx.command.params
        if isinstance(p, click.Option) and p.name != "config_file"
        for opt in p.opts
        if opt.startswith("--")
    }
    for flag, value in read_config_file(file, set(by_flag), table=table).items():
        option = by_flag[flag]
        assert option.name is not None
        if ctx.get_parameter_source(option.name) in (ParameterSource.DEFAULT, None):
            params[option.name] = _convert(ctx, option, value, file, flag.replace("_", "-"))


def _convert(ctx: click.Context, option: click.Option, value: Any, file: Path, key: str) -> Any:
    if isinstance(value, str) and isinstance(option.type, click.Path) and not store_url(value):
        path = Path(value).expanduser()
        value = path if path.is_absolute() else file.parent / path
    try:
        converted = option.type_cast_value(ctx, value)
        if option.callback is not None:
            converted = option.callback(ctx, option, converted)
    except click.BadParameter as exc:
        raise UsageError(f"{file}: {key}: {exc.format_message()}") from None
    return converted


#: Said when ``-o`` is read in its old meaning, a file (``report``'s page, ``search``'s
#: manifest): every command's ``-o`` is now the output folder, as for ``run``.
SHORT_O_DEPRECATED = (
    "'{command} -o FILE' is deprecated: -o is the output folder in every command "
    "(as for run); write {flag} FILE"
)
