"""A self-contained HTML page from sections of text, tables and figures.

Presentation only: numbers arrive formatted (:mod:`._format`), the page comes from a Jinja2
template (``templates/report.html.j2``), and figures are embedded as base64 PNG, so the page
needs no network.  Sections carry an ``id`` (an anchor, used by the table of contents).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import markdown
import markupsafe
import pandas as pd

_NUMERIC = re.compile(r"^[-+<>]?[\d.,]+(e[-+]?\d+)?%?( \(.*\))?$")
_BLANK = ("", "-", "\u2013")

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("lenapk.report", "templates"), autoescape=jinja2.select_autoescape(["html", "j2"])
)


@dataclass(frozen=True)
class Part:
    kind: str  # text | bullets | warning | table | image | heading | details | facts | document
    body: object
    caption: str = ""


@dataclass
class Section:
    """A titled section (``id``: its anchor) built part by part: :meth:`text`, :meth:`bullets`,
    :meth:`warning`, :meth:`table`, :meth:`image`, :meth:`heading`, :meth:`details`, :meth:`facts`,
    :meth:`document`."""

    id: str
    title: str
    parts: list[Part] = field(default_factory=list)

    def _add(self, kind: str, body, caption: str = "") -> "Section":
        self.parts.append(Part(kind, body, caption))
        return self

    def text(self, body: str) -> "Section":
        return self._add("text", body)

    def bullets(self, items: list[str]) -> "Section":
        return self._add("bullets", list(items))

    def warning(self, body: str) -> "Section":
        return self._add("warning", body)

    def heading(self, body: str) -> "Section":
        return self._add("heading", body)

    def facts(self, pairs: list[tuple[str, str]]) -> "Section":
        """Label / value pairs."""
        return self._add("facts", list(pairs))

    def table(self, df: pd.DataFrame, caption: str = "", notes: list[str] | None = None) -> "Section":
        """A table of already formatted cells (strings); ``notes`` are its numbered footnotes."""
        rows = [[("" if v is None else str(v)) for v in row] for row in df.itertuples(index=False)]
        numeric = [
            any(r[j] not in _BLANK for r in rows) and all(r[j] in _BLANK or _NUMERIC.match(r[j]) for r in rows)
            for j in range(len(df.columns))
        ]
        body = {"columns": [str(c) for c in df.columns], "rows": rows, "numeric": numeric, "notes": notes or []}
        return self._add("table", body, caption)

    def details(self, summary: str, df: pd.DataFrame | None = None, text: str = "") -> "Section":
        """A collapsed block: a table of formatted cells or text."""
        rows = [] if df is None else [[str(v) for v in row] for row in df.itertuples(index=False)]
        columns = [] if df is None else [str(c) for c in df.columns]
        return self._add("details", {"summary": summary, "columns": columns, "rows": rows, "text": text})

    def document(self, summary: str, text: str) -> "Section":
        """A collapsed Markdown document (tables and code blocks), rendered to HTML."""
        html = markdown.markdown(text, extensions=["tables", "fenced_code"])
        html = re.sub(r"<(/?)h([1-4])\b", lambda m: f"<{m[1]}h{int(m[2]) + 2}", html)  # below the section's h2
        return self._add("document", {"summary": summary, "html": markupsafe.Markup(html)})

    def image(self, path: str | Path, caption: str = "") -> "Section":
        return self._add("image", base64.b64encode(Path(path).read_bytes()).decode("ascii"), caption)


def render_page(path: str | Path, *, title: str, intro: str, sections: list[Section], footer: str = "") -> Path:
    """Write the page to ``path`` and return it."""
    path = Path(path)
    html = _ENV.get_template("report.html.j2").render(title=title, intro=intro, sections=sections, footer=footer)
    path.write_text(html)
    return path
