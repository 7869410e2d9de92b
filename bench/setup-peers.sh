#!/bin/sh
# Create bench/.venv-peers: one interpreter that runs connserver, twisted.web
# (with TLS), aiohttp, uvicorn (httptools + uvloop), gunicorn, Daphne and hypercorn for the side-by-side
# benchmarks.  Idempotent: re-running it upgrades nothing it need not.
#
#     sh bench/setup-peers.sh            # then:
#     bench/.venv-peers/bin/python bench/bench_request_path.py
#
# PYTHON=python3.12 sh bench/setup-peers.sh picks another interpreter.
set -eu
bench=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench")
venv="$bench/.venv-peers"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# Non-editable, so that the benchmarks measure an installed connserver
# built from the working tree as it is now; re-run after changing it.
"$venv/bin/python" -m pip install --quiet "$repo[asgi]" -r "$bench/requirements-peers.txt"
"$venv/bin/python" - <<'PY'
import aiohttp, connserver, daphne, gunicorn, httptools, hypercorn, twisted, uvicorn, uvloop
from twisted.internet import ssl  # noqa: F401  (twisted[tls])
print(
    f"ok: connserver, twisted {twisted.__version__}, aiohttp {aiohttp.__version__}, "
    f"uvicorn {uvicorn.__version__}, httptools {httptools.__version__}, "
    f"uvloop {uvloop.__version__}, gunicorn {gunicorn.__version__}, daphne {daphne.__version__}, hypercorn"
)
PY
