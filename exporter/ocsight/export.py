"""`ocsight export`: one row per record at a chosen level, as CSV, JSON or Markdown.

Rows are flat dicts with the same field names in every format (tokens and costs spelled out, so a
spreadsheet needs no nesting). A file is written to a temporary sibling and renamed into place: an
error never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ocsight.errors import OcsightError
from ocsight.filters import describe
from ocsight.model import Message, Records
from ocsight.normalise import TOKEN_KEYS

Row = dict[str, Any]

LEVELS = ("message", "session", "day", "model")
USAGE_FIELDS = [*(f"tokens_{k}" for k in (*TOKEN_KEYS, "total")), "cost_usd", "stored_usd", "estimated_usd",
                "unpriced_messages"]
FIELDS = {
    "message": ["id", "session_id", "time_created", "role", "provider", "model", "agent", "project", "error",
                "era", *USAGE_FIELDS[:7], "stored_usd", "estimated_usd", "unpriced"],
    "session": ["id", "parent_id", "title", "project", "time_created", "version", "models", "agents", "messages",
                "errors", "tool_calls", *USAGE_FIELDS],
    "day": ["day", "sessions", "messages", *USAGE_FIELDS],
    "model": ["provider", "model", "sessions", "messages", *USAGE_FIELDS],
}


def iso(ms: int | None, tz: dt.tzinfo | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz).astimezone(tz).isoformat(timespec="milliseconds")


def usage_fields(u: dict[str, Any]) -> Row:
    out = {f"tokens_{k}": v for k, v in u["tokens"].items()}
    c = u["cost"]
    out.update(cost_usd=c["usd"], stored_usd=c["stored_usd"], estimated_usd=c["estimated_usd"],
               unpriced_messages=c["unpriced_messages"])
    return out


def session_rows(roots: list[dict[str, Any]], tz: dt.tzinfo | None) -> list[Row]:
    out: list[Row] = []

    def walk(node: dict[str, Any]) -> None:
        out.append({
            "id": node["id"], "parent_id": node["parent_id"], "title": node["title"], "project": node["project"],
            "time_created": iso(node["time_created"], tz), "version": node["version"],
            "models": " ".join(node["models"]), "agents": " ".join(node["agents"]), "messages": node["messages"],
            "errors": node["errors"], "tool_calls": node["tool_calls"], **usage_fields(node),
        })
        for child in node["children"]:
            walk(child)

    for root in roots:
        walk(root)
    return out


def message_rows(recs: Records, matches: Callable[[Message, str], bool], tz: dt.tzinfo | None,
                 mode: str) -> list[Row]:
    """The records' messages that `matches(message, project)` keeps; cost per the cost mode."""
    sessions = {s.id: s for s in recs.sessions}
    projects = {p.id: p for p in recs.projects}
    out = []
    for m in recs.messages:
        s = sessions.get(m.session_id)
        p = projects.get(s.project_id) if s and s.project_id else None
        project = (p.worktree if p and p.worktree not in (None, "/") else None) or (s.directory if s else None)
        if not matches(m, project or "(unknown)"):
            continue
        stored, estimated = m.cost_parts(mode)
        t = m.tokens
        unpriced = m.is_unpriced(mode)
        out.append({
            "id": m.id, "session_id": m.session_id, "time_created": iso(m.time_created, tz), "role": m.role,
            "provider": m.provider, "model": m.model, "agent": m.agent, "project": project, "error": m.error,
            "era": m.era, "tokens_input": t.input, "tokens_output": t.output, "tokens_reasoning": t.reasoning,
            "tokens_cache_read": t.cache_read, "tokens_cache_write": t.cache_write, "tokens_total": t.total,
            "cost_usd": None if unpriced else stored + estimated if m.role == "assistant" else 0.0,
            "stored_usd": stored if m.role == "assistant" else 0.0,
            "estimated_usd": None if unpriced else estimated if m.role == "assistant" else 0.0,
            "unpriced": int(unpriced),  # 0 or 1: its column sums to the other levels' unpriced_messages
        })
    return out


# -- formats -----------------------------------------------------------------------------------------

def to_csv(level: str, rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS[level], lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def to_json(level: str, rows: list[Row], meta: dict[str, Any]) -> str:
    return json.dumps({"level": level, **meta, "rows": rows}, indent=2, ensure_ascii=False) + "\n"


def _md_cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        v = f"{v:.6f}".rstrip("0").rstrip(".") if v else "0"
    elif isinstance(v, int):
        v = f"{v:,}"
    return str(v).replace("|", "\\|").replace("\n", " ")


# the terminal's marks (reports/format.py; export may not import reports: sibling layers)
UNKNOWN = "—"  # a cost no price source knows
PARTIAL = "≥"  # a cost that leaves out unpriced messages: the true cost is at least this
COST_CELLS = ("cost_usd", "estimated_usd")  # what unpriced messages leave unknown (stored cost is known)


def _md_row(row: Row, fields: list[str], mode: str | None) -> str:
    """A table row, its cost cells as the terminal shows them: `—` when its unpriced messages leave the
    cost unknown, `≥` and the priced part when they leave it partial (a person reads no cost as $0)."""
    unpriced = _unpriced(row)
    cells = []
    for k in fields:
        v = row.get(k)
        if unpriced and k in COST_CELLS and not (k == "estimated_usd" and mode == "stored"):
            cells.append(f"{PARTIAL}{_md_cell(v)}" if v else UNKNOWN)
        else:
            cells.append(_md_cell(v))
    return "| " + " | ".join(cells) + " |"


def to_markdown(level: str, rows: list[Row], meta: dict[str, Any]) -> str:
    fields = FIELDS[level]
    lines = [f"# OpenCode usage by {level}", ""]
    lines += [f"- Rows: {len(rows):,}", f"- Covers: {describe(meta.get('filters', {}))}",
              f"- Cost mode: {meta.get('cost_mode')}",
              f"- Generated by ocsight {meta.get('ocsight')}", ""]
    if rows and "cost_usd" in fields:
        lines += [f"Total cost: {_total_cost(rows)}; tokens: {sum(r['tokens_total'] for r in rows):,}", ""]
    lines.append("| " + " | ".join(fields) + " |")
    lines.append("|" + "|".join("---:" if _numeric(rows, k) else "---" for k in fields) + "|")
    lines += [_md_row(r, fields, meta.get("cost_mode")) for r in rows]
    return "\n".join(lines) + "\n"


def _unpriced(row: Row) -> int:
    """A row's unpriced messages: a message row's `unpriced` (0 or 1), another level's `unpriced_messages`."""
    return int(row["unpriced"] if "unpriced" in row else row.get("unpriced_messages", 0))


def _total_cost(rows: list[Row]) -> str:
    """The rows' cost; what unpriced messages would add is unknown, so then it is a lower bound."""
    priced = sum(r["cost_usd"] or 0.0 for r in rows)
    unpriced = sum(_unpriced(r) for r in rows)
    if not unpriced:
        return f"${priced:,.2f}"
    what = f"{unpriced:,} unpriced message{'' if unpriced == 1 else 's'}: no price source knows their model"
    return f"unknown ({what})" if not priced else f"at least ${priced:,.2f} ({what})"


def _numeric(rows: list[Row], key: str) -> bool:
    if key in COST_CELLS:
        return True  # numbers, `—` or `≥` and a number: right-aligned as the terminal's costs
    values = [r.get(key) for r in rows if r.get(key) is not None]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


FORMAT_OF_SUFFIX = {".csv": "csv", ".json": "json", ".md": "markdown", ".markdown": "markdown"}


def format_of(target: str) -> str:
    """The format a file's name asks for (`report.md`: markdown); csv for standard output or any other name."""
    return FORMAT_OF_SUFFIX.get(Path(target).suffix.lower(), "csv") if target != "-" else "csv"


def render(fmt: str, level: str, rows: list[Row], meta: dict[str, Any]) -> str:
    if fmt == "csv":
        return to_csv(level, rows)
    if fmt == "json":
        return to_json(level, rows, meta)
    return to_markdown(level, rows, meta)


def write_atomically(target: str, text: str) -> None:
    """Writes `text` to `target` ("-": stdout) through a temporary file renamed into place."""
    if target == "-":
        import sys

        sys.stdout.write(text)
        return
    path = Path(target).expanduser()
    if path.is_dir():
        raise OcsightError(f"--output {target} is a directory", 2)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OcsightError(f"--output: directory {parent} does not exist", 2)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise OcsightError(f"cannot write to {parent}: {e.strerror}") from None
    try:
        # a file the user asks for is theirs as any other they write (mkstemp's is private): an
        # existing file keeps its mode, a new one gets the user's umask
        os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OcsightError(f"cannot write {path}: {e.strerror}") from None
        raise


def _umask() -> int:
    """The process's umask (read by setting it: Python has no other way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
