"""Plain-text tables for command output (``conveyor demo``, ``conveyor dlq list``)."""

from __future__ import annotations


def plain_table(header: list[str], rows: list[list[str]], *, rule: bool = True) -> str:
    """A rich table as plain text: one line per row, never wrapped, no colour (it is printed, piped,
    grepped); ``rule`` draws the line under the header."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, box=box.SIMPLE_HEAD if rule else None, show_edge=False, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    buffer = io.StringIO()
    Console(file=buffer, width=100_000, color_system=None, highlight=False).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines() if line.strip())
