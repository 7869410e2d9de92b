"""
Directory listings for ``StaticFiles``: reading a directory's visible
entries and rendering them as an HTML page.

Kept out of ``static.py`` because a listing is an opt-in page, not part of
serving files.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from urllib.parse import quote

__all__ = ["listingPage", "scanDirectory"]


def scanDirectory(
    fsPath: bytes, showHidden: bool, contained: Callable[[bytes], bool]
) -> list[tuple[bytes, bool]]:
    """
    The ``(name, isDirectory)`` entries of a directory that may be listed,
    sorted: dot names only when ``showHidden``, and no symbolic link that
    ``contained`` says leads out of the root.  Raises ``OSError`` (such as
    ``PermissionError``) when the directory cannot be read.
    """
    with os.scandir(fsPath) as scanner:
        items = []
        for item in scanner:
            name = os.fsencode(item.name)
            if name.startswith(b".") and not showHidden:
                continue
            if item.is_symlink() and not contained(os.fsencode(item.path)):
                continue
            try:
                isDir = item.is_dir()
            except OSError:
                continue
            items.append((name, isDir))
    items.sort()
    return items


def listingPage(segments: list[bytes], items: list[tuple[bytes, bool]]) -> bytes:
    """
    The HTML page listing ``items`` of the directory at ``segments`` (the
    decoded path segments, the last one empty), every name escaped.
    """
    shown = "/" + "/".join(s.decode("utf-8", "replace") for s in segments)
    title = html.escape(shown)
    lines = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>Index of {title}</title></head>",
        f"<body><h1>Index of {title}</h1><ul>",
    ]
    if len(segments) > 1:
        lines.append('<li><a href="../">../</a></li>')
    for name, isDir in items:
        slash = "/" if isDir else ""
        href = html.escape(quote(name, safe="") + slash)
        text = html.escape(name.decode("utf-8", "replace") + slash)
        lines.append(f'<li><a href="{href}">{text}</a></li>')
    lines.append("</ul></body></html>\n")
    return "\n".join(lines).encode("utf-8")
