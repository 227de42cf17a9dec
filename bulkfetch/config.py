"""The few explicit objects a run is configured with: the key, the rates, the run options.

``ApiKey`` wraps the secret so that nothing can print it by accident: its ``repr`` and
``str`` are masked, and the raw value is only reachable through ``reveal()``, which the
client calls at the one place it builds a request header.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yarl import URL

from bulkfetch.errors import UsageError
from bulkfetch.manifest.shard import Shard
from bulkfetch.sink.destination import default_ledger, store_url

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_API_URL",
    "ApiKey",
    "Rate",
    "RunConfig",
    "api_root",
    "load_api_key",
    "parse_duration",
    "read_config_file",
]

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api-connect.eos.com/api/gdw/api"
#: The task API's path; the other EOS APIs (search, render) hang from the same root.
TASK_PATH = "/api/gdw/api"
#: The options file looked for beside the manifest.
CONFIG_NAME = "bulkfetch.toml"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)", re.I)
_UNIT = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def api_root(api_url: str) -> str:
    """The root the other EOS APIs share with a task API URL: its scheme, host, port and
    any path before ``/api/gdw/api``; EOS's own root when the URL is not shaped like one."""
    url = URL(api_url.rstrip("/"))
    if url.path.endswith(TASK_PATH) and url.scheme in ("http", "https") and url.host:
        return str(url.with_path(url.path[: -len(TASK_PATH)]).with_query(None)).rstrip("/")
    return DEFAULT_API_URL[: -len(TASK_PATH)]


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``50m``, ``2h``, ``1h30m`` or ``1d``."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value.replace(" ", ""):
            raise UsageError(f"duration {text!r} is not like 90s, 50m, 2h or 1h30m") from None
        seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    if not seconds > 0 or seconds == float("inf"):
        raise UsageError(f"duration {text!r} must be more than zero")
    return seconds


#: Tables of the config file that belong to other commands than ``run``.
COMMAND_TABLES = ("search",)


def read_config_file(path: Path, allowed: set[str], *, table: str | None = None) -> dict[str, Any]:
    """Options from a TOML file: ``create-rate = "10/min"`` or ``create_rate = ...``.

    ``run``'s options are at the top level (``table`` None), another command's in its own
    table (``[search]``). Unknown names are an error naming the file, so a typo is never
    silently ignored.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    where = f"{path}"
    if table is None:
        data = {k: v for k, v in data.items() if not (k in COMMAND_TABLES and isinstance(v, dict))}
    else:
        section = data.get(table, {})
        if not isinstance(section, dict):
            raise UsageError(f"{path}: {table!r} must be a table ([{table}])")
        data, where = section, f"{path}: [{table}]"
    options: dict[str, Any] = {}
    for raw, value in data.items():
        name = raw.replace("-", "_")
        if name not in allowed:
            known = ", ".join(sorted(n.replace("_", "-") for n in allowed))
            raise UsageError(f"{where}: unknown option {raw!r} (known: {known})")
        options[name] = value
    return options


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hr|hour)\s*$", re.I)
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_PERIODS |= {"h": 3600.0, "hr": 3600.0, "hour": 3600.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` requests per ``period`` seconds, as the API counts them per key and lane."""

    count: float
    period: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse ``N/s``, ``N/min`` or ``N/h`` (N may have decimals)."""
        m = _RATE.match(text)
        if not m:
            raise UsageError(f"rate {text!r} is not of the form N/s, N/min or N/h (e.g. 10/min)")
        count = float(m.group(1))
        if count <= 0:
            raise UsageError(f"rate {text!r} must be more than zero")
        return cls(count, _PERIODS[m.group(2).lower()])

    @property
    def interval(self) -> float:
        """Seconds between requests when they are spread evenly."""
        return self.period / self.count

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.period)
        count = f"{self.count:g}"
        return f"{count}/{unit}" if unit else f"{count}/{self.period:g}s"


class ApiKey:
    """The EOS API key. Never printed, logged, pickled or written anywhere."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        if not value:
            raise UsageError("the API key is empty")
        if any(c.isspace() or not c.isprintable() for c in value):
            raise UsageError("the API key contains whitespace or control characters")
        self._value = value

    def reveal(self) -> str:
        """The raw key, for the request header only."""
        return self._value

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("ApiKey cannot be pickled")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def load_api_key(key_file: Path | None = None, *, env: str = "EOS_API_KEY") -> ApiKey:
    """Read the key from ``key_file`` if given, else from the environment variable ``env``.

    A key file readable by group or others gets a warning: it is a secret.
    """
    if key_file is not None:
        try:
            mode = key_file.stat().st_mode
            text = key_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the API key file {key_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"the API key file {key_file} is not UTF-8 text") from None
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning(
                "the API key file %s is readable by other users; run: chmod 600 %s",
                key_file,
                key_file,
            )
        return ApiKey(text)
    value = os.environ.get(env, "")
    if not value.strip():
        raise UsageError(f"no API key: set {env} or pass --api-key-file")
    return ApiKey(value)


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Options of one run. Every bound is finite by default; nothing retries forever."""

    out: Path
    ledger: Path | None = None
    api_url: str = DEFAULT_API_URL
    create_rate: Rate = field(default_factory=lambda: Rate(10, 60.0))
    status_rate: Rate = field(default_factory=lambda: Rate(10, 60.0))
    #: Created-but-not-downloaded tasks at most; None sizes the window from the rates.
    max_in_flight: int | None = None
    retry_failed: bool = False
    #: Creations of one job in one run before it fails (expiry and lost answers each
    #: cost one): ``--max-creates-per-job``.
    max_creates_per_job: int = 4
    #: Transient failures per job before it fails.
    max_errors: int = 8
    #: Seconds before a task's deadline after which it is no longer polled.
    deadline_margin: float = 60.0
    #: Expected processing time before the first poll, until finished tasks teach better.
    first_poll_after: float | None = None
    #: Seconds for connect, and between bytes, of any request.
    request_timeout: float = 60.0
    #: Let the lanes probe above the configured rates when the server allows it.
    learn_rates: bool = False
    #: Start each window of creations with its whole allowance, one creation as soon as
    #: the one before is answered, instead of spacing them evenly (``Limiter``'s burst).
    burst: bool = True
    #: Check the manifest's colormaps with EOS before the first creation, at this pace.
    colormap_check: bool = True
    colormap_rate: Rate = field(default_factory=lambda: Rate(10, 60.0))
    #: Poll a task only once it is probably ready, instead of spending every status slot
    #: on the likeliest task: fewer status calls (for plans that count them), later finish.
    save_status_calls: bool = False
    #: Retry back-off after a transient failure: base * 2**n seconds, with jitter, capped.
    #: None: twice the lane's interval, so the back-off scales with the API's pace.
    backoff_base: float | None = None
    backoff_cap: float = 300.0
    #: Seconds a lane may wait out a server that fails every request (an outage) without
    #: charging jobs' retry budgets; after that, failures count against jobs again.
    max_outage: float = 1800.0
    #: Concurrent status calls at most (each may be a download in progress).
    max_downloads: int = 8
    report: Path | None = None
    #: Stop creating when a task created now could not be fetched within this many
    #: seconds of the run's start; stop altogether then. None: no time box.
    max_duration: float | None = None
    #: Creations allowed in this run (``--max-creates``), and in one UTC day across runs
    #: (``--max-creates-per-day``, counted in the ledger). ``max_creates`` once meant the
    #: per-job cap, now ``max_creates_per_job``: the names are the flags' names.
    max_creates: int | None = None
    max_creates_per_day: int | None = None
    #: Seconds of failures, before the API has answered as the task API in this run, after
    #: which the URL is taken for a wrong one and the run stops (exit 3); see ``contact``.
    first_contact_grace: float = 45.0
    #: Run only this part of the manifest (``--shard K/N``); each part has its own ledger.
    shard: Shard | None = None
    #: Where the lanes' pacing is shared with other runs on the same key: ``""`` for the
    #: file store under the user's cache folder (one host), ``"none"`` for this process
    #: alone, ``redis://host:port/db`` across hosts. See ``rate_store``.
    rate_store: str = ""

    @property
    def ledger_path(self) -> Path:
        """``--ledger``, else ``OUT/bulkfetch-ledger.json`` (``--shard K/N``: its own,
        ``OUT/bulkfetch-ledger.shard-K-of-N.json``), or for a bucket ``--out`` a file
        under the user's state directory named after it (a bucket holds no ledger)."""
        if self.ledger is not None:
            return self.ledger
        url = store_url(self.out)
        path = default_ledger(url) if url is not None else self.out / "bulkfetch-ledger.json"
        return self.shard.ledger_for(path) if self.shard else path
