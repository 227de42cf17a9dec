"""Tests for bulkfetch.config: rates as users type them, and a key that never shows itself."""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path

import pytest

from bulkfetch.config import ApiKey, Rate, RunConfig, load_api_key
from bulkfetch.errors import UsageError

SECRET = "apk." + "ab12" * 16


# -- Rate -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("10/min", 10.0, 60.0),
        ("20/s", 20.0, 1.0),
        ("1.5/h", 1.5, 3600.0),
        (" 10 / min ", 10.0, 60.0),
        ("3/SEC", 3.0, 1.0),
        ("7/minute", 7.0, 60.0),
        ("2/hour", 2.0, 3600.0),
        ("0.5/second", 0.5, 1.0),
    ],
)
def test_rate_parse_accepts(text: str, count: float, period: float) -> None:
    rate = Rate.parse(text)
    assert rate == Rate(count, period)
    assert rate.interval == pytest.approx(period / count)
    assert rate.per_second == pytest.approx(count / period)


@pytest.mark.parametrize(
    "text", ["0/min", "0.0/s", "10/day", "abc", "-1/s", "", "10", "/min", "10/", "1e3/s", "ten/s"]
)
def test_rate_parse_rejects_with_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="rate"):
        Rate.parse(text)


def test_rate_str_round_trips() -> None:
    for text in ("10/min", "20/s", "1.5/h"):
        assert str(Rate.parse(text)) == text
        assert Rate.parse(str(Rate.parse(text))) == Rate.parse(text)
    assert str(Rate(1.0, 6.0)) == "1/6s"


def test_run_config_defaults_are_the_documented_limits(tmp_path: Path) -> None:
    config = RunConfig(out=tmp_path)
    assert config.create_rate == Rate(10, 60.0)
    assert config.status_rate == Rate(10, 60.0)
    assert config.ledger_path == tmp_path / "bulkfetch-ledger.json"
    assert RunConfig(out=tmp_path, ledger=tmp_path / "l.json").ledger_path == tmp_path / "l.json"


# -- ApiKey -----------------------------------------------------------------------------------


def test_api_key_never_shows_itself() -> None:
    key = ApiKey(SECRET)
    assert key.reveal() == SECRET
    for shown in (repr(key), str(key), f"{key}", f"{key!r}", "%s" % key, "%r" % (key,)):  # noqa: UP031
        assert SECRET not in shown
        assert "ab12" not in shown
    assert SECRET not in repr([key, {"k": key}])


def test_api_key_cannot_be_pickled_or_copied() -> None:
    key = ApiKey(SECRET)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="pickled"):
            pickle.dumps(key, protocol=protocol)
    with pytest.raises(TypeError):
        copy.copy(key)


def test_api_key_strips_and_compares() -> None:
    assert ApiKey(f"  {SECRET}\n") == ApiKey(SECRET)
    assert ApiKey(SECRET).reveal() == SECRET
    assert ApiKey(SECRET) != ApiKey(SECRET + "0")
    assert ApiKey(SECRET) != SECRET  # a key is not a string
    assert hash(ApiKey(SECRET)) == hash(ApiKey(f"{SECRET}\n"))


@pytest.mark.parametrize("value", ["", "   ", "\n"])
def test_api_key_empty_is_refused(value: str) -> None:
    with pytest.raises(UsageError, match="empty"):
        ApiKey(value)


@pytest.mark.parametrize("value", [f"{SECRET} extra", f"{SECRET}\x00", f"ab\tcd{SECRET}"])
def test_api_key_with_whitespace_or_control_is_refused_without_echo(value: str) -> None:
    with pytest.raises(UsageError) as info:
        ApiKey(value)
    assert SECRET not in str(info.value)
    assert "ab12" not in str(info.value)


# -- load_api_key -----------------------------------------------------------------------------


def test_load_api_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EOS_API_KEY", f" {SECRET}\n")
    assert load_api_key() == ApiKey(SECRET)
    monkeypatch.setenv("OTHER_KEY", SECRET)
    monkeypatch.delenv("EOS_API_KEY")
    assert load_api_key(env="OTHER_KEY") == ApiKey(SECRET)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_load_api_key_missing_env_is_a_clear_usage_error(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("EOS_API_KEY", raising=False)
    else:
        monkeypatch.setenv("EOS_API_KEY", value)
    with pytest.raises(UsageError, match=r"no API key: set EOS_API_KEY or pass --api-key-file"):
        load_api_key()


def test_load_api_key_from_private_file_does_not_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EOS_API_KEY", "apk.from-env")
    path = tmp_path / "key"
    path.write_text(SECRET + "\n", encoding="utf-8")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="bulkfetch.config"):
        key = load_api_key(path)
    assert key == ApiKey(SECRET)  # the file wins over the environment
    assert caplog.records == []


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_load_api_key_warns_when_file_is_readable_by_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    path = tmp_path / "key"
    path.write_text(SECRET, encoding="utf-8")
    path.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="bulkfetch.config"):
        assert load_api_key(path) == ApiKey(SECRET)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "readable by other users" in message
    assert "chmod 600" in message
    assert SECRET not in caplog.text


def test_load_api_key_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(UsageError, match="cannot read the API key file") as info:
        load_api_key(path)
    assert str(path) in str(info.value)


def test_load_api_key_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the API key file"):
        load_api_key(tmp_path)


def test_load_api_key_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("\n\n", encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(UsageError, match="empty"):
        load_api_key(path)


def test_load_api_key_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"\xff\xfe\x00garbage")
    path.chmod(0o600)
    with pytest.raises(UsageError, match="not UTF-8"):
        load_api_key(path)
