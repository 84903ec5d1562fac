"""What ships beside the code: the example config, the README and the systemd unit stay true."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway import config
from gateway.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"
README = ROOT / "README.md"
UNIT = ROOT / "deploy" / "sms-gateway.service"
SYSUSERS = ROOT / "deploy" / "sysusers.conf"
DOCS = [README, ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

PLACEHOLDER_URL = "https://partner-host.example/v1/PUSH_SMS"
CREDENTIALS = "/run/credentials/sms-gateway.service/"
_KEY_LINE = re.compile(r"^\s*(#\s*)?([a-z_]+)\s*=\s*(.*)$")
_SECTION = re.compile(r"^\s*\[([a-z_]+)\]")
# A commented-out example table: [partner], or an array: [[modem]], [[partner.number_query]].
_TABLE_EXAMPLE = re.compile(r"^#\s*(\[\[?)([a-z_.]+)\]\]?(\s|$)")


# -- config.example.toml ---------------------------------------------------------------------


def example_with_key_file(tmp_path: Path) -> Path:
    """The example with api_key_file pointing at a real file (the credential path is not here)."""
    key = tmp_path / "api_key"
    key.write_text("example-key-0123456789\n", encoding="utf-8")
    text = EXAMPLE.read_text(encoding="utf-8")
    assert f'api_key_file = "{CREDENTIALS}api_key"' in text
    path = tmp_path / "config.toml"
    path.write_text(text.replace(f"{CREDENTIALS}api_key", str(key)), encoding="utf-8")
    return path


def documented_keys() -> dict[str, dict[str, tuple[str, bool]]]:
    """section -> key -> (value text, commented out) for every `key = value` line."""
    found: dict[str, dict[str, tuple[str, bool]]] = {}
    section = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if m := _SECTION.match(line):
            section = m.group(1)
            found.setdefault(section, {})
        elif m := _TABLE_EXAMPLE.match(line):
            section = m.group(2)
            found.setdefault(section, {})
            ARRAYS[section] = m.group(1) == "[["
        elif section and (m := _KEY_LINE.match(line)):
            commented, key, rest = m.group(1) is not None, m.group(2), m.group(3)
            # The value alone: TOML up to the comment that follows it.
            value = rest.split("  #", 1)[0].strip()
            found[section].setdefault(key, (value, commented))
    return found


ARRAYS: dict[str, bool] = {}  # commented-out example tables: array of tables or not


def default_config() -> dict[str, Any]:
    return config.masked(config.parse({"upstream": {"url": PLACEHOLDER_URL, "api_key": "x"}}))


def test_example_config_loads(tmp_path: Path) -> None:
    cfg = config.load(example_with_key_file(tmp_path))
    assert cfg.upstream.url == PLACEHOLDER_URL
    assert cfg.upstream.api_key == "example-key-0123456789"
    assert cfg.http.ingest_token == ""


def test_example_config_shows_the_defaults(tmp_path: Path) -> None:
    assert config.masked(config.load(example_with_key_file(tmp_path))) == default_config()


# Every declared key, secret file form and default is checked against the example in
# tests/test_config.py (from the declarations themselves); here the example must parse.


def test_every_commented_alternative_in_the_example_is_accepted(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("alternative-secret\n", encoding="utf-8")
    base = tomllib.loads(example_with_key_file(tmp_path).read_text(encoding="utf-8"))
    tried = 0
    for section, keys in documented_keys().items():
        if section.split(".")[0] not in base:  # a commented example table: it must parse whole
            table = {k: tomllib.loads(f"v = {v}")["v"] for k, (v, _) in keys.items()}
            doc: dict[str, Any] = dict(base)
            *parents, name = section.split(".")
            for parent in parents:  # [[partner.number_query]] inside [partner]
                doc = doc.setdefault(parent, {})
            doc[name] = [table] if ARRAYS.get(section) else {**doc.get(name, {}), **table}
            config.parse(doc if not parents else {**base, parents[0]: doc}, base_dir=tmp_path)
            tried += 1
            continue
        for key, (value, commented) in keys.items():
            if not commented:
                continue
            doc = {s: dict(v) for s, v in base.items()}
            # An alternative replaces its partner: api_key <-> api_key_file.
            partner = key.removesuffix("_file") if key.endswith("_file") else f"{key}_file"
            doc[section].pop(partner, None)
            if key.endswith("_file"):
                doc[section][key] = str(secret)
            else:
                doc[section][key] = tomllib.loads(f"v = {value}")["v"].replace("...", "k")
            config.parse(doc, base_dir=tmp_path)
            tried += 1
    assert tried >= 2  # api_key and ingest_token_file at least


# -- README ----------------------------------------------------------------------------------


def readme_sections() -> list[tuple[str, str]]:
    """(heading, body) for every `## ` section, in order."""
    text = README.read_text(encoding="utf-8")
    parts = re.split(r"^## +(.+)$", text, flags=re.MULTILINE)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def test_readme_starts_with_a_title_then_quick_start() -> None:
    lines = [line for line in README.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines[0].startswith("# ")
    assert lines[1] == "## Quick start"


def test_quick_start_is_exactly_make_run_and_make_test() -> None:
    heading, body = readme_sections()[0]
    assert heading == "Quick start"
    block = re.search(r"```[a-z]*\n(.*?)```", body, flags=re.DOTALL)
    assert block is not None, "Quick start has no code block"
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]


def cli_commands() -> list[str]:
    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    names: list[str] = []
    for name, sub in subcommands(build_parser()).items():
        nested = subcommands(sub)
        if nested:
            names.extend(f"{name} {action}" for action in nested)
        else:
            names.append(name)
    return names


def test_readme_documents_every_command() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [c for c in cli_commands() if f"`sms-gateway {c}" not in text]
    assert not missing, f"README's command table lacks: {', '.join(missing)}"


def test_readme_has_the_promised_sections() -> None:
    headings = [h for h, _ in readme_sections()]
    for wanted in ("Dependencies and why", "Performance", "HTTP API", "Commands"):
        assert wanted in headings


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {slug(m) for m in re.findall(r"^#+ +(.+)$", text, flags=re.MULTILINE)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_between_documents_resolve(doc: Path) -> None:
    assert doc.is_file(), f"{doc} is missing"
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        exists = path.exists()
        if not exists or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(target)
    assert not broken, f"{doc.name}: broken links {broken}"


# -- the systemd unit ------------------------------------------------------------------------


def unit_directives(path: Path = UNIT) -> dict[str, list[tuple[str, str]]]:
    """section -> [(key, value)], keeping repeated keys (DeviceAllow=, LoadCredential=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current, f"not a directive: {raw!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


REQUIRED_SERVICE = [
    ("Type", "notify"),
    ("NotifyAccess", "main"),
    ("ExecStart", "/opt/sms-gateway/.venv/bin/sms-gateway run -c /etc/sms-gateway/config.toml"),
    ("WatchdogSec", "30"),
    ("Restart", "on-failure"),
    ("RestartSec", "2"),
    ("TimeoutStopSec", "10"),
    ("KillSignal", "SIGTERM"),
    ("User", "sms-gateway"),
    ("Group", "sms-gateway"),
    ("SupplementaryGroups", "dialout"),
    ("StateDirectory", "sms-gateway"),
    ("LoadCredential", "api_key:/etc/sms-gateway/api_key"),
    ("LoadCredential", "ingest_token:/etc/sms-gateway/ingest_token"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("NoNewPrivileges", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("RestrictRealtime", "yes"),
    ("SystemCallArchitectures", "native"),
    ("CapabilityBoundingSet", ""),
    ("DevicePolicy", "closed"),
    ("DeviceAllow", "char-ttyUSB rw"),
    ("DeviceAllow", "char-ttyACM rw"),
]


def test_unit_has_the_required_directives() -> None:
    service = unit_directives()["Service"]
    missing = [f"{k}={v}" for k, v in REQUIRED_SERVICE if (k, v) not in service]
    assert not missing, f"sms-gateway.service lacks: {', '.join(missing)}"


def test_unit_leaves_serial_devices_reachable() -> None:
    keys = {k for k, _ in unit_directives()["Service"]}
    # Modems are devices: PrivateDevices= would hide them; DynamicUser= complicates dialout.
    assert "PrivateDevices" not in keys
    assert "DynamicUser" not in keys


def test_unit_has_each_single_valued_directive_once() -> None:
    keys = [k for k, _ in unit_directives()["Service"]]
    repeated = {k for k in keys if keys.count(k) > 1} - {"DeviceAllow", "LoadCredential"}
    assert not repeated


def test_unit_credentials_match_the_example_config() -> None:
    loaded = {v.split(":", 1)[0] for k, v in unit_directives()["Service"] if k == "LoadCredential"}
    documented = documented_keys()
    for section, key in (("upstream", "api_key_file"), ("http", "ingest_token_file")):
        value = tomllib.loads(f"v = {documented[section][key][0]}")["v"]
        assert value.startswith(CREDENTIALS), f"{section}.{key}"
        assert value.removeprefix(CREDENTIALS) in loaded


def test_unit_state_directory_holds_the_default_store() -> None:
    state = dict(unit_directives()["Service"])["StateDirectory"]
    assert Path(config.StoreConfig.path).parent == Path("/var/lib") / state


def test_sysusers_creates_the_unit_user_in_dialout() -> None:
    entries = [
        line.split()
        for line in SYSUSERS.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ["u", "sms-gateway"] in [e[:2] for e in entries]
    assert ["m", "sms-gateway", "dialout"] in [e[:3] for e in entries]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing here (apt-get install systemd)")
    true = shutil.which("true") or "/bin/true"
    # verify insists that ExecStart's program exists; the venv path is the host's, not ours.
    text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={true}", UNIT.read_text(encoding="utf-8"))
    unit = tmp_path / "sms-gateway.service"
    unit.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # verify exits 0 on unknown keys but warns about them: any line naming our file fails.
    complaints = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0, result.stderr
    assert not complaints, "\n".join(complaints)
