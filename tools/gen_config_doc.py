"""Write docs/config.md from ServerConfig's field documentation.

    python tools/gen_config_doc.py > docs/config.md

tests/test_docs.py fails when docs/config.md is out of date.
"""

from __future__ import annotations

import dataclasses

from connserver._http.config import ServerConfig, configFieldDocs


def render() -> str:
    docs = configFieldDocs()
    lines = [
        "# ServerConfig: every limit and timeout",
        "",
        "Generated from `connserver/_http/config.py` by `python tools/gen_config_doc.py`;",
        "edit the field documentation there, not this file.",
        "",
        "Seconds are floats, sizes are bytes, and `None` (`none` or `off` on the",
        "command line) turns a limit off.  Each field has a kebab-case flag on",
        "`twistd connserver` (`idleTimeout` is `--idle-timeout`).",
        "",
        "| field | default | what it is for |",
        "| --- | --- | --- |",
    ]
    for field in dataclasses.fields(ServerConfig):
        default = field.default
        lines.append(f"| `{field.name}` | `{default!r}` | {docs[field.name]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
