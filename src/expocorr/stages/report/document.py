"""The report as a list of blocks (headings, paragraphs, lists, tables, figures) and its two renderings:
Markdown (`to_markdown`) and self-contained HTML with inline CSS (`to_html`)."""

from __future__ import annotations

import base64
import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from expocorr.stages.report.data import NOT_COMPUTED

log = logging.getLogger(__name__)


MIME = {"png": "image/png", "svg": "image/svg+xml", "jpg": "image/jpeg"}


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str  # `code` and **bold** spans allowed
    notice: bool = False  # set apart (a boxed paragraph; a quote in Markdown)


@dataclass
class Items:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str | None = None
    id: str | None = None


@dataclass
class FigureBlock:
    name: str  # file name under reports/figures/
    caption: str


Block = Heading | Para | Items | Table | FigureBlock


def to_markdown(blocks: list[Block]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            parts.append(f"> {b.text}" if b.notice else b.text)
        elif isinstance(b, Items):
            parts.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            lines = [f"*{b.caption}*", ""] if b.caption else []
            lines.append("| " + " | ".join(cell(h) for h in b.headers) + " |")
            lines.append("|" + "|".join("---:" if _numeric(h) else "---" for h in b.headers) + "|")
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in b.rows]
            parts.append("\n".join(lines))
        elif isinstance(b, FigureBlock):
            parts.append(f"![{b.caption}](figures/{b.name})\n\n*{b.caption}*")
    return "\n\n".join(parts) + "\n"


def _numeric(header: str) -> bool:
    return header not in ("method", "kind", "model", "#")


CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; margin: 2rem auto;
       max-width: 1300px; padding: 0 1.5rem; color: #1d1d1f; line-height: 1.45; background: #fff; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #eee; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0 1.2rem; font-size: .9rem; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3rem; }
th, td { border: 1px solid #d0d0d0; padding: .3rem .6rem; white-space: nowrap; }
th { background: #f2f4f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.nc { color: #888; font-style: italic; }
tbody tr:nth-child(even) { background: #fafafa; }
table#leaderboard tbody tr:first-child { background: #eef7ee; font-weight: 600; }
.scroll { overflow-x: auto; }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #555; margin-top: .3rem; }
code { background: #f4f4f4; padding: 0 .25rem; border-radius: 3px; font-size: .9em; }
p.notice { border-left: 4px solid #d9822b; background: #fff6ea; padding: .6rem .9rem; }
"""


def _inline(text: str) -> str:
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", html.escape(text, quote=False))
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text).replace("\n", "<br>")


def to_html(blocks: list[Block], title: str, figures: dict[str, bytes]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f'<p class="notice">{_inline(b.text)}</p>' if b.notice else f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Items):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            ident = f' id="{html.escape(b.id)}"' if b.id else ""
            rows = []
            for row in b.rows:
                cells = []
                for header, value in zip(b.headers, row):
                    cls = "nc" if value == NOT_COMPUTED else "num" if _numeric(header) else ""
                    cells.append(f'<td class="{cls}">{_inline(value)}</td>' if cls else f"<td>{_inline(value)}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            caption = f"<caption>{_inline(b.caption)}</caption>" if b.caption else ""
            out.append(f'<div class="scroll"><table{ident}>{caption}<thead><tr>'
                       + "".join(f"<th>{_inline(h)}</th>" for h in b.headers)
                       + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")
        elif isinstance(b, FigureBlock):
            data = base64.b64encode(figures[b.name]).decode("ascii")
            mime = MIME[Path(b.name).suffix[1:]]
            out.append(f'<figure id="fig-{html.escape(Path(b.name).stem)}"><img alt="{html.escape(b.caption)}" '
                       f'src="data:{mime};base64,{data}"><figcaption>{_inline(b.caption)}</figcaption></figure>')
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
