"""Just enough PromQL reading for the deploy tests: the metric selectors in an expression (name
and label matchers), checked against what the daemon really exported. Syntax itself is
promtool's job; this only has to find every metric name, so anything it cannot place fails."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

# Labels Prometheus adds from the scrape config, never in the daemon's own output.
TARGET_LABELS = frozenset({"job", "instance", "site"})
# Identifiers PromQL reads as keywords, not as metric names, when not followed by "(".
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
# Followed by a parenthesised list of label names, not an expression.
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
# May take `by (...)` / `without (...)` before their parenthesised argument.
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile"}
)

_TOKEN = re.compile(
    r"""
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])
    | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![A-Za-z0-9_]))
    | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[{}(),=<>+\-*/%^])
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str  # =, !=, =~, !~
    value: str


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[Matcher, ...]

    def matcher(self, label: str) -> Matcher | None:
        return next((m for m in self.matchers if m.label == label), None)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN.finditer(expr):
        kind = m.lastgroup or "other"
        if kind == "space":
            continue
        if kind == "other":
            raise ValueError(f"unexpected character {m.group()!r} in {expr!r}")
        out.append((kind, m.group()))
    return out


def _unquote(literal: str) -> str:
    if literal.startswith("`"):
        return literal[1:-1]
    body = literal[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def selectors(expr: str) -> list[Selector]:
    """Every `name{matchers}` in ``expr``, in order."""
    toks = _tokens(expr)
    found: list[Selector] = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident" and text in LABEL_LISTS:
            if nxt != "(":
                raise ValueError(f"{text} without a label list in {expr!r}")
            i = _closing(toks, i + 1) + 1
            continue
        if kind == "ident" and text in AGGREGATIONS and nxt in ("by", "without"):
            i += 1
            continue
        if kind == "ident" and nxt == "(":  # a function or aggregation
            i += 1
            continue
        if kind == "ident" and text.lower() in KEYWORDS:
            i += 1
            continue
        if kind == "ident":
            matchers: list[Matcher] = []
            i += 1
            if nxt == "{":
                end = _closing(toks, i)
                matchers = _matchers(toks[i + 1 : end], expr)
                i = end + 1
            found.append(Selector(text, tuple(matchers)))
            continue
        if text == "{":
            raise ValueError(f"a selector without a metric name in {expr!r}")
        i += 1
    return found


def _closing(toks: list[tuple[str, str]], start: int) -> int:
    """Index of the bracket that closes the one at ``start``."""
    pairs = {"(": ")", "{": "}"}
    opening = toks[start][1]
    depth = 0
    for j in range(start, len(toks)):
        if toks[j][1] == opening:
            depth += 1
        elif toks[j][1] == pairs[opening]:
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unbalanced {opening!r}")


def _matchers(toks: list[tuple[str, str]], expr: str) -> list[Matcher]:
    out = []
    parts = [toks[k : k + 3] for k in range(0, len(toks), 4)]  # label op "value" [,]
    for part in parts:
        if len(part) != 3 or part[0][0] != "ident" or part[2][0] != "string":
            raise ValueError(f"cannot read the matchers in {expr!r}")
        out.append(Matcher(part[0][1], part[1][1], _unquote(part[2][1])))
    return out


@dataclass
class Exposition:
    """What one scrape of /metrics held: each sample name with the label sets it came with."""

    text: str
    samples: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Exposition:
        exp = cls(text)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                exp.samples.setdefault(sample.name, []).append(dict(sample.labels))
                exp.values[sample.name, frozenset(sample.labels.items())] = sample.value
        return exp

    def value(self, name: str, **labels: str) -> float:
        """The sample `name` with exactly these labels; KeyError when there is none."""
        return self.values[name, frozenset(labels.items())]

    def label_names(self, name: str) -> set[str]:
        return {label for labels in self.samples.get(name, []) for label in labels}

    def label_values(self, name: str, label: str) -> set[str]:
        return {labels[label] for labels in self.samples.get(name, []) if label in labels}

    def problems(self, expr: str, external: frozenset[str] = frozenset()) -> list[str]:
        """What in ``expr`` the daemon does not export: unknown metric names, label names it
        never sets, and matchers on its own labels that match none of its values. Metrics in
        ``external`` come from elsewhere (Prometheus, an exporter) and are not checked."""
        found = []
        for sel in selectors(expr):
            if sel.metric in external:
                continue
            if sel.metric not in self.samples:
                found.append(f"{sel.metric}: not in the daemon's /metrics")
                continue
            own = self.label_names(sel.metric)
            for m in sel.matchers:
                if m.label in TARGET_LABELS:
                    continue
                if m.label not in own:
                    found.append(f"{sel.metric}: no label {m.label!r} (it has {sorted(own)})")
                    continue
                values = self.label_values(sel.metric, m.label)
                if m.op in ("=", "=~") and not any(_matches(m, v) for v in values):
                    found.append(
                        f"{sel.metric}{{{m.label}{m.op}{m.value!r}}}: "
                        f"matches none of {sorted(values)}"
                    )
        return found


def _matches(m: Matcher, value: str) -> bool:
    if m.op == "=":
        return value == m.value
    return re.fullmatch(m.value, value) is not None
