"""The `ocsight` command line: parses arguments, wires the reader, the index and a renderer together.

Only click is imported at start-up; everything else is imported by the command that needs it, so
`ocsight --help` stays instant.

Exit codes: 0 success; 1 data problem (missing, unreadable, corrupt or locked data, unknown
session); 2 bad usage (unknown flag, bad value, bad setting); 70 internal error; 130 interrupted.
A closed standard output (`| head`) ends every command quietly with 0.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ocsight import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from ocsight.index import Index
    from ocsight.settings import Settings

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# Options several commands share (each use builds its own click.Option).
_DATA_DIR = click.option("--data-dir", "data_dirs", multiple=True, metavar="DIR",
                         help="OpenCode data directory (repeatable). Default: $OPENCODE_DATA_DIR, else "
                              "$XDG_DATA_HOME/opencode.")
_DEMO = click.option("--demo", is_flag=True, help="Read the bundled demo store instead of your data.")
_COST_MODE = click.option("--cost-mode", type=click.Choice(["auto", "stored", "calculate"]),
                          help="auto (default): OpenCode's stored cost when > 0, else estimated; stored: only "
                               "stored costs; calculate: estimate every message from prices.")
_PRICES = click.option("--prices", metavar="FILE", help="Price overrides (TOML or JSON, models.dev cost keys).")
_TIMEZONE = click.option("--timezone", "-z", metavar="TZ", help="IANA time zone for day boundaries (default: local).")
_FORK_COPIES = click.option("--include-fork-copies", is_flag=True, default=None,
                            help="Count the messages a fork copied from its source session again, as OpenCode "
                                 "does (default: once, where they were made).")


_NO_CACHE = click.option("--no-cache", is_flag=True, default=None,
                         help="Read everything afresh; do not use or write the index.")
_NO_COLOR = click.option("--no-color", "no_color", is_flag=True, default=None,
                         help="No colours (also: NO_COLOR set, or color = false in the config).")


_DAYS = click.option("--days", type=click.IntRange(min=1), help="Only the last N days (today included).")
_SINCE = click.option("--since", metavar="DATE", help="From this day (YYYY-MM-DD), inclusive.")
_UNTIL = click.option("--until", metavar="DATE", help="Up to this day (YYYY-MM-DD), inclusive.")
_FILTERS = [
    click.option("--provider", "providers", multiple=True, help="Only these providers (repeatable, or a,b)."),
    click.option("--model", "models", multiple=True, help="Only these models: ID or provider/ID."),
    click.option("--project", "projects", multiple=True, help="Only projects whose path contains this."),
    click.option("--agent", "agents", multiple=True, help="Only these agents (build, plan, general, ...)."),
]
# every reading command's options, in the order its help lists them
_SOURCE = [_DATA_DIR, _DEMO, _NO_CACHE, _COST_MODE, _PRICES, _FORK_COPIES, _DAYS, _SINCE, _UNTIL, _TIMEZONE,
           *_FILTERS, _NO_COLOR]


def _with(options: list[Callable], fn: Callable) -> Callable:
    for option in reversed(options):
        fn = option(fn)
    return fn


def _source_options(fn: Callable) -> Callable:
    return _with(_SOURCE, fn)


def _reading_options(fn: Callable) -> Callable:
    """What to read and how to cost it, without a window or filters (`live` follows one session)."""
    return _with([o for o in _SOURCE if o not in (_DAYS, _SINCE, _UNTIL, *_FILTERS)], fn)


def _json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (fields documented in the README).")(fn)


def _setting_source(st: Settings, name: str, flag: str) -> str:
    """Where a setting's value came from, as an error message names it: the flag, the variable or the file."""
    src = st.source(name)
    if src == "flag":
        return flag
    if src.startswith("env "):
        return src.removeprefix("env ")
    return f"{name} in {src}"


class Run:
    """What a command reads, with what filters, after settings and flags are merged."""

    def __init__(self, kw: dict[str, Any]) -> None:
        from ocsight import filters, reading, settings

        self.settings = settings.load().with_flags(
            data_dirs=kw.get("data_dirs") or None, cost_mode=kw.get("cost_mode"), prices=kw.get("prices"),
            timezone=kw.get("timezone"), cache=False if kw.get("no_cache") else None,
            color=False if kw.get("no_color") else None,
            include_fork_copies=True if kw.get("include_fork_copies") else None,
        )
        if self.settings.timezone and self.settings.timezone.lower() != "local":
            where = _setting_source(self.settings, "timezone", "--timezone")
            self.settings = dataclasses.replace(self.settings,
                                                timezone=filters.zone_name(self.settings.timezone, where))
        st = self.settings
        self.demo = bool(kw.get("demo"))
        self.filters = filters.make_filters(
            days=kw.get("days"), since=kw.get("since"), until=kw.get("until"), timezone=st.timezone,
            providers=kw.get("providers", ()), models=kw.get("models", ()), projects=kw.get("projects", ()),
            agents=kw.get("agents", ()),
        )
        self.tz = filters.resolve_timezone(st.timezone)
        self.cost_mode: str = st.cost_mode
        self.options = reading.ReadOptions(
            data_dirs=tuple(st.data_dirs), data_dirs_from=_setting_source(st, "data_dirs", "--data-dir"),
            demo=self.demo, use_cache=st.cache, cost_mode=st.cost_mode,
            prices=st.prices, fork_copies=st.include_fork_copies,
        )
        self._checked = False  # the filters' names were found in the store (checked once: `live` reopens)

    def console(self) -> Console:
        plain = not self.settings.color or bool(os.environ.get("NO_COLOR"))
        return _console(color_system=None) if plain else _console()

    @property
    def window(self) -> str:
        """The window and filters in a few words ("last 20 days · provider mockai")."""
        from ocsight import filters

        return filters.describe(self.filters.description)

    @property
    def no_usage(self) -> str:
        """What a report prints instead of empty tables."""
        from ocsight import filters

        return filters.no_usage(self.filters.description)

    def index(self) -> Index:
        """The refreshed index, once the names the filters ask for are known to it (else a usage
        error naming the flag); while a refresh reads, a transient progress line on a terminal's stderr."""
        idx = self._open_index()
        if self._checked:
            return idx
        from ocsight import filters
        from ocsight.errors import EXIT_USAGE, OcsightError

        try:
            unknown = filters.unknown_names(self.filters, idx.reader.known_values)
        except BaseException:
            idx.close()
            raise
        if unknown:
            idx.close()
            raise OcsightError(f"--{unknown[0]}: {unknown[1]}", EXIT_USAGE)
        self._checked = True
        return idx

    def _open_index(self) -> Index:
        from ocsight import reading

        if not sys.stderr.isatty():
            return reading.open_index(self.options)
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        err = Console(stderr=True, color_system=None if not self.settings.color else "auto")
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                      transient=True) as bar:
            task = bar.add_task("reading OpenCode's data", total=None)
            return reading.open_index(self.options, progress=lambda msg: bar.update(task, description=msg))


def _console(**kw: Any) -> Console:
    """A console for a report on standard output. A reader that stops reading (`| head`) ends it as it
    ends every command, in main(): rich's own way exits 1, the code of a data problem."""
    from rich.console import Console

    class Report(Console):
        def on_broken_pipe(self) -> None:
            raise OutputClosed

    return Report(highlight=False, **kw)


def _emit_json(doc: object) -> None:
    import json

    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """ocsight's version, and the Python and SQLite it runs on (what a bug report needs)."""
    if not value or ctx.resilient_parsing:
        return
    import platform
    import sqlite3

    click.echo(f"ocsight {__version__} (Python {platform.python_version()}, SQLite {sqlite3.sqlite_version})")
    ctx.exit()


class OutputClosed(Exception):
    """The reader of standard output stopped reading (`ocsight stats | head -1`)."""


class Commands(click.Group):
    """The commands, whose closed standard output main() handles: click's own handling exits 1, the
    code of a data problem."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise OutputClosed from None


@click.group(cls=Commands, context_settings=CONTEXT)
@click.option("-V", "--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and exit.")
def cli() -> None:
    """Exact token and cost analytics for OpenCode.

    \b
    Examples:
      ocsight analyze                     overview of all your OpenCode usage
      ocsight analyze --demo              the same on the bundled demo store
      ocsight daily --days 7 --breakdown  the last week, day by day, per model
      ocsight session                     recent sessions with their subagents
      ocsight export --format csv --level message --output usage.csv
      ocsight stats --json --provider anthropic --since 2026-11-01 -z Europe/Paris

    \b
    Exit codes: 0 success; 1 data problem (missing, unreadable or locked data, unknown
    session); 2 bad usage (unknown flag, bad value, bad setting); 70 internal error;
    130 interrupted; 0 when the reader of the output stops reading (| head).
    """


@cli.command(context_settings=CONTEXT)
@_source_options
def analyze(**kw: Any) -> None:
    """Overview: sessions, messages, tokens, cost, models, agents, projects and tools.

    Without --data-dir and with no OpenCode data on this machine, shows the bundled demo store.

    \b
    Examples:
      ocsight analyze
      ocsight analyze --days 30 --project my-app
      ocsight analyze --demo --no-color
    """
    from ocsight import paths
    from ocsight.sources import locate

    run = Run(kw)
    if not run.options.data_dirs and not run.demo and not os.environ.get("OPENCODE_DATA_DIR"):
        if not locate.has_default_data():
            click.echo(
                f"No OpenCode data at {paths.default_data_dir()}; showing the bundled demo store "
                "(use --data-dir to point at your data).",
                err=True,
            )
            run = Run({**kw, "demo": True})
    from ocsight.reports import documents, summary

    with run.index() as idx:
        doc = documents.stats_json(idx, run.filters, run.cost_mode)
        trees = documents.session_trees(idx.reader.sessions(run.filters, run.cost_mode))
    top = sorted(trees, key=lambda n: (n["rollup"]["cost"]["usd"], n["rollup"]["tokens"]["total"]), reverse=True)
    summary.render(doc, run.console(), top_sessions=top[:5])


@cli.command(context_settings=CONTEXT)
@_source_options
@_json_option
def stats(as_json: bool, **kw: Any) -> None:
    """Totals and detailed tables by provider, model, agent, project, tool and error.

    \b
    Examples:
      ocsight stats
      ocsight stats --json | jq '.totals.cost'
      ocsight stats --json --cost-mode calculate --model anthropic/claude-sonnet-4-5
    """
    run = Run(kw)
    doc = _stats_document(run)
    if as_json:
        _emit_json(doc)
        return
    from ocsight.reports import summary

    summary.render(doc, run.console(), detailed=True)


def _stats_document(run: Run) -> dict[str, Any]:
    from ocsight.reports import documents

    with run.index() as idx:
        return documents.stats_json(idx, run.filters, run.cost_mode)


def _period_command(grain: str, name: str, example: str) -> None:
    @cli.command(name, context_settings=CONTEXT, help=f"""Usage per {grain}: sessions, model calls, tokens by type and cost.

    {"Days" if grain == "day" else "Weeks (Monday to Sunday)" if grain == "week" else "Months"} follow --timezone.

    \b
    Examples:
      {example}
      ocsight {name} --breakdown           per model inside each {grain}
      ocsight {name} --json -z America/New_York
    """)
    @_source_options
    @_json_option
    @click.option("--breakdown", is_flag=True, help="Per model inside each period.")
    def command(as_json: bool, breakdown: bool, **kw: Any) -> None:
        from ocsight.reports import documents

        run = Run(kw)
        with run.index() as idx:
            rows = documents.periods_json(idx.reader.periods(run.filters, run.cost_mode, grain, run.tz, breakdown))
            unpriced = (documents.unpriced_json(idx.reader, run.filters, run.cost_mode)
                        if not as_json and any(p["cost"]["unpriced_messages"] for p in rows) else [])
            notes = list(dict.fromkeys(idx.notes))
        if as_json:
            _emit_json({"period": grain, "filters": run.filters.description, "cost_mode": run.cost_mode,
                        "periods": rows})
            return
        from ocsight.reports import tables
        from ocsight.reports.format import unpriced_note

        console = run.console()
        if not rows:
            console.print(run.no_usage, markup=False)
        else:
            console.print(run.window, style="dim", markup=False)
            note = unpriced_note(unpriced, run.cost_mode) if unpriced else None
            console.print(tables.periods_table(rows, grain, breakdown, console.width, note))
        _print_notes(console, notes)


def _print_notes(console: Console, notes: list[str]) -> None:
    """The sources' notes (an OpenCode config that could not be read, ...), one line each."""
    from rich.markup import escape

    for note in notes:
        console.print(f"[yellow]Note:[/yellow] {escape(note)}", soft_wrap=True)


_period_command("day", "daily", "ocsight daily --days 14")
_period_command("week", "weekly", "ocsight weekly --since 2026-09-01")
_period_command("month", "monthly", "ocsight monthly --provider anthropic")


@cli.command(context_settings=CONTEXT)
@_source_options
@_json_option
@click.argument("session_id", required=False)
@click.option("--limit", type=click.IntRange(min=1), help="Sessions shown (default 20, or session_limit).")
def session(session_id: str | None, as_json: bool, limit: int | None, **kw: Any) -> None:
    """Sessions, newest first, each with its subagent sessions and costs rolled up.

    With SESSION_ID: that session's tree (a subagent's ID shows its own subtree).

    \b
    Examples:
      ocsight session
      ocsight session --days 1 --limit 5
      ocsight session ses_4f1c2a... --json
    """
    from ocsight.errors import OcsightError
    from ocsight.filters import Filters
    from ocsight.reports import documents, tables
    from ocsight.reports.format import counted

    run = Run(kw)
    with run.index() as idx:
        roots = documents.session_trees(idx.reader.sessions(run.filters, run.cost_mode))
        if session_id:
            found = documents.find_session(roots, session_id)
            if found is None:
                filtered = run.filters != Filters()  # a window or a filter: it may hide the session
                copies = 0 if filtered else idx.reader.fork_copies_found(session_id)
                raise OcsightError(f"no session {session_id!r} with usage in {run.window}" if filtered
                                   else f"no session {session_id!r} in OpenCode's data"
                                   if not idx.reader.knows_session(session_id)
                                   else f"session {session_id!r} has no model calls of its own: its "
                                        f"{counted(copies, 'message is a copy', 'messages are copies')} a fork made "
                                        "of another session's, counted there (--include-fork-copies counts them "
                                        "here too)" if copies
                                   else f"session {session_id!r} has no model calls")
            roots = [found]
        shown = roots[: limit or run.settings.session_limit]
        # the models the shown sessions could not price, counted in those sessions only
        unpriced = (documents.unpriced_json(idx.reader, dataclasses.replace(
                        run.filters, sessions=tables.session_ids(shown)), run.cost_mode)
                    if not as_json and any(r["rollup"]["cost"]["unpriced_messages"] for r in shown) else [])
        notes = list(dict.fromkeys(idx.notes))
        copies_counted = idx.reader.fork_copies
    if as_json:
        _emit_json({"filters": run.filters.description, "cost_mode": run.cost_mode, "sessions": shown,
                    "total_sessions": len(roots), "fork_copies_counted": copies_counted})
        return
    from ocsight.reports.format import unpriced_note

    console = run.console()
    if not roots:
        console.print(run.no_usage, markup=False)
    else:
        console.print(run.window, style="dim", markup=False)
        console.print(tables.sessions_tree(roots, limit or run.settings.session_limit, console.width,
                                           copies_counted))
        if unpriced:
            console.print(f"[dim]{unpriced_note(unpriced, run.cost_mode)}[/dim]")
    _print_notes(console, notes)


@cli.command(context_settings=CONTEXT)
@_source_options
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "markdown"]),
              help="csv: a header and one row per record; json: the same fields; markdown: a report with a table. "
                   "Default: the output file's extension (.csv, .json, .md or .markdown), else csv.")
@click.option("--level", type=click.Choice(["message", "session", "day", "model"]), default="session",
              show_default=True, help="One row per message, session, day (in --timezone) or model.")
@click.option("--output", "-o", metavar="FILE", default="-", show_default=True,
              help="File to write (written whole or not at all); - for standard output.")
def export(fmt: str | None, level: str, output: str, **kw: Any) -> None:
    """Export usage as CSV, JSON or Markdown, one row per message, session, day or model.

    \b
    Examples:
      ocsight export --format csv --level message --output usage.csv
      ocsight export --format markdown --level day --days 30 -o report.md
      ocsight export --format json --level model --since 2026-11-01
    """
    from ocsight import __version__ as version
    from ocsight import export as ex
    from ocsight import reading
    from ocsight.filters import message_filter
    from ocsight.reports import documents

    run = Run(kw)
    with run.index() as idx:
        if level == "message":
            recs = reading.read_records(idx)
            rows = ex.message_rows(recs, message_filter(run.filters), run.tz, run.cost_mode)
        elif level == "session":
            rows = ex.session_rows(documents.session_trees(idx.reader.sessions(run.filters, run.cost_mode)), run.tz)
        elif level == "day":
            rows = [{"day": p["period"], "sessions": p["sessions"], "messages": p["messages"], **ex.usage_fields(p)}
                    for p in documents.periods_json(idx.reader.periods(run.filters, run.cost_mode, "day", run.tz))]
        else:
            doc = documents.breakdown_json(idx.reader.breakdown(run.filters, run.cost_mode))
            rows = [{"provider": m["provider"], "model": m["model"], "sessions": m["sessions"],
                     "messages": m["messages"], **ex.usage_fields(m)} for m in doc["by_model"]]
    meta = {"ocsight": version, "filters": run.filters.description, "cost_mode": run.cost_mode}
    ex.write_atomically(output, ex.render(fmt or ex.format_of(output), level, rows, meta))
    if output != "-":
        from ocsight.reports.format import counted

        click.echo(f"wrote {counted(len(rows), 'row')} (one per {level}) to {output} ({run.window})", err=True)


@cli.command(context_settings=CONTEXT)
@_reading_options
@click.option("--interval", type=click.FloatRange(min=0.1), help="Seconds between refreshes (default 2).")
@click.option("--once", is_flag=True, help="Draw one frame and exit (for scripts and tests).")
@click.option("--session", "session_id", metavar="ID", help="Follow this session (default: the newest).")
@click.option("--pick", is_flag=True, help="Start by choosing the session from a list of recent ones.")
def live(interval: float | None, once: bool, session_id: str | None, pick: bool, **kw: Any) -> None:
    """A live view of today's spend, the followed session, its context fill and its latest calls.

    Follows the newest session, or the one --session names. On a terminal, s opens a picker of
    recent sessions (arrows or j/k and Enter, or a number; Esc goes back), n follows the newest
    again, q quits. Reads only what changed since the last refresh (the index is incremental).

    \b
    Examples:
      ocsight live
      ocsight live --pick
      ocsight live --session ses_4f1c2a... --interval 5 -z Europe/Berlin
    """
    import datetime as dt

    from ocsight import filters, reading
    from ocsight.errors import EXIT_USAGE, OcsightError
    from ocsight.index.reader import RecentSession
    from ocsight.reports import documents, keys
    from ocsight.reports import live as live_view
    from ocsight.reports.picker import PICKER_SIZE

    if pick and session_id:
        raise OcsightError("choose --session or --pick, not both", EXIT_USAGE)
    if pick and not keys.available(sys.stdin, sys.stdout):
        raise OcsightError("--pick needs a terminal to read keys from (and to draw on)", EXIT_USAGE)
    run = Run(kw)
    if session_id:
        with run.index() as idx:
            if not idx.reader.knows_session(session_id):
                raise OcsightError(f"no session {session_id!r} in OpenCode's data "
                                   "(`ocsight live --pick` lists the recent ones)")
    limits = reading.catalogue_for(run.options)
    drawn: list[bool] = []

    def index() -> Index:
        """The first read may take a while and says so on stderr; later ones, under the view, are quiet
        (a progress line would flicker through the view at every refresh)."""
        if drawn:
            return reading.open_index(run.options)
        drawn.append(True)
        return run.index()

    def frame(sid: str | None, chosen: bool) -> live_view.Frame:
        now = live_view.now_ms()
        today = dt.datetime.fromtimestamp(now / 1000, run.tz).date().isoformat()
        window = filters.make_filters(since=today, timezone=run.settings.timezone)
        with index() as idx:
            totals = documents.breakdown_json(idx.reader.breakdown(window, run.cost_mode))["totals"]
            sid = sid or idx.reader.latest_session()
            if sid is None:
                return live_view.Frame(now, today, totals, None, None, [], [], run.cost_mode, run.tz)
            recs = reading.read_records(idx, [sid])
        session = next((s for s in recs.sessions if s.id == sid), None)
        calls = [m for m in recs.messages if m.role == "assistant"]
        return live_view.Frame(now, today, totals, sid, session, calls, recs.tool_calls, run.cost_mode, run.tz,
                               live_view.context_fill(calls, limits.context_limit), chosen)

    def recent() -> list[RecentSession]:
        with index() as idx:
            return idx.reader.recent_sessions(run.cost_mode, PICKER_SIZE)

    live_view.run(frame, run.console(), interval or run.settings.live_interval, once, session_id, recent, pick)


@cli.command(context_settings=CONTEXT)
@_DATA_DIR
@click.option("--demo", is_flag=True, help="Follow the bundled demo store (useful with --backfill).")
@click.option("--backfill", is_flag=True, help="Send all history first (else only what is new since the first start).")
@click.option("--since", metavar="DATE", help="With --backfill: history from this day (YYYY-MM-DD) on.")
@click.option("--timezone", "-z", metavar="TZ", help="IANA time zone of --since (default: local).")
@click.option("--protocol", type=click.Choice(["grpc", "http/protobuf"]),
              help="OTLP protocol (default: $OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf).")
@click.option("--include-content", is_flag=True, help="Also send tool error texts (never sent by default).")
@_COST_MODE
@_PRICES
@_FORK_COPIES
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Longest wait between reads while nothing changes (seconds).")
@click.option("--once", is_flag=True, help="One cycle (backfill and what is finished), then exit.")
@click.option("--prometheus-port", type=click.IntRange(1, 65535), help="Also serve /metrics for Prometheus.")
@click.option("--prometheus-host", default="127.0.0.1", show_default=True, help="Address of that endpoint.")
@click.option("-v", "--verbose", is_flag=True,
              help="Also say when each cycle runs, and the OTLP exporters' own errors.")
def watch(data_dirs: tuple[str, ...], demo: bool, backfill: bool, since: str | None, timezone: str | None,
          protocol: str | None, include_content: bool, cost_mode: str | None, prices: str | None,
          include_fork_copies: bool | None, interval: float, once: bool, prometheus_port: int | None,
          prometheus_host: str, verbose: bool) -> None:
    """Run next to OpenCode: ship its model calls, tool calls and turns as OTLP spans, and token and
    cost metrics, as they finish. Endpoint, headers and TLS come from the standard OTEL_EXPORTER_OTLP_*
    variables; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured. User, host and instance
    ID: OTEL_RESOURCE_ATTRIBUTES, else the settings user_name, host_name, instance_id, else the OS
    user, the host name and a hash of them and the data directories (the same after a restart).
    One watch runs per set of data directories: a second one exits with an error.

    A checkpoint under $XDG_STATE_HOME/ocsight marks what the receiver acknowledged: after a
    restart (even after SIGKILL) only the rest is sent; while the receiver is down, ocsight retries
    with back-off. SIGTERM stops cleanly.

    \b
    Examples:
      OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 ocsight watch --backfill
      ocsight watch --protocol grpc --since 2026-11-01 --backfill
      ocsight watch --prometheus-port 9464          also serve /metrics on 127.0.0.1:9464
    """
    import logging

    from ocsight import filters
    from ocsight.reports.format import counted
    from ocsight.telemetry import otlp
    from ocsight.telemetry.watch import ExportFailed, Sidecar, WatchOptions

    logging.basicConfig(level=logging.INFO, format="ocsight watch: %(message)s")
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # its "N changes detected": ours say what changed
    # the exporters' own lines (each retry, each failed request and metric flush) while the collector
    # is down, long and many: ours say it in one, naming the endpoint; -v shows theirs too
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.ERROR if verbose else logging.CRITICAL)
    if verbose:
        logging.getLogger("ocsight.watch").setLevel(logging.DEBUG)
    run = Run({"data_dirs": data_dirs, "demo": demo, "cost_mode": cost_mode, "prices": prices, "timezone": timezone,
               "include_fork_copies": include_fork_copies})
    since_ms = filters.make_filters(since=since, timezone=run.settings.timezone).since_ms if since else None
    st = run.settings
    opts = WatchOptions(read=run.options, protocol=otlp.protocol(protocol), backfill=backfill or since is not None,
                        since_ms=since_ms, include_content=include_content, interval=interval,
                        budgets=st.budgets(), prometheus_port=prometheus_port, prometheus_host=prometheus_host,
                        timezone=st.timezone, abandon_after_s=st.abandon_after_seconds,
                        identity=otlp.GivenIdentity(st.user_name, st.host_name, st.instance_id))
    sidecar = Sidecar(opts)
    if once:
        try:
            n = sidecar.cycle()
        except ExportFailed as e:
            from ocsight.errors import OcsightError

            sidecar.close()
            raise OcsightError(f"{e} (is the collector up?)") from None
        before = sidecar.checkpoint.count() - n
        sidecar.close()
        click.echo(f"sent {counted(n, 'span')} to {sidecar.endpoint}"
                   + (f" ({before:,} sent before)" if before else ""), err=True)
        return
    sidecar.follow()


@cli.command(context_settings=CONTEXT)
@_DATA_DIR
@_DEMO
@_COST_MODE
@_PRICES
@_TIMEZONE
@_FORK_COPIES
@click.option("--http", is_flag=True, help="Serve streamable HTTP instead of stdio.")
@click.option("--host", default="127.0.0.1", show_default=True, help="With --http: the address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True,
              help="With --http: the port to listen on.")
def mcp(data_dirs: tuple[str, ...], demo: bool, cost_mode: str | None, prices: str | None, timezone: str | None,
        include_fork_copies: bool | None, http: bool, host: str, port: int) -> None:
    """An MCP server that answers usage questions (tokens, cost, sessions) for OpenCode or any MCP client.

    Tools: usage_summary, top_sessions, provider_trends, session_details, refresh_index. Resources:
    ocsight://metrics/summary, ocsight://providers, ocsight://providers/{provider},
    ocsight://sessions/{id}. Read-only: it never writes into OpenCode's data; each answer first
    reads what OpenCode wrote since the last one.

    \b
    Examples:
      ocsight mcp                                   stdio, as OpenCode starts it
      ocsight mcp --http --port 8765                http://127.0.0.1:8765/mcp
      npx @modelcontextprotocol/inspector ocsight mcp
    """
    from ocsight.errors import NoData
    from ocsight.mcp.service import Config
    from ocsight.sources import locate

    run = Run({"data_dirs": data_dirs, "demo": demo, "cost_mode": cost_mode, "prices": prices, "timezone": timezone,
               "include_fork_copies": include_fork_copies})
    try:
        locate.locate(run.options.data_dirs, demo=run.demo, given_by=run.options.data_dirs_from)
    except NoData:
        pass  # OpenCode may not have written anything yet: the answers say so until it has
    from ocsight.mcp import server

    server.run(Config(read=run.options, cost_mode=run.cost_mode, timezone=run.settings.timezone), http=http,
               host=host, port=port)


@cli.command("config", context_settings=CONTEXT)
@_json_option
def config_command(as_json: bool) -> None:
    """The effective settings and where each value comes from.

    Settings come from, lowest first: defaults, the file $XDG_CONFIG_HOME/ocsight/config.toml
    (or $OCSIGHT_CONFIG), OCSIGHT_<NAME> environment variables, and command-line flags.

    \b
    Examples:
      ocsight config
      OCSIGHT_COST_MODE=calculate ocsight config --json
    """
    from ocsight import settings

    st = settings.load()
    effective = _effective_settings(st)
    doc: dict[str, Any] = {"file": str(settings.config_file()), "file_exists": settings.config_file().is_file(),
           "settings": {name: {"value": effective[name][0], "source": effective[name][1], "help": help,
                               "env": settings.env_name(name)}
                        for name, help in settings.HELP.items()}}
    if as_json:
        _emit_json(doc)
        return
    from rich.table import Table

    # values and sources wrap rather than being cut: a path is read whole at any width; the
    # variables are OCSIGHT_<SETTING> (said once below, rather than a column that cannot fit at 80)
    # the file on a line of its own (in the title it wrapped to the table's width), the path last: a
    # long one folds at the terminal's width, leaving no word alone after it
    console = _console()
    console.print(f"Config file{'' if doc['file_exists'] else ' (absent)'}: {doc['file']}", markup=False)
    table = Table(title="Settings", title_justify="left", caption_justify="left",
                  caption="Each setting's variable: OCSIGHT_<SETTING> in capitals, e.g. OCSIGHT_COST_MODE.")
    table.add_column("Setting", no_wrap=True)
    table.add_column("Value", overflow="fold")
    table.add_column("Source", overflow="fold")
    for name, s in doc["settings"].items():
        table.add_row(name, _plain(s["value"]), s["source"])
    console.print(table, markup=False)


def _effective_settings(st: Settings) -> dict[str, tuple[Any, str]]:
    """Each setting's value as commands use it, and where it came from: an unset time zone is the
    machine's, unset data directories are those OpenCode's variable or its default location names."""
    from ocsight import filters
    from ocsight.sources import locate

    found: dict[str, tuple[Any, str]] = {name: (value, st.source(name)) for name, value in st.values().items()}
    if st.timezone and st.timezone.lower() != "local":
        found["timezone"] = (filters.zone_name(st.timezone, _setting_source(st, "timezone", "--timezone")),
                             st.source("timezone"))
    else:
        found["timezone"] = (filters.local_zone_name(), "default: this machine's time zone")
    if st.data_dirs:
        found["data_dirs"] = (list(st.data_dirs), st.source("data_dirs"))
    else:
        dirs, named = locate.requested_data_dirs()
        found["data_dirs"] = ([str(d) for d in dirs],
                              "env OPENCODE_DATA_DIR" if named else "default: OpenCode's data directory")
    return found


def _plain(value: Any) -> str:
    """A setting's value as the config file would spell it, without Python's quotes."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "unset"
    if isinstance(value, dict):
        return ", ".join(f"{k} = {v}" for k, v in value.items()) or "unset"
    return str(value)


def entry() -> None:
    """The `ocsight` console script."""
    main()


def main(argv: list[str] | None = None) -> None:
    """Runs the CLI; every failure becomes one line on stderr and a documented exit code."""
    from ocsight.errors import OcsightError

    try:
        cli.main(args=argv, prog_name="ocsight", standalone_mode=False)
        sys.stdout.flush()  # here, where a closed pipe is handled, not at the interpreter's exit
    except OcsightError as e:
        click.echo(f"ocsight: error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("ocsight: interrupted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        args = sys.argv[1:] if argv is None else argv
        if not args and e.ctx is not None:
            click.echo(e.ctx.get_help())  # `ocsight` alone asks what there is: the help, as --help
            sys.exit(0)
        # one line, as every other error; click's own form is three (usage, hint, error). Errors of
        # the option parser come without a context: the command is the first argument naming one
        named = next((a for a in args if a in cli.commands), None)
        command = e.ctx.command_path if e.ctx else f"ocsight {named}" if named else "ocsight"
        message = " ".join(e.format_message().split())
        click.echo(f"ocsight: error: {message} (see '{command} --help')", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("ocsight: interrupted", err=True)
        sys.exit(130)
    except (BrokenPipeError, OutputClosed):
        # the reader stopped reading (`ocsight stats | head -1`): not a failure, for every command alike.
        # What is still buffered goes nowhere (the pattern of Python's "Note on SIGPIPE"), so the
        # interpreter's last flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except Exception as e:  # noqa: BLE001 - the promise is: no traceback, ever
        if os.environ.get("OCSIGHT_DEBUG"):
            raise
        click.echo(f"ocsight: internal error: {type(e).__name__}: {e} (set OCSIGHT_DEBUG=1 for details)", err=True)
        sys.exit(70)
