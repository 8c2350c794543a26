"""A Sphinx extension (listed in ``_config.yml``): the HTML as the static report it is.

Jupyter Book 1 loads sphinx-thebe on every page even with ``launch_buttons.thebe: false``,
and its configuration snippet is emitted twice: ``const THEBE_JS_URL`` declared twice is a
SyntaxError in every page's console. The report has no live kernel, so every Thebe script
goes, and an inline script repeated word for word is kept once. The theme's download menu
offers ".pdf" as the browser's print dialog; the book's PDF is ``make pdf``
(``_build/pdf/book.pdf``, the banner on every page), so that entry goes.
"""

from __future__ import annotations

from typing import Any

THEBE = ("THEBE_JS_URL", "sphinx-thebe", "thebe_selector")
PRINT_BUTTON = "download-pdf-button"


def _text(script: Any) -> str:
    attributes = getattr(script, "attributes", {}) or {}
    return f"{script} {getattr(script, 'filename', '') or ''} {attributes.get('body', '')}"


def keep_scripts(scripts: list[Any]) -> list[Any]:
    """Every script but Thebe's, and each identical inline script once."""
    out, seen = [], set()
    for script in scripts:
        text = _text(script)
        if any(mark in text for mark in THEBE):
            continue
        body = (getattr(script, "attributes", {}) or {}).get("body")
        if body:
            if body in seen:
                continue
            seen.add(body)
        out.append(script)
    return out


def drop_print_button(buttons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The header's buttons without the print-to-PDF entry (a group left empty goes too)."""
    out = []
    for button in buttons:
        if button.get("label") == PRINT_BUTTON:
            continue
        if button.get("type") == "group":
            inner = drop_print_button(button.get("buttons", []))
            if not inner:
                continue
            button = {**button, "buttons": inner}
        out.append(button)
    return out


def _page(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    if "script_files" in context:
        context["script_files"] = keep_scripts(list(context["script_files"]))
    if "header_buttons" in context:
        context["header_buttons"][:] = drop_print_button(context["header_buttons"])


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _page, priority=900)  # after the theme adds its buttons
    return {"parallel_read_safe": True, "parallel_write_safe": True}
