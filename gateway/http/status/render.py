"""The status page's HTML, server-rendered from the snapshot (the page without JavaScript is
the whole page; status.js only redraws it from /status.json). Every value is escaped here."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from gateway.http.status.snapshot import STATES

__all__ = ["SORTS", "chart_svg", "login_page", "page", "sort_ports"]

SORTS = ("state", "id", "signal", "operator", "phone", "last_sms")
_STATE_ORDER = {k: i for i, k in enumerate(STATES)}


def e(value: object) -> str:
    """Escaped text (None as a dash); SMS-derived strings also go inside <bdi> where shown."""
    return "–" if value is None or value == "" else html.escape(str(value), quote=True)


def b(value: object) -> str:
    """Text from outside, isolated from the surrounding direction (bidi)."""
    return f"<bdi>{e(value)}</bdi>"


def age(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "–"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def sort_ports(ports: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    def k(r: dict[str, Any]) -> tuple[Any, ...]:
        match key:
            case "signal":
                return (-(r["signal_dbm"] if r["signal_dbm"] is not None else -999), r["id"])
            case "operator" | "phone":
                return (r[key] is None, r[key] or "", r["id"])
            case "last_sms":
                a = r["last_sms_age"]
                return (a is None, a or 0, r["id"])
            case "id":
                return (r["id"],)
            case _:
                return (_STATE_ORDER[r["state"]], r["id"])

    return sorted(ports, key=k)


def _query(q: Mapping[str, str], **changes: str | None) -> str:
    merged = {**q, **changes}
    return "?" + urlencode({k: v for k, v in merged.items() if v})


def _bars(n: int) -> str:
    return (
        f'<span class="bars" title="{n} of 4">'
        + "".join(f'<i class="b{i}{" on" if i <= n else ""}"></i>' for i in range(1, 5))
        + "</span>"
    )


def _storage(r: Mapping[str, Any]) -> str:
    used, total = r["storage_used"], r["storage_total"]
    if used is None or not total:
        return "–"
    full = " full" if used / total >= 0.8 else ""
    return f'<span class="storage{full}">{int(used)}/{int(total)}</span>'


def port_row(r: Mapping[str, Any], q: Mapping[str, str]) -> str:
    signal = f"{r['signal_dbm']} dBm" if r["signal_dbm"] is not None else ""
    return (
        f'<tr data-port="{e(r["id"])}" data-state="{e(r["state"])}">'
        f'<td class="id"><a href="{e(_query(q, port=r["id"]))}">{b(r["id"])}</a></td>'
        f'<td><span class="badge st-{e(r["state"])}">{e(r["label"])}</span></td>'
        f'<td class="signal">{_bars(int(r["bars"]))} <small>{e(signal)}</small></td>'
        f"<td>{b(r['operator'])}</td><td>{b(r['phone'])}</td><td>{b(r['iccid_tail'])}</td>"
        f"<td>{_storage(r)}</td><td>{age(r['last_sms_age'])}</td>"
        f'<td class="err">{b(r["last_error"])}</td></tr>'
    )


def chart_svg(minutes: list[list[float]]) -> str:
    """Stacked bars a minute wide: delivered, retried, dropped, held (no chart library)."""
    peak = max([sum(m[1:]) for m in minutes] + [1])
    parts = []
    for i, m in enumerate(minutes):
        y = 100.0
        title = f"delivered {int(m[1])}, retried {int(m[2])}, dropped {int(m[3])}, held {int(m[4])}"
        rects = []
        for cls, n in zip(("d", "r", "x", "h"), m[1:], strict=True):
            if n:
                h = 100.0 * n / peak
                y -= h
                rects.append(
                    f'<rect class="{cls}" x="{i * 10 + 1}" y="{y:.2f}" width="8" height="{h:.2f}"/>'
                )
        if rects:
            parts.append(f"<g><title>{e(title)}</title>{''.join(rects)}</g>")
    return (
        '<svg id="chart" viewBox="0 0 600 100" preserveAspectRatio="none" role="img" '
        f'aria-label="last hour, a bar a minute, peak {int(peak)}">{"".join(parts)}</svg>'
    )


def _delivery(d: Mapping[str, Any]) -> str:
    hour = d["last_hour"]
    circuit = d["circuit"]
    last = age(d["last_success_age"]) + " ago" if d["last_success_age"] is not None else "never"
    pause = f"paused {age(d['paused_for'])}" if d["paused_for"] else "no"
    return (
        '<dl class="facts">'
        f'<div><dt>queued</dt><dd id="queued">{int(d["queued"])}</dd></div>'
        f'<div><dt>oldest queued</dt><dd id="oldest">{age(d["oldest_queued_age"])}</dd></div>'
        f'<div><dt>circuit</dt><dd id="circuit" class="c-{e(circuit)}">{e(circuit)}</dd></div>'
        f'<div><dt>last 200</dt><dd id="last-success">{e(last)}</dd></div>'
        f'<div><dt>key</dt><dd id="key" class="{"bad" if d["key_rejected"] else ""}">'
        f"{'rejected' if d['key_rejected'] else 'ok'}</dd></div>"
        f'<div><dt>429 pause</dt><dd id="pause">{e(pause)}</dd></div>'
        f'<div><dt>failures in a row</dt><dd id="failures">{int(d["consecutive_failures"])}'
        "</dd></div>"
        "</dl>"
        '<p class="hour">last hour: '
        f'<span class="k d">delivered <b id="h-delivered">{int(hour["delivered"])}</b></span> '
        f'<span class="k r">retried <b id="h-retried">{int(hour["retried"])}</b></span> '
        f'<span class="k x">dropped <b id="h-dropped">{int(hour["dropped"])}</b></span> '
        f'<span class="k h">held <b id="h-held">{int(hour["held"])}</b></span></p>'
        f'<div id="chart-box">{chart_svg(d["minutes"])}</div>'
        f'<p id="last-failure" class="err">{b(d["last_failure"]) if d["last_failure"] else ""}</p>'
    )


def _message_rows(messages: list[Mapping[str, Any]], *, who: str, reason: bool) -> str:
    rows = []
    for m in messages:
        text = f"<td>{b(m['text'])}</td>" if "text" in m else f"<td>{int(m['length'])} chars</td>"
        rows.append(
            f"<tr><td>{int(m['sms_id'])}</td><td>{age(m['age'])}</td><td>{b(m[who])}</td>"
            + (f"<td>{b(m['reason'])}</td>" if reason else f"<td>{e(m['state'])}</td>")
            + (text if "length" in m else "")
            + "</tr>"
        )
    return "".join(rows)


def _details(p: Mapping[str, Any] | None, q: Mapping[str, str]) -> str:
    if p is None:
        return '<section id="details" hidden></section>'
    facts = "".join(
        f"<div><dt>{e(k)}</dt><dd>{b(p.get(k))}</dd></div>"
        for k in ("label", "operator", "phone", "iccid", "signal_dbm", "model", "last_error")
        if k in p
    )
    return (
        f'<section id="details" data-port="{e(p["id"])}"><h2>Port {b(p["id"])} '
        f'<a class="close" href="{e(_query(q, port=None))}">close</a></h2>'
        f'<dl class="facts">{facts}</dl><h3>Last messages</h3>'
        "<table><thead><tr><th>smsId</th><th>age</th><th>from</th><th>state</th>"
        "<th>text</th></tr></thead>"
        f"<tbody>{_message_rows(p['messages'], who='sender', reason=False)}</tbody></table>"
        "</section>"
    )


def _partner(p: Mapping[str, Any] | None) -> str:
    if p is None:
        return '<section id="partner" hidden></section>'
    opened = "".join(
        f"<tr><td>{int(a['activation_id'])}</td><td>{b(a['phone'])}</td><td>{b(a['service'])}"
        f"</td><td>{age(a['age'])}</td><td>{age(a['ends_in'])}</td></tr>"
        for a in p["open"]
    )
    counts = "".join(
        f"<tr><td>{b(c['country'])}</td><td>{b(c['operator'])}</td><td>{int(c['ready'])}</td>"
        f"<td>{int(c['total'])}</td></tr>"
        for c in p["counts"]
    )
    return (
        '<section id="partner"><h2>Partner</h2><h3>Open activations</h3>'
        "<table><thead><tr><th>id</th><th>phone</th><th>service</th><th>open for</th>"
        f'<th>ends in</th></tr></thead><tbody id="activations">{opened}</tbody></table>'
        "<h3>SIMs by country and operator</h3><table><thead><tr><th>country</th>"
        "<th>operator</th><th>ready</th><th>total</th></tr></thead>"
        f'<tbody id="sim-counts">{counts}</tbody></table></section>'
    )


def page(snap: Mapping[str, Any], q: Mapping[str, str], details: Mapping[str, Any] | None) -> str:
    """The whole page; `q` is the query (state filter, sort, port) the links keep."""
    state = q.get("state", "")
    sort = q.get("sort", "state")
    ports = sort_ports(list(snap["ports"]), sort if sort in SORTS else "state")
    if state in STATES:
        ports = [r for r in ports if r["state"] == state]
    filters = [
        f'<a href="{e(_query(q, state=None))}" data-state=""'
        f"{' class=on' if not state else ''}>all <b>{len(snap['ports'])}</b></a>"
    ] + [
        f'<a href="{e(_query(q, state=k))}" data-state="{k}" class="st-{k}'
        f'{" on" if state == k else ""}">{e(label)} <b>{snap["by_state"][k]}</b></a>'
        for k, label in STATES.items()
    ]
    heads = (
        ("id", "port"),
        ("state", "state"),
        ("signal", "signal"),
        ("operator", "operator"),
        ("phone", "phone"),
        (None, "ICCID"),
        (None, "SIM storage"),
        ("last_sms", "last SMS"),
        (None, "last error"),
    )
    th = "".join(
        f'<th><a href="{e(_query(q, sort=k))}" data-sort="{k}">{e(t)}</a></th>'
        if k
        else f"<th>{t}</th>"
        for k, t in heads
    )
    drops = "".join(
        f"<tr><td>{int(d['sms_id'])}</td><td>{age(d['age'])}</td><td>{b(d['sender'])}</td>"
        f"<td>{b(d['phone'])}</td><td>{b(d['reason'])}</td></tr>"
        for d in snap["drops"]
    )
    held = "".join(
        f"<tr><td>{int(m['sms_id'])}</td><td>{age(m['age'])}</td><td>{b(m['sender'])}</td>"
        f"<td>{b(m['reason'])}</td><td>{b(m['text']) if 'text' in m else int(m['length'])}</td>"
        "</tr>"
        for m in snap["held"]
    )
    refresh = int(snap["refresh"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SMS gateway: {e(snap["status"])}</title>
<link rel="stylesheet" href="/status.css"><link rel="icon" href="data:,">
<noscript><meta http-equiv="refresh" content="{refresh * 2}"></noscript>
<script src="/status.js" defer></script>
</head><body data-refresh="{refresh}">
<header><h1>SMS gateway</h1>
<span id="overall" class="lvl-{e(snap["status"])}">{e(snap["status"])}</span>
<span id="generated">as of {e(snap["generated_at"])}</span></header>
<main>
<section id="ports-section"><h2>Ports</h2>
<nav id="filters">{"".join(filters)}</nav>
<div class="scroll"><table id="ports" data-sort="{e(sort)}" data-filter="{e(state)}">
<thead><tr>{th}</tr></thead>
<tbody id="ports-body">{"".join(port_row(r, q) for r in ports)}</tbody></table></div>
</section>
{_details(details, q)}
<section id="delivery"><h2>Delivery</h2>{_delivery(snap["delivery"])}</section>
<section id="drops-section"><h2>Recent drops</h2><table><thead><tr><th>smsId</th>
<th>age</th><th>from</th><th>phone</th><th>reason</th></tr></thead>
<tbody id="drops">{drops}</tbody></table></section>
<section id="held-section"><h2>Held</h2><table><thead><tr><th>smsId</th><th>age</th>
<th>from</th><th>reason</th><th>text</th></tr></thead>
<tbody id="held">{held}</tbody></table></section>
{_partner(snap["partner"])}
</main></body></html>
"""


def login_page(*, failed: bool) -> str:
    note = '<p class="bad">wrong token</p>' if failed else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SMS gateway: sign in</title><link rel="stylesheet" href="/status.css">
<link rel="icon" href="data:,"></head>
<body><main><section id="login"><h1>SMS gateway</h1>{note}
<form method="post" action="/login"><label>status token
<input type="password" name="token" autocomplete="current-password" autofocus></label>
<button type="submit">open the status page</button></form></section></main></body></html>
"""
