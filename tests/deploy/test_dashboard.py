"""deploy/grafana/sms-gateway.json: a Grafana dashboard of the right shape, templated by data
source, site and instance so one dashboard covers a fleet; every panel query valid PromQL (for
promtool), filtered by the site and instance variables, and naming only metrics, labels and
label values a real daemon exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.metrics import Metrics
from tests.deploy.promql import TARGET_LABELS, Exposition, selectors
from tests.deploy.test_alerts import run_promtool

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sms-gateway.json"
EXTERNAL = frozenset({"up"})  # Prometheus's own series for the scrape of each gateway
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's built-in variables, replaced by what they stand for in a check of the syntax.
BUILT_IN = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def panels() -> list[dict[str, Any]]:
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return found


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target."""
    return [
        (f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"])
        for p in panels()
        for t in p.get("targets", [])
    ]


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def label_values_query(var: dict[str, Any]) -> tuple[str, str]:
    """A query variable's `label_values(SELECTOR, LABEL)`, split."""
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
    assert m, f"{var['name']}: not label_values(selector, label)"
    return m.group(1), m.group(2)


def substituted(expr: str) -> str:
    for name, value in BUILT_IN.items():
        expr = expr.replace(name, value)
    expr = re.sub(r"\$\{?(site|instance)\}?", ".*", expr)
    assert "$" not in expr, f"a variable left in {expr!r}"
    return expr


def test_it_is_a_dashboard_of_the_right_shape() -> None:
    doc = dashboard()
    assert isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] >= 36
    assert doc["title"] and doc["uid"] == "sms-gateway"
    ids = [p["id"] for p in panels()]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids)), "panel ids"
    taken: set[tuple[int, int]] = set()
    for p in panels():
        assert p["type"] and p["title"], p["id"]
        pos = p["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("h", "w", "x", "y")), p["id"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        xs = range(pos["x"], pos["x"] + pos["w"])
        cells = {(x, y) for x in xs for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, f"panel {p['id']} overlaps another"
        taken |= cells
        if p["type"] == "row":
            continue
        assert p["targets"], f"panel {p['id']} has no query"
        assert p["datasource"] == DATASOURCE, p["id"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE and t["expr"].strip() and t["refId"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["id"]


def test_one_dashboard_covers_a_fleet_by_data_source_site_and_instance() -> None:
    v = variables()
    assert v["datasource"]["type"] == "datasource" and v["datasource"]["query"] == "prometheus"
    for name in ("site", "instance"):
        var = v[name]
        assert var["type"] == "query" and var["datasource"] == DATASOURCE, name
        assert var["multi"] and var["includeAll"] and var["allValue"] == ".*", name
        _, label = label_values_query(var)
        assert label == name
    selector, _ = label_values_query(v["instance"])
    (sel,) = selectors(selector)
    assert sel.matcher("site") is not None, "instances are those of the chosen sites"


def test_every_query_filters_by_site_and_instance() -> None:
    for where, expr in queries():
        found = selectors(expr)
        assert found, where
        for sel in found:
            for label in ("site", "instance"):
                m = sel.matcher(label)
                assert m is not None and (m.op, m.value) == ("=~", f"${label}"), (
                    f'{where}: {sel.metric} not filtered by {label}=~"${label}"'
                )


def test_every_metric_in_the_dashboard_is_one_the_daemon_exports(
    exposition: Exposition,
) -> None:
    problems = [f"{w}: {p}" for w, e in queries() for p in exposition.problems(e, EXTERNAL)]
    for name, var in variables().items():
        if var["type"] != "query":
            continue
        selector, label = label_values_query(var)
        problems += [f"variable {name}: {p}" for p in exposition.problems(selector)]
        (sel,) = selectors(selector)
        if label not in TARGET_LABELS | exposition.label_names(sel.metric):
            problems.append(f"variable {name}: {sel.metric} has no label {label!r}")
    assert problems == []


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool checks each query (variables replaced) as a recording rule's expression."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substituted(expr)}
        for i, (_, expr) in enumerate(queries())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_every_gauge_the_daemon_declares_is_charted() -> None:
    """A gauge is a state an operator looks at: each one has a panel (counters and histograms
    may be left to the alerts and ad-hoc queries)."""
    charted = {sel.metric for _, expr in queries() for sel in selectors(expr)}
    gauges = {f.name for f in Metrics().registry.collect() if f.type == "gauge"}
    assert gauges - charted == set()


def test_the_smpp_panels_break_down_by_bind() -> None:
    """Per connection, as /health shows them: messages, errors and PDUs in flight by `bind`."""
    for metric in (
        "sms_gateway_smpp_messages_total",
        "sms_gateway_smpp_errors_total",
        "sms_gateway_smpp_in_flight",
    ):
        found = [expr for _, expr in queries() if metric in expr]
        assert found, f"{metric} is not charted"
        assert all(re.search(r"by \([^)]*\bbind\b", expr) for expr in found), metric
