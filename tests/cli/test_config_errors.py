"""`sms-gateway check-config` run for real: exit 2 and one readable line for a broken file."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

URL = "https://partner-host.example/v1/PUSH_SMS"
KEY = "cli-SECRET-api-key-0123456789"
REPO = Path(__file__).resolve().parents[2]


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


VALID = f'[upstream]\nurl = "{URL}"\napi_key = "{KEY}"\n'


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (VALID + "retry_intervall = 5\n", "upstream.retry_intervall: unknown key"),
        (VALID + "[store]\npath = 5\n", "store.path: expected a string"),
        (VALID + 'concurrency = "32"\n', "upstream.concurrency: expected an integer"),
        ('[store]\npath = "/tmp/x.sqlite3"\n', "[upstream]: missing"),
        (f'[upstream]\nurl = "partner-host/v1"\napi_key = "{KEY}"\n', "upstream.url: "),
        ("[upstream\nurl = 1\n", "not valid TOML"),
        (VALID + "[ids]\nnode = 1\n", "ids.node: is 1, must be below ids.nodes (1)"),
        (VALID + "api_key_file = 'key'\n", "upstream.api_key: give either"),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "string-for-int",
        "missing-upstream",
        "bad-url",
        "invalid-toml",
        "impossible-node",
        "key-and-key-file",
    ],
)
def test_a_broken_config_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, text: str, names: str
) -> None:
    result = check_config(write(tmp_path, text))

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sms-gateway: ")
    assert names in lines[0]
    assert "Traceback" not in result.stderr
    assert KEY not in result.stderr


def test_a_missing_config_file_exits_2_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    result = check_config(path)
    assert result.returncode == 2
    assert result.stderr == (f"sms-gateway: {path}: no such config file (give one with -c PATH)\n")


def test_a_valid_config_prints_the_effective_config_with_the_key_masked(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "concurrency = 8\n")

    result = check_config(path)

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[0] == f"# {path}: valid"
    assert 'api_key = "********"' in result.stdout.splitlines()
    assert KEY not in result.stdout
    effective = tomllib.loads(result.stdout)
    assert effective["upstream"]["concurrency"] == 8
    assert effective["upstream"]["retry_interval"] == 10.0  # defaults are shown too
    assert effective["store"]["path"] == "/var/lib/sms-gateway/outbox.sqlite3"
    assert effective["http"]["ingest_token"] == ""


def test_a_key_read_from_a_file_is_masked_too(tmp_path: Path) -> None:
    (tmp_path / "api_key").write_text(KEY + "\n", encoding="utf-8")
    (tmp_path / "token").write_text("tok-SECRET-42\n", encoding="utf-8")
    path = write(
        tmp_path,
        f'[upstream]\nurl = "{URL}"\napi_key_file = "api_key"\n\n'
        '[http]\ningest_token_file = "token"\n',
    )

    result = check_config(path)

    assert result.returncode == 0, result.stderr
    assert 'api_key = "********"' in result.stdout.splitlines()
    assert 'ingest_token = "********"' in result.stdout.splitlines()
    assert KEY not in result.stdout + result.stderr
    assert "tok-SECRET-42" not in result.stdout + result.stderr


def test_a_directory_given_as_config_exits_2_without_traceback(tmp_path: Path) -> None:
    result = check_config(tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pa55-SECRET@partner-host.example/v1/PUSH_SMS",
        "https://" + "a" * 64 + ".example/v1/PUSH_SMS",
    ],
    ids=["userinfo", "label-over-63"],
)
def test_an_upstream_url_that_would_fail_on_connect_exits_2_naming_the_key(
    tmp_path: Path, url: str
) -> None:
    result = check_config(write(tmp_path, f'[upstream]\nurl = "{url}"\napi_key = "{KEY}"\n'))

    assert result.returncode == 2
    assert result.stderr.startswith("sms-gateway: upstream.url: ")
    assert len(result.stderr.splitlines()) == 1
    assert "pa55-SECRET" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_secret_file_others_can_read_is_warned_about_on_stderr(tmp_path: Path) -> None:
    key = tmp_path / "api_key"
    key.write_text(KEY + "\n", encoding="utf-8")
    key.chmod(0o644)
    path = write(tmp_path, f'[upstream]\nurl = "{URL}"\napi_key_file = "api_key"\n')

    result = check_config(path)

    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"sms-gateway: warning: upstream.api_key_file: {key} is readable by every user on this"
        f" host (mode 0644); make it 0600 or 0640: chmod o-r {key}\n"
    )
    assert KEY not in result.stdout + result.stderr

    key.chmod(0o600)
    assert check_config(path).stderr == ""
