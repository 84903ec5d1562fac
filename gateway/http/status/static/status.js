// The status page redraws itself from /status.json every few seconds. Every value is set as
// text (textContent), never as HTML; the server already wrote control characters out.
"use strict";
(function () {
  var body = document.body;
  var refresh = Math.max(1, parseInt(body.getAttribute("data-refresh"), 10) || 5) * 1000;
  var STATES = {};
  var ORDER = {};
  var last = null;
  var params = new URLSearchParams(location.search);

  function el(tag, attrs, children) {
    var n = document.createElement(tag);
    if (attrs) for (var k in attrs) if (attrs[k] !== null && attrs[k] !== undefined) n.setAttribute(k, attrs[k]);
    (children || []).forEach(function (c) {
      n.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return n;
  }
  function bdi(v) { return el("bdi", null, [v === null || v === undefined || v === "" ? "–" : String(v)]); }
  function td(c, cls) { return el("td", cls ? { "class": cls } : null, [c]); }
  function age(s) {
    if (typeof s !== "number") return "–";
    s = Math.floor(s);
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min";
    if (s < 172800) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }
  function set(id, text, cls) {
    var n = document.getElementById(id);
    if (!n) return;
    n.textContent = text;
    if (cls !== undefined) n.className = cls;
  }
  function fill(id, rows) {
    var n = document.getElementById(id);
    if (!n) return;
    n.replaceChildren.apply(n, rows);
  }
  function query(changes) {
    var p = new URLSearchParams(params.toString());
    for (var k in changes) { if (changes[k]) p.set(k, changes[k]); else p.delete(k); }
    var s = p.toString();
    return s ? "?" + s : location.pathname;
  }
  function bars(n) {
    var s = el("span", { "class": "bars", title: n + " of 4" });
    for (var i = 1; i <= 4; i++) s.appendChild(el("i", { "class": "b" + i + (i <= n ? " on" : "") }));
    return s;
  }
  function sortRows(rows, key) {
    function k(r) {
      switch (key) {
        case "signal": return [-(r.signal_dbm === null ? -999 : r.signal_dbm), r.id];
        case "operator": case "phone": return [r[key] === null ? 1 : 0, r[key] || "", r.id];
        case "last_sms": return [r.last_sms_age === null ? 1 : 0, r.last_sms_age || 0, r.id];
        case "id": return [r.id];
        default: return [ORDER[r.state], r.id];
      }
    }
    return rows.slice().sort(function (a, b) {
      var x = k(a), y = k(b);
      for (var i = 0; i < x.length; i++) { if (x[i] < y[i]) return -1; if (x[i] > y[i]) return 1; }
      return 0;
    });
  }
  function portRow(r) {
    var link = el("a", { href: query({ port: r.id }) }, [bdi(r.id)]);
    link.addEventListener("click", function (ev) { ev.preventDefault(); go({ port: r.id }); });
    var storage = "–";
    if (r.storage_used !== null && r.storage_total) {
      storage = el("span", { "class": "storage" + (r.storage_used / r.storage_total >= 0.8 ? " full" : "") },
        [r.storage_used + "/" + r.storage_total]);
    }
    return el("tr", { "data-port": r.id, "data-state": r.state }, [
      td(link, "id"),
      td(el("span", { "class": "badge st-" + r.state }, [r.label])),
      el("td", { "class": "signal" }, [bars(r.bars), " ", el("small", null, [r.signal_dbm === null ? "" : r.signal_dbm + " dBm"])]),
      td(bdi(r.operator)), td(bdi(r.phone)), td(bdi(r.iccid_tail)), td(storage),
      td(age(r.last_sms_age)), td(bdi(r.last_error), "err")
    ]);
  }
  function drawPorts() {
    if (!last) return;
    var state = params.get("state") || "";
    var sort = params.get("sort") || "state";
    var rows = sortRows(last.ports, sort).filter(function (r) { return !state || r.state === state; });
    var table = document.getElementById("ports");
    table.setAttribute("data-sort", sort);
    table.setAttribute("data-filter", state);
    fill("ports-body", rows.map(portRow));
    var nav = document.getElementById("filters");
    Array.prototype.forEach.call(nav.querySelectorAll("a"), function (a) {
      var k = a.getAttribute("data-state");
      a.setAttribute("href", query({ state: k }));
      a.classList.toggle("on", k === state);
      a.querySelector("b").textContent = k ? last.by_state[k] : last.ports.length;
    });
    Array.prototype.forEach.call(table.querySelectorAll("thead a"), function (a) {
      a.setAttribute("href", query({ sort: a.getAttribute("data-sort") }));
    });
  }
  var SVG = "http://www.w3.org/2000/svg";
  function chart(minutes) {
    var peak = 1;
    minutes.forEach(function (m) { peak = Math.max(peak, m[1] + m[2] + m[3] + m[4]); });
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("id", "chart");
    svg.setAttribute("viewBox", "0 0 600 100");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "last hour, a bar a minute, peak " + peak);
    minutes.forEach(function (m, i) {
      var y = 100, g = document.createElementNS(SVG, "g"), any = false;
      var t = document.createElementNS(SVG, "title");
      t.textContent = "delivered " + m[1] + ", retried " + m[2] + ", dropped " + m[3] + ", held " + m[4];
      g.appendChild(t);
      ["d", "r", "x", "h"].forEach(function (cls, j) {
        var n = m[j + 1];
        if (!n) return;
        var h = 100 * n / peak;
        y -= h;
        var r = document.createElementNS(SVG, "rect");
        r.setAttribute("class", cls);
        r.setAttribute("x", i * 10 + 1); r.setAttribute("y", y.toFixed(2));
        r.setAttribute("width", 8); r.setAttribute("height", h.toFixed(2));
        g.appendChild(r);
        any = true;
      });
      if (any) svg.appendChild(g);
    });
    return svg;
  }
  function drawDelivery(d) {
    set("queued", String(d.queued));
    set("oldest", age(d.oldest_queued_age));
    set("circuit", d.circuit, "c-" + d.circuit);
    set("last-success", d.last_success_age === null ? "never" : age(d.last_success_age) + " ago");
    set("key", d.key_rejected ? "rejected" : "ok", d.key_rejected ? "bad" : "");
    set("pause", d.paused_for ? "paused " + age(d.paused_for) : "no");
    set("failures", String(d.consecutive_failures));
    ["delivered", "retried", "dropped", "held"].forEach(function (k) { set("h-" + k, String(d.last_hour[k])); });
    fill("chart-box", [chart(d.minutes)]);
    fill("last-failure", d.last_failure ? [bdi(d.last_failure)] : []);
  }
  function messageText(m) { return "text" in m ? bdi(m.text) : m.length + " chars"; }
  function drawLists(s) {
    fill("drops", s.drops.map(function (d) {
      return el("tr", null, [td(String(d.sms_id)), td(age(d.age)), td(bdi(d.sender)), td(bdi(d.phone)), td(bdi(d.reason))]);
    }));
    fill("held", s.held.map(function (m) {
      return el("tr", null, [td(String(m.sms_id)), td(age(m.age)), td(bdi(m.sender)), td(bdi(m.reason)), td(messageText(m))]);
    }));
    var p = document.getElementById("partner");
    if (!s.partner) { p.hidden = true; return; }
    p.hidden = false;
    if (!document.getElementById("activations")) {
      p.replaceChildren(el("h2", null, ["Partner"]), el("h3", null, ["Open activations"]),
        el("table", null, [el("thead", null, [el("tr", null, ["id", "phone", "service", "open for", "ends in"].map(function (h) { return el("th", null, [h]); }))]), el("tbody", { id: "activations" })]),
        el("h3", null, ["SIMs by country and operator"]),
        el("table", null, [el("thead", null, [el("tr", null, ["country", "operator", "ready", "total"].map(function (h) { return el("th", null, [h]); }))]), el("tbody", { id: "sim-counts" })]));
    }
    fill("activations", s.partner.open.map(function (a) {
      return el("tr", null, [td(String(a.activation_id)), td(bdi(a.phone)), td(bdi(a.service)), td(age(a.age)), td(age(a.ends_in))]);
    }));
    fill("sim-counts", s.partner.counts.map(function (c) {
      return el("tr", null, [td(bdi(c.country)), td(bdi(c.operator)), td(String(c.ready)), td(String(c.total))]);
    }));
  }
  function drawDetails(p) {
    var sec = document.getElementById("details");
    if (!p) { sec.hidden = true; sec.replaceChildren(); sec.removeAttribute("data-port"); return; }
    sec.hidden = false;
    sec.setAttribute("data-port", p.id);
    var close = el("a", { "class": "close", href: query({ port: null }) }, ["close"]);
    close.addEventListener("click", function (ev) { ev.preventDefault(); go({ port: null }); });
    var facts = el("dl", { "class": "facts" });
    ["label", "operator", "phone", "iccid", "signal_dbm", "model", "last_error"].forEach(function (k) {
      if (k in p) facts.appendChild(el("div", null, [el("dt", null, [k]), el("dd", null, [bdi(p[k])])]));
    });
    var rows = p.messages.map(function (m) {
      return el("tr", null, [td(String(m.sms_id)), td(age(m.age)), td(bdi(m.sender)), td(m.state), td(messageText(m))]);
    });
    sec.replaceChildren(el("h2", null, ["Port ", bdi(p.id), " ", close]), facts, el("h3", null, ["Last messages"]),
      el("table", null, [el("thead", null, [el("tr", null, ["smsId", "age", "from", "state", "text"].map(function (h) { return el("th", null, [h]); }))]), el("tbody", null, rows)]));
  }
  function draw(s) {
    last = s;
    STATES = s.states;
    ORDER = {};
    Object.keys(STATES).forEach(function (k, i) { ORDER[k] = i; });
    set("overall", s.status, "lvl-" + s.status);
    set("generated", "as of " + s.generated_at);
    document.title = "SMS gateway: " + s.status;
    drawPorts();
    drawDelivery(s.delivery);
    drawLists(s);
    if (params.get("port")) drawDetails(s.port); else drawDetails(null);
    body.setAttribute("data-polls", String((parseInt(body.getAttribute("data-polls"), 10) || 0) + 1));
  }
  var timer = null;
  function poll() {
    if (timer) clearTimeout(timer);
    var port = params.get("port");
    fetch("/status.json" + (port ? "?port=" + encodeURIComponent(port) : ""), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { location.reload(); throw new Error("signed out"); }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (s) { draw(s); body.classList.remove("stale"); })
      .catch(function () { body.classList.add("stale"); })
      .then(function () { timer = setTimeout(poll, refresh); });
  }
  function go(changes) {
    var p = new URLSearchParams(query(changes).replace(/^[^?]*\??/, ""));
    params = p;
    history.replaceState(null, "", query({}));
    if ("port" in changes) poll(); else drawPorts();
  }
  document.getElementById("filters").addEventListener("click", function (ev) {
    var a = ev.target.closest("a");
    if (!a) return;
    ev.preventDefault();
    go({ state: a.getAttribute("data-state") });
  });
  document.querySelector("#ports thead").addEventListener("click", function (ev) {
    var a = ev.target.closest("a");
    if (!a) return;
    ev.preventDefault();
    go({ sort: a.getAttribute("data-sort") });
  });
  Array.prototype.forEach.call(document.querySelectorAll("#ports tbody a, #details a.close"), function (a) {
    a.addEventListener("click", function (ev) {
      ev.preventDefault();
      var tr = a.closest("tr");
      go({ port: tr ? tr.getAttribute("data-port") : null });
    });
  });
  poll();
})();
