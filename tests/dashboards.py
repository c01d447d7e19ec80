"""Reads the generated Grafana dashboards and pulls out their PromQL, so tests can check and run every query.

Used by test_dashboards.py (syntax, names, filters) and by the tests that run each expression against a live
Prometheus: `substitute()` turns Grafana's variables into values a plain Prometheus accepts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"

Dashboard = dict[str, Any]


class PromQL(NamedTuple):
    """One PromQL expression of a dashboard.

    `label` is set for a `label_values(metric, label)` variable query: `expr` is then the plain selector `metric`,
    and a caller must also check that its series carry `label`.
    """

    where: str
    expr: str
    label: str | None = None


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, Dashboard]:
    """Every dashboard in `directory`, by file name without `.json`."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.json"))}


def panels(dashboard: Dashboard) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels inside (collapsed) rows included."""
    def walk(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from walk(panel.get("panels") or [])
    yield from walk(dashboard.get("panels") or [])


def variables(dashboard: Dashboard) -> list[dict[str, Any]]:
    return list((dashboard.get("templating") or {}).get("list") or [])


def datasource_type(dashboard: Dashboard, ref: Any) -> str | None:
    """The plugin type a datasource reference points at; a `${var}` uid resolves through its datasource variable."""
    if isinstance(ref, str):  # old style: a datasource name or "$var"
        ref = {"uid": ref}
    if not isinstance(ref, dict):
        return None
    uid = str(ref.get("uid") or "")
    var = _VARIABLE.fullmatch(uid)
    if var:
        name = next(n for n in var.groups() if n)
        for v in variables(dashboard):
            if v.get("name") == name and v.get("type") == "datasource":
                return str(v.get("query"))
    return ref.get("type")


def promql_expressions(dashboard: Dashboard) -> list[PromQL]:
    """Every PromQL expression of panels (rows included) and of query variables; Tempo and others are skipped."""
    title = dashboard.get("uid") or dashboard.get("title") or "?"
    out: list[PromQL] = []
    for panel in panels(dashboard):
        for target in panel.get("targets") or []:
            ds = target.get("datasource") or panel.get("datasource")
            kind = datasource_type(dashboard, ds) if ds else "prometheus"  # none given: the default, Prometheus
            if kind != "prometheus" or "expr" not in target:
                continue
            where = f"{title} / panel {panel.get('id')} {panel.get('title')!r} / target {target.get('refId')}"
            out.append(PromQL(where, str(target["expr"])))
    for var in variables(dashboard):
        if var.get("type") != "query" or datasource_type(dashboard, var.get("datasource")) != "prometheus":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        parsed = variable_query(str(query))
        if parsed is not None:
            out.append(PromQL(f"{title} / variable {var.get('name')}", *parsed))
    return out


_LABEL_VALUES = re.compile(r"\s*label_values\(\s*(?P<metric>.+?)\s*,\s*(?P<label>[a-zA-Z_]\w*)\s*\)\s*", re.DOTALL)
_QUERY_RESULT = re.compile(r"\s*query_result\((?P<expr>.+)\)\s*", re.DOTALL)


def variable_query(query: str) -> tuple[str, str | None] | None:
    """A Prometheus variable query as (expr, label): label_values(m, l) -> (m, l), query_result(e) -> (e, None).

    label_names(), metrics() and label_values(label) have no series selector: None.
    """
    if m := _LABEL_VALUES.fullmatch(query):
        return m["metric"], m["label"]
    if m := _QUERY_RESULT.fullmatch(query):
        return m["expr"], None
    if re.fullmatch(r"\s*(label_names|metrics|label_values)\(.*\)\s*", query, re.DOTALL):
        return None
    raise ValueError(f"unrecognised Prometheus variable query: {query!r}")


# Grafana's variable syntaxes: $name, ${name}, ${name:format}, [[name]], [[name:format]]. A name starts with a
# letter or underscore, so a regex back-reference such as label_replace's "$1" is left alone, as Grafana does.
_VARIABLE = re.compile(r"\$\{([a-zA-Z_]\w*)(?::[^}]*)?\}|\[\[([a-zA-Z_]\w*)(?::[^\]]*)?\]\]|\$([a-zA-Z_]\w*)")

BUILTINS: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "__rate_interval_ms": "60000",
    "__interval_ms": "60000",
    "__range_s": "3600",
    "__range_ms": "3600000",
}


def substitute(expr: str, value: str = ".*", builtins: Mapping[str, str] | None = None) -> str:
    """`expr` with Grafana's built-in variables as concrete durations and every template variable as `value`.

    `.*` is what a multi-value variable set to All (allValue `.*`) expands to.
    """
    known = {**BUILTINS, **(builtins or {})}

    def replace(m: re.Match[str]) -> str:
        name = next(n for n in m.groups() if n)
        return known.get(name, value)

    return _VARIABLE.sub(replace, expr)


# --- a small PromQL lexer: enough to find metric names and label matchers --------------------------------------

class Selector(NamedTuple):
    """A vector selector: its metric name (None for `{__name__=...}` forms) and its (label, op, value) matchers."""

    metric: str | None
    matchers: tuple[tuple[str, str, str], ...]


_TOKEN = re.compile(r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<number>\d[\w.]*|\.\d[\w.]*)
  | (?P<ident>[a-zA-Z_:][\w:]*)
  | (?P<brace>\{)
  | (?P<bracket>\[[^\]]*\])
  | (?P<lparen>\()
  | (?P<space>\s+)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)
_MATCHER = re.compile(r"""\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)\s*,?""")
# words that never name a metric (an aggregation may be followed by `by (...)` rather than by its argument);
# `by (...)` and friends take label lists
AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
                          "topk", "quantile", "limitk", "limit_ratio"})
KEYWORDS = AGGREGATIONS | {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring",
                           "group_left", "group_right", "start", "end"}
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


def _matchers(body: str) -> tuple[tuple[str, str, str], ...]:
    out = []
    pos = 0
    body = body.strip()
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        if not m:
            raise ValueError(f"cannot parse label matchers {{{body}}}")
        out.append((m[1], m[2], m[3][1:-1]))
        pos = m.end()
    return tuple(out)


def selectors(expr: str, *, raw: bool = False) -> list[Selector]:
    """Every vector selector in a PromQL expression.

    Grafana variables are substituted first unless `raw`, which keeps matcher values such as "$provider" as written
    (fine as long as variables appear only inside strings and ranges).
    """
    text = expr if raw else substitute(expr)
    tokens = [m for m in _TOKEN.finditer(text) if m.lastgroup != "space"]
    out: list[Selector] = []
    i = 0
    while i < len(tokens):
        kind, value = tokens[i].lastgroup, tokens[i].group()
        following = tokens[i + 1].lastgroup if i + 1 < len(tokens) else None
        if kind == "ident" and value in LABEL_LISTS and following == "lparen":
            while i < len(tokens) and tokens[i].group() != ")":  # skip the label list
                i += 1
        elif kind == "ident" and value == "offset":  # skip the duration: 1h, or a variable such as $__range
            i += 2 if following == "other" and tokens[i + 1].group() == "$" else 1
        elif kind == "ident" and following != "lparen" and value not in KEYWORDS:
            if following == "brace":
                i, matchers = _braces(text, tokens, i + 1)
                out.append(Selector(value, matchers))
            else:
                out.append(Selector(value, ()))
        elif kind == "brace":
            i, matchers = _braces(text, tokens, i)
            out.append(Selector(None, matchers))
        i += 1
    return out


def _braces(text: str, tokens: list[re.Match[str]], i: int) -> tuple[int, tuple[tuple[str, str, str], ...]]:
    """The matchers of the `{...}` opening at token i, and the index of its closing brace."""
    j = i + 1
    while tokens[j].group() != "}":  # strings are single tokens, so a brace inside a value does not count
        j += 1
    return j, _matchers(text[tokens[i].end():tokens[j].start()])


def metric_names(expr: str) -> set[str]:
    return {s.metric for s in selectors(expr) if s.metric}
