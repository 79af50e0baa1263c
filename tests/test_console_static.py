"""The console's static files, checked without a browser (tests/test_console_browser.py
drives one): every file that index.html names exists; the HTML has no inline script, style
or event handler (the CSP would block them); no file points at another origin; app.js never
parses data as HTML and keeps the admin key in sessionStorage only."""

from __future__ import annotations

import ast
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONSOLE = ROOT / "gateway" / "console"
INDEX = CONSOLE / "index.html"
APP = CONSOLE / "app.js"
VENDOR = CONSOLE / "vendor"
URL = re.compile(r"\b(?:https?|wss?|ftp)://[^\s\"'<>)]*", re.IGNORECASE)
# Identifiers that look like URLs but are never fetched.
NOT_LOADED = {"http://www.w3.org/2000/svg"}
# The vendored files open with a /*! … */ banner naming their project's home: a comment.
BANNER = re.compile(r"\A/\*!.*?\*/", re.DOTALL)


class PageParser(HTMLParser):
    """What index.html loads and what it holds inline."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name, value in attrs:
            if name == "style":
                self.inline.append(f'<{tag} style="{value}">')
            if name.startswith("on"):
                self.inline.append(f"<{tag} {name}=…>")
        if tag == "style":
            self.inline.append("<style> block")
        for name in ("src", "href"):
            if named.get(name):
                self.references.append(named[name])
        self._in_script = tag == "script" and not named.get("src")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script> block: {data.strip()[:40]}")


def parse_index() -> PageParser:
    parser = PageParser()
    parser.feed(INDEX.read_text())
    return parser


def console_files() -> list[Path]:
    """The files the console serves (its Python package marker is not one of them)."""
    return sorted(
        file
        for file in CONSOLE.rglob("*")
        if file.is_file() and file.suffix not in (".py", ".pyc") and "__pycache__" not in file.parts
    )


def test_every_file_index_html_references_exists():
    references = [ref for ref in parse_index().references if not ref.startswith("#")]
    assert {"app.js", "style.css", "vendor/uplot.iife.min.js", "vendor/uplot.min.css"} <= set(
        references
    )
    for ref in references:
        assert not ref.startswith(("/", "data:", "blob:")) and "://" not in ref, ref
        assert (CONSOLE / ref).is_file(), ref


def test_the_html_has_no_inline_script_style_or_handler():
    assert parse_index().inline == []


def test_the_parser_would_see_inline_code():
    parser = PageParser()
    parser.feed('<p style="x" onclick="y()"></p><style>p{}</style><script>go()</script>')
    assert len(parser.inline) == 4


@pytest.mark.parametrize("file", console_files(), ids=lambda file: str(file.relative_to(CONSOLE)))
def test_no_file_points_at_another_origin(file):
    text = file.read_text(errors="replace")
    if file.parent == VENDOR:
        text = BANNER.sub("", text)
    assert set(URL.findall(text)) - NOT_LOADED == set()
    # Protocol-relative references load from another origin too.
    assert not re.search(r"""(?:src|href|url\()\s*=?\s*["']?//""", text), file


def test_app_js_never_parses_data_as_html():
    code = APP.read_text()
    forbidden = [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "DOMParser",
        "createContextualFragment",
        "srcdoc",
        "eval(",
        "new Function",
        # The CSP blocks style attributes set as markup; the CSSOM is the allowed way.
        'setAttribute("style"',
        "setAttribute('style'",
        "cssText",
    ]
    assert [word for word in forbidden if word in code] == []


def test_the_admin_key_stays_in_session_storage():
    code = APP.read_text()
    assert "sessionStorage" in code
    assert "localStorage" not in code
    assert "document.cookie" not in code


def test_uplot_is_vendored_with_its_license():
    assert (VENDOR / "uplot.iife.min.js").read_text().startswith("/*! https://github.com/leeoniya")
    assert ".uplot" in (VENDOR / "uplot.min.css").read_text()
    assert "MIT" in (VENDOR / "UPLOT-LICENSE").read_text()


def test_the_console_is_a_package_with_only_a_docstring():
    body = ast.parse((CONSOLE / "__init__.py").read_text()).body
    assert len(body) == 1
    assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    assert isinstance(body[0].value.value, str)
