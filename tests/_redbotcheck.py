"""
Run REDbot (https://redbot.org/, the ``redbot`` package) on one URL and
print its notes as JSON lines: ``{"level", "id", "summary", "where"}``.

    python tests/_redbotcheck.py URL [NAME: VALUE ...]

The request carries the given header fields (``Accept-Encoding: gzip``);
REDbot then makes its own follow-up requests (If-None-Match and
If-Modified-Since for 304s, a Range, a gzip negotiation) and reports on
each.  Run as a subprocess by ``test_static_compress_socket.py``, because
REDbot drives its own event loop (thor).
"""

from __future__ import annotations

import json
import sys
from configparser import ConfigParser
from typing import Any


def main() -> None:
    import thor
    from redbot.resource import HttpResource

    url, *fields = sys.argv[1:]
    headers = [tuple(part.strip() for part in field.split(":", 1)) for field in fields]
    parser = ConfigParser()
    # The server under test listens on 127.0.0.1, which REDbot refuses
    # unless told otherwise.
    parser.read_dict({"redbot": {"enable_local_access": "True"}})
    resource: Any = HttpResource(parser["redbot"])
    resource.set_request(url, headers=headers)

    @thor.events.on(resource)
    def check_done() -> None:
        thor.stop()

    resource.check()
    thor.schedule(30, thor.stop)  # bounded, whatever happens
    thor.run()
    out = []
    sources = [("main", resource)] + [
        (name, subrequest) for name, subrequest in resource.subreqs.items()
    ]
    for where, fetched in sources:
        if not getattr(fetched, "fetch_started", False):
            continue
        for note in fetched.response.notes:
            out.append(
                {
                    "where": where,
                    "status": fetched.response.status_code,
                    "level": note.level.name,
                    "id": note.__class__.__name__,
                    "summary": note.summary,
                }
            )
    print(json.dumps({"done": resource.check_done, "notes": out}))


if __name__ == "__main__":
    main()
