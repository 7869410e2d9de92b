"""
Directory listings for ``StaticFiles``: reading a directory's visible
entries and rendering them as an HTML table.

The table has a name, a modification date and a size column, as nginx's
autoindex and Apache's mod_autoindex show them, and sorts without a script:
each column heading is a link with Apache's query (``?C=N;O=D``: column
``N``ame, ``M``odified or ``S``ize, order ``A``scending or ``D``escending).
Kept out of ``static.py`` because a listing is an opt-in page, not part of
serving files.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["ListingEntry", "listingOrder", "listingPage", "scanDirectory"]


@dataclass(frozen=True)
class ListingEntry:
    """One name in a listing: a directory's size is ``None``."""

    name: bytes
    isDirectory: bool
    size: int | None
    modified: float


def scanDirectory(
    fsPath: bytes, showHidden: bool, contained: Callable[[bytes], bool]
) -> list[ListingEntry]:
    """
    The entries of a directory that may be listed, sorted by name: dot
    names only when ``showHidden``, and no symbolic link that ``contained``
    says leads out of the root (a link is described by its target).  Raises
    ``OSError`` (such as ``PermissionError``) when the directory cannot be
    read.
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
                st = item.stat()
            except OSError:
                continue  # A dangling link, or gone since the scan.
            items.append(
                ListingEntry(name, isDir, None if isDir else st.st_size, st.st_mtime)
            )
    items.sort(key=lambda entry: entry.name)
    return items


_COLUMNS = (("N", "Name"), ("M", "Last modified (UTC)"), ("S", "Size"))


def listingOrder(query: bytes) -> tuple[str, bool]:
    """
    The column (``N``, ``M`` or ``S``) and whether descending, from a
    listing's query (Apache's ``C=M;O=D``, ``;`` or ``&`` between the
    pairs); anything else is ignored: by name, ascending.
    """
    column, descending = "N", False
    for pair in query.replace(b"&", b";").split(b";"):
        key, _, value = pair.partition(b"=")
        if key == b"C" and value in (b"N", b"M", b"S"):
            column = value.decode("ascii")
        elif key == b"O" and value in (b"A", b"D"):
            descending = value == b"D"
    return column, descending


def _sorted(
    items: list[ListingEntry], column: str, descending: bool
) -> list[ListingEntry]:
    # Ties (and the name column) in name order; the sort is stable.
    if column == "M":
        return sorted(items, key=lambda e: e.modified, reverse=descending)
    if column == "S":
        # A directory has no size: it sorts before every file, as Apache's.
        return sorted(
            items,
            key=lambda e: -1 if e.size is None else e.size,
            reverse=descending,
        )
    return sorted(items, key=lambda e: e.name, reverse=descending)


def _date(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))


def listingPage(
    segments: list[bytes], items: list[ListingEntry], query: bytes = b""
) -> bytes:
    """
    The HTML page listing ``items`` of the directory at ``segments`` (the
    decoded path segments, the last one empty), sorted as ``query`` asks
    (see :func:`listingOrder`), every name escaped.
    """
    column, descending = listingOrder(query)
    shown = "/" + "/".join(s.decode("utf-8", "replace") for s in segments)
    title = html.escape(shown)
    headings = []
    for key, label in _COLUMNS:
        # A click on the sorted column reverses it; another column starts
        # ascending.
        order = "D" if key == column and not descending else "A"
        mark = ""
        if key == column:
            mark = " \N{DOWNWARDS ARROW}" if descending else " \N{UPWARDS ARROW}"
        headings.append(f'<th><a href="?C={key};O={order}">{label}</a>{mark}</th>')
    lines = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>Index of {title}</title>",
        "<style>td,th{padding:0 1em 0 0;text-align:left}"
        "td.size{text-align:right}</style></head>",
        f"<body><h1>Index of {title}</h1>",
        "<table>",
        f"<thead><tr>{''.join(headings)}</tr></thead>",
        "<tbody>",
    ]
    if len(segments) > 1:
        lines.append(
            '<tr><td><a href="../">../</a></td><td></td><td class="size">-</td></tr>'
        )
    for entry in _sorted(items, column, descending):
        slash = "/" if entry.isDirectory else ""
        href = html.escape(quote(entry.name, safe="") + slash)
        text = html.escape(entry.name.decode("utf-8", "replace") + slash)
        size = "-" if entry.size is None else str(entry.size)
        lines.append(
            f'<tr><td><a href="{href}">{text}</a></td>'
            f"<td>{_date(entry.modified)}</td>"
            f'<td class="size">{size}</td></tr>'
        )
    lines.append("</tbody></table></body></html>\n")
    return "\n".join(lines).encode("utf-8")
