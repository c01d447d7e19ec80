"""The `ocsight` command line: parses arguments, calls the reader and query layer, renders.

Only click is imported at start-up; everything else is imported by the command that needs it, so
`ocsight --help` stays instant.

Exit codes: 0 success; 1 data problem (missing, unreadable, corrupt or locked data); 2 bad usage
(unknown flag, bad value); 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from ocsight import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _source_options(fn: Callable) -> Callable:
    options = [
        click.option("--data-dir", "data_dirs", multiple=True, metavar="DIR",
                     help="OpenCode data directory (repeatable). Default: $OPENCODE_DATA_DIR, else "
                          "$XDG_DATA_HOME/opencode."),
        click.option("--demo", is_flag=True, help="Read the bundled demo store instead of your data."),
        click.option("--no-cache", is_flag=True, help="Read everything afresh; do not use or write the index."),
        click.option("--cost-mode", type=click.Choice(["auto", "stored", "calculate"]), default="auto",
                     show_default=True,
                     help="auto: OpenCode's stored cost when > 0, else estimated; stored: only stored costs; "
                          "calculate: estimate every message from prices."),
        click.option("--prices", metavar="FILE", help="Price overrides (TOML or JSON, models.dev cost keys)."),
        click.option("--days", type=click.IntRange(min=1), help="Only the last N days (today included)."),
        click.option("--since", metavar="DATE", help="From this day (YYYY-MM-DD), inclusive."),
        click.option("--until", metavar="DATE", help="Up to this day (YYYY-MM-DD), inclusive."),
        click.option("--timezone", "-z", metavar="TZ", help="IANA time zone for day boundaries (default: local)."),
        click.option("--provider", "providers", multiple=True, help="Only these providers (repeatable, or a,b)."),
        click.option("--model", "models", multiple=True, help="Only these models: ID or provider/ID."),
        click.option("--project", "projects", multiple=True, help="Only projects whose path contains this."),
        click.option("--agent", "agents", multiple=True, help="Only these agents (build, plan, general, ...)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _load(kw: dict, progress: bool = False):
    """(index, filters) for the command's options."""
    from ocsight import query, reader

    filters = query.make_filters(
        days=kw["days"], since=kw["since"], until=kw["until"], timezone=kw["timezone"],
        providers=kw["providers"], models=kw["models"], projects=kw["projects"], agents=kw["agents"],
    )
    opts = reader.ReadOptions(
        data_dirs=kw["data_dirs"], demo=kw["demo"], use_cache=not kw["no_cache"], cost_mode=kw["cost_mode"],
        prices=kw["prices"],
    )
    return reader.open_index(opts), filters


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="ocsight")
def cli() -> None:
    """Exact token and cost analytics for OpenCode.

    \b
    Examples:
      ocsight analyze                     overview of all your OpenCode usage
      ocsight analyze --demo              the same on the bundled demo store
      ocsight stats --json --days 7       machine-readable totals for the last week
      ocsight stats --json --provider anthropic --since 2026-11-01 -z Europe/Paris
    """


@cli.command(context_settings=CONTEXT)
@_source_options
def analyze(**kw) -> None:
    """Overview: sessions, messages, tokens, cost, models, agents, projects and tools.

    Without --data-dir and with no OpenCode data on this machine, shows the bundled demo store.

    \b
    Examples:
      ocsight analyze
      ocsight analyze --days 30 --project my-app
    """
    from ocsight.store import locate

    if not kw["data_dirs"] and not kw["demo"] and not os.environ.get("OPENCODE_DATA_DIR"):
        if not locate.has_default_data():
            click.echo(
                f"No OpenCode data at {locate.default_data_dir()}; showing the bundled demo store "
                "(use --data-dir to point at your data).",
                err=True,
            )
            kw["demo"] = True
    _render(kw, as_json=False)


@cli.command(context_settings=CONTEXT)
@_source_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fields documented in the README).")
def stats(as_json: bool, **kw) -> None:
    """Totals and breakdowns by provider, model, agent, project and tool.

    \b
    Examples:
      ocsight stats
      ocsight stats --json | jq '.totals.cost'
      ocsight stats --json --cost-mode calculate --model anthropic/claude-sonnet-4-5
    """
    _render(kw, as_json=as_json)


def _render(kw: dict, as_json: bool) -> None:
    from ocsight import reader

    idx, filters = _load(kw)
    try:
        doc = reader.stats_document(idx, filters, kw["cost_mode"])
    finally:
        idx.close()
    if as_json:
        import json

        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return
    from ocsight.report import summary

    summary.render(doc)


def main(argv: list[str] | None = None) -> None:
    """Runs the CLI; every failure becomes one line on stderr and a documented exit code."""
    from ocsight.errors import OcsightError

    try:
        cli.main(args=argv, prog_name="ocsight", standalone_mode=False)
    except OcsightError as e:
        click.echo(f"ocsight: error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("ocsight: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("ocsight: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
    except Exception as e:  # noqa: BLE001 - the promise is: no traceback, ever
        if os.environ.get("OCSIGHT_DEBUG"):
            raise
        click.echo(f"ocsight: internal error: {type(e).__name__}: {e} (set OCSIGHT_DEBUG=1 for details)", err=True)
        sys.exit(70)
