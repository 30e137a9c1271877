"""Real processes for tests that cross them: gunicorn, Celery workers and beat.

The processes use the test database pytest-django created and the test Redis database,
listen on a free port, and are stopped (with their children) when the test ends.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url() -> str:
    db = connection.settings_dict
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


class LiveStack:
    """gunicorn + Celery worker(s) (+ beat) against the test database."""

    def __init__(self, tmp_path: Path, *, env: dict[str, str] | None = None):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "wb")
        process = subprocess.Popen(
            args, cwd=ROOT, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def start_api(self, workers: int = 2, env: dict | None = None) -> None:
        self._start(
            "api",
            [
                str(BIN / "gunicorn"), "core.wsgi:application", "--config", "gunicorn.conf.py",
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
            ],
            env,
        )
        self.wait_until(lambda: self._answers("/health/"), "gunicorn to answer")

    def start_worker(self, name: str = "worker", concurrency: int = 2) -> subprocess.Popen:
        process = self._start(
            name,
            [
                str(BIN / "celery"), "-A", "workers", "worker", "--loglevel=WARNING",
                f"--concurrency={concurrency}", f"--hostname={name}@%h", "--without-gossip",
                "--without-mingle",
            ],
        )
        self.wait_until(lambda: len(self.pool_children(name)) >= concurrency, f"{name} pool")
        return process

    def start_beat(self, name: str = "beat") -> subprocess.Popen:
        return self._start(
            name,
            [
                str(BIN / "celery"), "-A", "workers", "beat", "--loglevel=WARNING",
                "--schedule", str(self.tmp_path / f"{name}-schedule"),
            ],
        )

    def pool_children(self, name: str) -> list[psutil.Process]:
        try:
            return psutil.Process(self.processes[name].pid).children()
        except psutil.NoSuchProcess:
            return []

    def _answers(self, path: str) -> bool:
        try:
            return requests.get(self.base_url + path, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    @staticmethod
    def wait_until(predicate, what: str, timeout: float = 30.0, interval: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(interval)
        raise TimeoutError(f"timed out waiting for {what}")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")


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
