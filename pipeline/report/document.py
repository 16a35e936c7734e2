"""One report, two renderings: Markdown (figures linked) and a self-contained HTML file (figures embedded).

The report is assembled once as a list of blocks; both renderers walk the same blocks, so the HTML can
never show a number the Markdown does not. The HTML has no external resource (no CDN, no font, no
script): it opens offline, e.g. on a hospital workstation.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.report.tables import Table, markdown_table


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Figure:
    path: Path  # the PNG on disk
    caption: str


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)


def render_markdown(document: Document, relative_to: Path) -> str:
    lines = [f"# {document.title}", ""]
    for block in document.blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines += markdown_table(block) + [""]
        elif isinstance(block, Figure):
            lines += [f"![{block.caption}]({block.path.relative_to(relative_to).as_posix()})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:0.85em;color:#555;margin-bottom:1.5em}td.better{background:#d8f0d8}td.worse{background:#f6d5d5}
td.none{background:#f1f1f1}"""


def render_html(document: Document) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(document.title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(document.title)}</h1>"]
    for block in document.blocks:
        parts.append(_html_block(block))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_block(block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        return (f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    raise TypeError(f"unknown report block {type(block).__name__}")


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header)
    rows = []
    tones = table.tone or [[""] * len(cells) for cells in table.rows]
    for cells, marks, row_tones in zip(table.rows, table.bold, tones):
        rows.append("<tr>" + "".join(
            f"<td{_tone_class(t)}>{'<b>' if b else ''}{html.escape(c)}{'</b>' if b else ''}</td>"
            for c, b, t in zip(cells, marks, row_tones)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _tone_class(tone: str) -> str:
    return f' class="{tone}"' if tone in ("better", "worse", "none") else ""
