"""A bare WSGI app answering a constant: the API server's own ceiling in the benchmark.

Served by the product's server configuration (`python -m core.serve --app
loadtests.bare:application`), so `requests/s of this app` is what the server costs
before any Django code runs.
"""

from __future__ import annotations

BODY = b'{"status":"ok"}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    """Answer every request 200 with a fixed JSON body."""
    start_response("200 OK", HEADERS)
    return [BODY]
