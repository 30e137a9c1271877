"""Real processes for tests that cross them: the API server (granian), Celery workers and beat.

The processes use the test database pytest-django created and the test Redis database,
listen on a free port, and are stopped (with their children) when the test ends.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

from loadtests.processes import BIN, ProcessGroup, free_port  # noqa: F401 (free_port: re-exported)


def _database_url() -> str:
    db = connection.settings_dict
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


class LiveStack(ProcessGroup):
    """API server + Celery worker(s) (+ beat) against the test database."""

    def __init__(self, tmp_path: Path, *, env: dict[str, str] | None = None):
        super().__init__(
            {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "tests.settings",
                "DATABASE_URL": _database_url(),
                "REDIS_URL": settings.REDIS_URL,
                "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
                "PYTHONUNBUFFERED": "1",
                "LOG_LEVEL": "WARNING",
                **(env or {}),
            },
            tmp_path,
        )
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"

    def start_api(self, workers: int = 2, env: dict | None = None) -> None:
        self.start_api_server("api", port=self.port, workers=workers, env=env)

    def start_worker(self, name: str = "worker", concurrency: int = 2):
        return self.start_celery_worker(name, concurrency=concurrency)

    def start_beat(self, name: str = "beat"):
        return self.start(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "workers",
                "beat",
                "--loglevel=WARNING",
                "--schedule",
                str(self.log_dir / f"{name}-schedule"),
            ],
        )


def token(base_url: str, username: str, password: str) -> str:
    response = requests.post(
        f"{base_url}/login/", json={"username": username, "password": password}, timeout=10
    )
    response.raise_for_status()
    return response.json()["access"]


def fire(
    base_url: str,
    requests_: list[tuple[str, dict, dict]],
    *,
    concurrency: int,
) -> list[tuple[int, dict]]:
    """Send (path, json, headers) POSTs from `concurrency` threads; return (status, body)."""
    sessions: dict[int, requests.Session] = {}

    def send(item):
        import threading

        session = sessions.setdefault(threading.get_ident(), requests.Session())
        path, body, headers = item
        response = session.post(base_url + path, json=body, headers=headers, timeout=30)
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(send, requests_))
