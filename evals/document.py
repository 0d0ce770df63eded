"""A tiny document model rendered twice: Markdown (images linked) and self-contained HTML (images inlined).

Reports and comparisons are built once as a list of blocks so the two formats
never drift apart, and report.html opens anywhere (mail, CI artifact) without
its PNG files beside it.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

_MARKDOWN_SYNTAX = re.compile(r"([\\`*_\[\]<>#])")
_NUMBER = re.compile(r"^([-+]?\d|n/a$)")  # numbers (incl. "0.81 ± 0.02") align right in HTML tables
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
pre { background: #f5f5f5; padding: 0.8em; overflow-x: auto; }
"""


@dataclass
class Table:
    """Rows of already formatted cells; `bold` holds (row, column) indices to emphasise.

    `free_text` names columns holding text the run produced (e.g. dreams), whose
    Markdown syntax characters are escaped so it shows as written.
    """

    headers: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    free_text: set[int] = field(default_factory=set)


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("heading", text))

    def text(self, text: str) -> None:
        self.blocks.append(("text", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", items))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("image", (Path(path), caption)))

    def code(self, text: str, language: str = "") -> None:
        self.blocks.append(("code", (text, language)))

    def to_markdown(self, relative_to: Path) -> str:
        """Markdown with images linked relative to `relative_to` (the folder the .md file lives in)."""
        parts = [f"# {self.title}"]
        for kind, value in self.blocks:
            if kind == "heading":
                parts.append(f"## {value}")
            elif kind == "text":
                parts.append(str(value))
            elif kind == "bullets":
                parts.append("\n".join(f"- {item}" for item in value))
            elif kind == "table":
                parts.append(markdown_table(value))
            elif kind == "image":
                path, caption = value
                parts.append(f"![{caption}]({_relative(path, relative_to)})")
            elif kind == "code":
                text, language = value
                parts.append(f"```{language}\n{text.rstrip()}\n```")
        return "\n\n".join(parts) + "\n"

    def to_html(self) -> str:
        """One HTML file with every image embedded as a base64 data URI."""
        parts = [
            "<!DOCTYPE html>",
            '<html><head><meta charset="utf-8">',
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for kind, value in self.blocks:
            if kind == "heading":
                parts.append(f"<h2>{html.escape(str(value))}</h2>")
            elif kind == "text":
                parts.append(f"<p>{html.escape(str(value))}</p>")
            elif kind == "bullets":
                parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in value) + "</ul>")
            elif kind == "table":
                parts.append(_html_table(value))
            elif kind == "image":
                path, caption = value
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                parts.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
            elif kind == "code":
                parts.append(f"<pre><code>{html.escape(value[0])}</code></pre>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"


def markdown_table(table: Table) -> str:
    def cell(r: int, c: int, text: str) -> str:
        if c in table.free_text:
            text = _MARKDOWN_SYNTAX.sub(r"\\\1", text)
        text = text.replace("|", "\\|")
        return f"**{text}**" if (r, c) in table.bold else text

    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in table.headers) + " |", "|" + "---|" * len(table.headers)]
    lines += ["| " + " | ".join(cell(r, c, text) for c, text in enumerate(row)) + " |" for r, row in enumerate(table.rows)]
    return "\n".join(lines)


def _html_table(table: Table) -> str:
    def cell(r: int, c: int, text: str) -> str:
        kind = ' class="number"' if c and _NUMBER.match(text) else ""
        text = html.escape(text)
        return f"<td{kind}><b>{text}</b></td>" if (r, c) in table.bold else f"<td{kind}>{text}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(cell(r, c, t) for c, t in enumerate(row)) + "</tr>" for r, row in enumerate(table.rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()
