"""What the command line prints: tables and fields for people (rich), or the API's JSON for scripts.

Everything printed for people goes through ``clean``: text the service answers can come from a caller (a
justification, a comment, an actor id), and a control character in it must not drive the operator's
terminal (an escape sequence that rewrites the screen). Progress goes to stderr, and only to a terminal,
so stdout stays what a script reads.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Wide enough that a pipe gets each row on one line (rich wraps at 80 columns off a terminal).
PIPE_WIDTH = 1000


def clean(value: Any) -> str:
    """``value`` as text a terminal shows as it is: control and format characters spelled out
    (``\\x1b``), never obeyed; None as an empty cell."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return "".join(
        repr(ch)[1:-1] if ch != " " and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
        for ch in text
    )


def when(value: Any) -> str:
    """A time the API answers (ISO 8601) as people read it: to the second, in UTC."""
    if not isinstance(value, str):
        return clean(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return clean(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def yes(value: Any) -> str:
    return "yes" if value is True else "no" if value is False else clean(value)


class Output:
    """Where a command prints: ``json`` for scripts (the API's documents), else rich for people."""

    def __init__(self, *, json_mode: bool, stdout: IO[str] | None = None, stderr: IO[str] | None = None):
        self.json = json_mode
        out, err = stdout or sys.stdout, stderr or sys.stderr
        self.console = Console(file=out, highlight=False, width=None if out.isatty() else PIPE_WIDTH)
        self.errors = Console(file=err, highlight=False, width=None if err.isatty() else PIPE_WIDTH)

    def document(self, document: Any) -> None:
        """One JSON document (ASCII: every control character escaped)."""
        self.console.file.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
        self.console.file.flush()

    def json_line(self, document: Any) -> None:
        self.console.file.write(json.dumps(document, separators=(",", ":")) + "\n")
        self.console.file.flush()

    def line(self, *parts: Any) -> None:
        self.console.print(Text(" ".join(clean(p) for p in parts)), soft_wrap=True)

    def note(self, text: str) -> None:
        """A message for the person (stderr): what was refused, why, what to do."""
        self.errors.print(Text(clean(text)), soft_wrap=True)

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = Table(title=clean(title) if title else None, title_justify="left", box=None, pad_edge=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(clean(cell)) for cell in row))
        self.console.print(table)

    def fields(self, title: str | None, pairs: Sequence[tuple[str, Any]]) -> None:
        """Name: value lines, those without a value left out."""
        if title:
            self.console.print(Text(clean(title), style="bold"))
        shown = [(name, value) for name, value in pairs if value not in (None, "", [])]
        width = max((len(name) for name, _ in shown), default=0)
        for name, value in shown:
            self.console.print(Text(f"  {name.ljust(width)}  {clean(value)}"), soft_wrap=True)

    @contextmanager
    def progress(self, text: str) -> Iterator[Any]:
        """A spinner on stderr while long work goes on (only on a terminal); yields ``update(text)``."""
        if self.json or not self.errors.is_terminal:
            yield lambda _text: None
            return
        with self.errors.status(Text(clean(text))) as status:
            yield lambda new: status.update(Text(clean(new)))
