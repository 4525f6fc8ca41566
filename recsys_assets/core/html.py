"""Self-contained HTML pages: one page shell, escaping, tables and plots, for every report.

Every text that comes from data goes through :func:`escape` (or :func:`cell`, or a
:func:`table`, which escape what they are given); only :class:`Raw` text is put in as it is.
A page with plots inlines plotly.js in its head, so it needs no network to be read.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# The look every page shares; a page adds its own rules with ``page(..., css=...)``.
CSS = (
    "body{font-family:sans-serif;margin:2em}"
    "td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}"
)


class Raw(str):
    """HTML that is safe as it is (built here from escaped parts or constants): :func:`cell`
    and :func:`table` put it in without escaping it again."""


def escape(value: Any) -> str:
    """``str(value)`` with ``& < > " '`` escaped, safe as HTML text or attribute value."""
    return html.escape(str(value))


def cell(value: Any, missing: str = "") -> str:
    """A table cell's HTML: ``missing`` for None, a float to 4 significant digits, :class:`Raw`
    as it is, anything else as escaped text."""
    if value is None:
        return missing
    if isinstance(value, Raw):
        return value
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(value)


def table(
    header: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    *,
    cell: Callable[[Any], str] = cell,
    css_class: str | None = None,
) -> str:
    """A table: one header row (escaped), then one row per entry of ``rows``, each value
    rendered by ``cell`` (which must escape what it is given)."""
    head = "".join(f"<th>{escape(name)}</th>" for name in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    opening = "<table>" if css_class is None else f"<table class='{escape(css_class)}'>"
    return f"{opening}<tr>{head}</tr>{body}</table>"


def figures_html(*figures: Any) -> str:
    """Plotly figures as page fragments, without plotly.js (the page inlines it once)."""
    return "".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figures)


def page(title: str, body_html: str, *, plotly: bool = False, css: str = "") -> str:
    """A whole self-contained page: ``title`` (escaped) as its title and first heading, then
    ``body_html`` as it is. ``plotly``: inline plotly.js in the head, for a page with plots;
    ``css``: rules added after (and so over) the shared :data:`CSS`."""
    script = ""
    if plotly:
        from plotly.offline import get_plotlyjs

        script = f"<script>{get_plotlyjs()}</script>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title>{script}<style>{CSS}{css}</style></head><body>"
        f"<h1>{escape(title)}</h1>{body_html}</body></html>"
    )
