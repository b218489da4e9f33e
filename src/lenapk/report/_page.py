"""A self-contained HTML page from sections of text, tables and figures (Jinja2 template;
figures embedded as base64 PNG, so the page needs no network)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pandas as pd

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("lenapk.report", "templates"), autoescape=jinja2.select_autoescape(["html", "j2"])
)


@dataclass(frozen=True)
class Part:
    kind: str  # text | pre | table | image | heading
    body: str


@dataclass
class Section:
    """A titled section; add parts with :meth:`text`, :meth:`pre`, :meth:`table`, :meth:`image`."""

    title: str
    parts: list[Part] = field(default_factory=list)

    def text(self, body: str) -> "Section":
        self.parts.append(Part("text", body))
        return self

    def pre(self, body: str) -> "Section":
        self.parts.append(Part("pre", body))
        return self

    def heading(self, body: str) -> "Section":
        self.parts.append(Part("heading", body))
        return self

    def table(self, df: pd.DataFrame, float_format=lambda x: f"{x:.4g}") -> "Section":
        self.parts.append(
            Part("table", df.to_html(index=False, float_format=float_format, border=0, classes="t", na_rep="-"))
        )
        return self

    def image(self, path: str | Path) -> "Section":
        self.parts.append(Part("image", base64.b64encode(Path(path).read_bytes()).decode("ascii")))
        return self


def render_page(path: str | Path, *, title: str, intro: str, sections: list[Section]) -> Path:
    """Write the page to ``path`` and return it."""
    path = Path(path)
    path.write_text(_ENV.get_template("report.html.j2").render(title=title, intro=intro, sections=sections))
    return path
