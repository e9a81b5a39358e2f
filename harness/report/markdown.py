"""Markdown tables, the one way every summary, comparison and study writes them: each cell
escaped, so a dataset, template, run or rule name holding `|`, `<` or a newline stays one cell."""
from __future__ import annotations

from typing import Any, Iterable, Sequence


def md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell: pipes, backslashes, HTML and newlines escaped."""
    return (str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace("\n", " "))


def md_row(cells: Sequence[Any]) -> str:
    """One table row, its cells escaped."""
    return "| " + " | ".join(md_cell(c) for c in cells) + " |"


def md_table(head: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A table's lines: the header, the rule under it, and a line per row."""
    return [md_row(head), "|" + "---|" * len(head), *(md_row(r) for r in rows)]
