"""index.html: report.md rendered by markdown-it-py, every figure embedded (one portable file)."""

from __future__ import annotations

import base64
import functools
import html
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML

CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%}figure{margin:1em 0}figcaption{font-style:italic;color:#555}"
    "pre{background:#f6f6f6;padding:0.6em;font-size:0.8em;overflow:auto}"
)
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title><style>{css}</style></head><body>
{body}</body></html>
"""


def _embedded_image(
    self: RendererHTML, tokens: list[Any], idx: int, options: Any, env: dict[str, Any]
) -> str:
    """An image of the report's folder becomes a data URI: the page needs no other file."""
    token = tokens[idx]
    src = token.attrGet("src")
    path = env["folder"] / str(src)
    if isinstance(src, str) and src.endswith(".png") and path.parent == env["folder"]:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        token.attrSet("src", f"data:image/png;base64,{data}")
    return RendererHTML.image(self, tokens, idx, options, env)


@functools.cache
def _markdown() -> MarkdownIt:
    # Raw HTML off: a study name or note is shown as text, never run as markup.
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.add_render_rule("image", _embedded_image)
    return md


def render_html(markdown: str, folder: Path, title: str) -> str:
    """The page of ``markdown``, whose images are PNG files in ``folder``."""
    body = _markdown().render(markdown, {"folder": Path(folder)})
    return PAGE.format(title=html.escape(title), css=CSS, body=body)
