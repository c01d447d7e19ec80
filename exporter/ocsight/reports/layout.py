"""Fitting a table to the terminal so that names stay readable.

Names (providers, models, agents, project paths) are what a reader looks a row up by, so they give
way last. While a table is wider than the terminal, it drops its least important columns and
writes its counts compactly (123k, 1.23M), in the order the caller gives. When that is not enough,
names are shortened: from `FULL_NAMES` columns up they wrap onto a second line (the full name
stays readable); below it a project path becomes its tail of at least `MIN_TAIL` characters (the
end of no other project's path), and an ID wraps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ocsight.reports.format import MIN_TAIL, compact_number, distinct_tails, money, tokens

FULL_NAMES = 100  # from this width up, names are never shortened
PATH_ROOM = 25  # below FULL_NAMES, a path's tail of this many characters is enough
NAME_ROOM = 16  # a name that wraps keeps at least this many characters a line
BORDERS = 3  # a column's padding and its border, in a box table


@dataclass(frozen=True)
class Column:
    """A column and its cells (rich markup), before fitting.

    `kind`: "path" (shortened to its tail), "name" (an ID or a title: wraps, never cut), both plain
    text; "label" (markup, one line, left) or "number" (markup, one line, right). `drop`: the step
    at which the column goes (1 first; 0 never). `compact`: the cells in a shorter form, used once
    compaction is reached.
    """

    header: str
    cells: list[str]
    kind: str = "number"
    drop: int = 0
    compact: list[str] | None = None
    known: tuple[str, ...] = ()  # of a path column: other paths its tails must not be the end of

    @property
    def plain(self) -> bool:
        return self.kind in ("path", "name")


@dataclass(frozen=True)
class Fitted:
    """The columns shown and how: which went, which are compact, the width all would need."""

    columns: list[Column]
    dropped: list[str] = field(default_factory=list)
    compacted: list[str] = field(default_factory=list)  # the headers of columns written compactly
    full_width: int = 0  # what every column with exact counts and whole names needs
    width: int = 0  # the width fitted to


def cell_width(text: str, markup: bool = True) -> int:
    return max(((Text.from_markup(line) if markup else Text(line)).cell_len for line in text.split("\n")),
               default=0)


def natural(col: Column, compacted: bool = False) -> int:
    cells = col.compact if compacted and col.compact is not None else col.cells
    return max([cell_width(col.header), *(cell_width(c, not col.plain) for c in cells)])


def needed(columns: list[Column], compacted: bool = False) -> int:
    return sum(natural(c, compacted) for c in columns) + BORDERS * len(columns) + 1


def fit(columns: list[Column], width: int, compact_at: int = 1) -> Fitted:
    """The columns that fit `width` with their names whole, after as few steps as possible: drop the
    columns of step 1, 2, ... in turn; from step `compact_at` on, compact counts too. Below
    `FULL_NAMES` a path counts as `PATH_ROOM` characters at most: its tail is enough there."""
    full = needed(columns)
    last = max([compact_at, *(c.drop for c in columns)])
    shown, compacted = list(columns), False
    for step in range(last + 1):
        shown = [c for c in columns if not c.drop or c.drop > step]
        compacted = step >= compact_at
        if _needed_here(shown, compacted, width) <= width:
            break
    dropped = [c.header for c in columns if c not in shown]
    final = [_settle(c, compacted) for c in shown]
    if width < FULL_NAMES and needed(final) > width:
        final = _shorten_paths(final, width)
    changed = [c.header for c in shown if compacted and c.compact is not None and c.compact != c.cells]
    return Fitted(final, dropped, changed, full, width)


def _needed_here(columns: list[Column], compacted: bool, width: int) -> int:
    if width >= FULL_NAMES:
        return needed(columns, compacted)
    return needed(columns, compacted) - sum(max(0, natural(c) - PATH_ROOM) for c in columns if c.kind == "path")


def _settle(col: Column, compacted: bool) -> Column:
    if compacted and col.compact is not None:
        return replace(col, cells=col.compact, compact=None)
    return col


def _shorten_paths(columns: list[Column], width: int) -> list[Column]:
    """Path columns cut to distinct tails so that the table fits, keeping `MIN_TAIL` characters."""
    paths = [c for c in columns if c.kind == "path"]
    if not paths:
        return columns
    room = max(MIN_TAIL + 1, (width - _others(columns)) // len(paths))
    return [replace(c, cells=distinct_tails(c.cells, room, c.known)) if c.kind == "path" else c for c in columns]


def _others(columns: list[Column]) -> int:
    """The width of everything but the path columns, names counted at the width they wrap to."""
    return (sum(natural(c) for c in columns if not c.plain) + BORDERS * len(columns) + 1
            + sum(min(natural(c), NAME_ROOM) for c in columns if c.kind == "name"))


def table(fitted: Fitted, title: str) -> Table:
    """A rich table of fitted columns: numbers right-aligned on one line, names wrapping whole."""
    # a caption (notes under the table) wraps left-aligned within the table: centred, a wrapped
    # caption's last word sat alone in the middle of its line
    t = Table(title=title, title_justify="left", title_style="bold", caption_justify="left")
    paths = [c for c in fitted.columns if c.kind == "path"]
    path_room = (fitted.width - _others(fitted.columns)) // len(paths) if paths else 0
    for c in fitted.columns:
        if c.kind == "path" and natural(c) <= path_room:  # whole on one line: a title beside it wraps first
            t.add_column(c.header, no_wrap=True)
        elif c.kind == "path":
            t.add_column(c.header, overflow="fold", min_width=MIN_TAIL + 1)
        elif c.plain:
            t.add_column(c.header, overflow="fold", min_width=min(natural(c), NAME_ROOM))
        else:
            t.add_column(c.header, justify="right" if c.kind == "number" else "left", no_wrap=True)
    return t


def rows(fitted: Fitted) -> list[list[str]]:
    """The cells row by row, as markup (plain names escaped)."""
    cells = [[escape(x) for x in c.cells] if c.plain else c.cells for c in fitted.columns]
    return [list(r) for r in zip(*cells)]


# -- the columns every usage table has ----------------------------------------------------------------

def counts(header: str, values: list[int], drop: int = 0) -> Column:
    """Counts with thousands separators, compactly in k, M, B: a column with a count in units has
    every count from 1,000 up in units (one style down the column: 111k over 54.4k, not over 54,410)."""
    exact_below = 100_000 if all(v < 100_000 for v in values) else 1_000
    return Column(header, [tokens(v) for v in values], drop=drop,
                  compact=[compact_number(v, exact_below) for v in values])


def costs(values: list[dict]) -> Column:
    """The cost blocks of a document, compactly without their estimated part."""
    return Column("Cost", [money(c) for c in values], compact=[money(c, brief=True) for c in values])


def notes(fitted: Fitted) -> list[str]:
    """What a narrow terminal left out or wrote compactly."""
    out = []
    if fitted.dropped:
        out.append(f"widen to {fitted.full_width} columns for: {', '.join(h.lower() for h in fitted.dropped)}")
    if any(h != "Cost" for h in fitted.compacted):
        out.append("k, M, B = thousands, millions, billions")
    if "Cost" in fitted.compacted:
        out.append("costs without their estimated part")
    return out
