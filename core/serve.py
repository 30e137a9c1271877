"""Start the API server: granian serving `core.wsgi:application`, set from the environment.

    python -m core.serve [--bind 127.0.0.1:8000] [--workers 2] [--app core.wsgi:application]

granian parses HTTP and keeps idle keep-alive connections in Rust, outside the GIL;
the Django code runs in one blocking thread per worker process, as a sync gunicorn
worker would run it. On 2 cores it serves a bare WSGI app at ~79,000 req/s against
gunicorn sync's ~3,700 and `GET /health/` at 3,700 against 2,560 (wrk, 64
connections; docs/benchmarks/report.md), so the server's own cost stops being a
large share of a cheap request.
"""

from __future__ import annotations

import argparse
import os

ACCESS_LOG_CONFIG = {
    "formatters": {
        "generic": {"()": "logging.Formatter", "fmt": "[%(levelname)s] %(message)s"},
        "access": {"()": "logging.Formatter", "fmt": "pid=%(process)d %(message)s"},
    },
}


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bind",
        default=os.environ.get("API_BIND", "127.0.0.1:8000"),
        help="host:port (env API_BIND)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=_env_int("API_WORKERS", 2),
        help="worker processes, about one per core (env API_WORKERS)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=_env_int("API_BACKLOG", 2048),
        help="connections waiting to be accepted (env API_BACKLOG)",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        default=bool(os.environ.get("API_ACCESS_LOG")),
        help="log every request (env API_ACCESS_LOG)",
    )
    parser.add_argument(
        "--app", default="core.wsgi:application", help="the WSGI application to serve"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from granian import Granian
    from granian.constants import Interfaces

    opts = options(argv)
    host, _, port = opts.bind.rpartition(":")
    Granian(
        opts.app,
        address=host.strip("[]") or "127.0.0.1",
        port=int(port),
        interface=Interfaces.WSGI,
        workers=opts.workers,
        # One thread runs Django per process: more would only contend for the GIL.
        blocking_threads=1,
        backlog=opts.backlog,
        # A crashed worker comes back instead of leaving the API at half capacity.
        respawn_failed_workers=True,
        log_access=opts.access_log,
        # One line per request, led by the pid of the worker that served it.
        log_access_format="%(method)s %(path)s %(status)d %(addr)s %(dt_ms).1fms",
        log_dictconfig=ACCESS_LOG_CONFIG,
        process_name="ticketing-api",
    ).serve()


if __name__ == "__main__":
    main()
