"""deploy/prometheus/alerts.yml: valid for promtool, each alert fired and kept quiet by its unit
tests, every metric and label it names really exported by the daemon, and every runbook pointing
at a section of docs/troubleshooting.md that exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.promql import Exposition

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"

# Series the rules use that the daemon does not export, and who does.
EXTERNAL = frozenset(
    {
        "up",  # Prometheus, for every scrape target
        "probe_success",  # the blackbox exporter probing /health (deploy/README.md)
    }
)


def promtool() -> str:
    """promtool's path. Not skipped when missing: .ci/run installs it (Debian's `prometheus`)."""
    path = shutil.which("promtool")
    assert path, "promtool is missing: apt-get install prometheus (.ci/run does this as root)"
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation but `-` and `_`
    removed, each space a hyphen."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", markdown, re.MULTILINE):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return anchors


def test_promtool_checks_the_rules() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    result = run_promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has an evaluation where it fires and one where it must not."""
    doc = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))
    assert doc["rule_files"] == [ALERTS.name]
    fired, quiet = set(), set()
    for test in doc["tests"]:
        for case in test["alert_rule_test"]:
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - fired == set(), "never shown firing"
    assert names - quiet == set(), "never shown quiet"
    assert (fired | quiet) - names == set(), "tests of alerts that do not exist"


def test_every_alert_is_complete_and_its_runbook_exists() -> None:
    anchors = github_anchors(TROUBLESHOOTING.read_text(encoding="utf-8"))
    seen = set()
    for rule in rules():
        name = rule["alert"]
        assert name not in seen, f"{name} twice"
        seen.add(name)
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{name}: no for:"
        notes = rule["annotations"]
        assert notes.get("summary") and notes.get("description"), name
        path, _, anchor = notes["runbook"].partition("#")
        assert path == "docs/troubleshooting.md", name
        assert anchor in anchors, f"{name}: no section #{anchor} in {path}"


def test_every_metric_in_the_rules_is_one_the_daemon_exports(exposition: Exposition) -> None:
    problems = [
        f"{rule['alert']}: {problem}"
        for rule in rules()
        for problem in exposition.problems(rule["expr"], EXTERNAL)
    ]
    assert problems == []


def test_the_scrape_config_in_deploy_readme_is_valid_and_names_the_rules_jobs(
    tmp_path: Path,
) -> None:
    """The prometheus.yml example operators copy: valid for promtool, with the job names the
    rules' expressions use."""
    readme = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```yaml\n# prometheus.yml\n(.*?)```", readme, re.DOTALL)
    assert match, "deploy/README.md has no prometheus.yml example"
    config = yaml.safe_load(match.group(1))
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    for rule in rules():
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, f"{rule['alert']}: job {job!r} not in the example"
    config["rule_files"] = [str(ALERTS)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_scraped_daemon_exports_the_new_gauges_with_real_values(exposition: Exposition) -> None:
    """The gauges the newer rules need, as the real daemon sets them: the store probed writable
    on the scrape, the key not rejected (a delivery succeeded), the modem registered with its
    SIM storage's size, and the partner side's last call set by the GET_SERVICES made."""
    assert exposition.value("sms_gateway_store_writable") == 1
    assert exposition.value("sms_gateway_upstream_key_rejected") == 0
    assert exposition.value("sms_gateway_modem_registered", modem="m1") == 1
    assert exposition.value("sms_gateway_modem_storage_capacity", modem="m1") > 0
    assert exposition.value("sms_gateway_modem_storage_used", modem="m1") >= 0
    assert exposition.value("sms_gateway_partner_last_call_timestamp_seconds") > 0
    assert exposition.value("sms_gateway_start_time_seconds") > 0


def test_the_smpp_binds_gauge_is_0_for_a_client_that_never_bound(exposition: Exposition) -> None:
    """SmsGatewaySmppClientNotBound must fire for a client configured but never bound: its
    binds gauge is there at 0 from the start, not missing until a first bind, while the bound
    server account counts its session."""
    assert exposition.value("sms_gateway_smpp_binds", source="smpp-client:op1") == 0
    assert exposition.value("sms_gateway_smpp_binds", source="smpp-server:box1") == 1
    # the client's message counters and in-flight gauge are there too, before any session
    op1 = {"source": "smpp-client:op1", "bind": "op1"}
    assert exposition.value("sms_gateway_smpp_messages_total", outcome="stored", **op1) == 0
    assert exposition.value("sms_gateway_smpp_in_flight", **op1) == 0
