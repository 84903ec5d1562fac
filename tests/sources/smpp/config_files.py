"""Config files on disk for the SMPP tests that read them as the daemon does (`config.load`)."""

from __future__ import annotations

from pathlib import Path


def secret_file(path: Path, value: str) -> Path:
    """`value` in a 0600 file with a trailing newline (not part of the secret)."""
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def smpp_config(tmp_path: Path, port: int, tables: str) -> Path:
    """`tmp_path/config.toml`: a store in `tmp_path`, `[smpp_server]` on 127.0.0.1:`port`,
    then `tables` (accounts, clients) as TOML."""
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[upstream]
url = "http://127.0.0.1:9/push"
api_key = "k"

[store]
path = "{tmp_path / "outbox.sqlite3"}"

[smpp_server]
listen = "127.0.0.1:{port}"
{tables}""",
        encoding="utf-8",
    )
    return path
