"""Real processes: the API server (granian), Celery workers and beat, each in a session of its own.

The one way the project starts a stack outside `make run`: the live tests (`LiveStack`,
on the test database and Redis database) and the load tools (`Stack`, see
loadtests/stack.py) both start their processes here. Every process logs to
`<log_dir>/<name>.log`, listens on a free loopback port, and is stopped by its process
group id, never by name, so nothing else on the machine is touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    """True when `url` answers 200 within a second."""
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


class Stack:
    """Named subprocesses of the project, started from its root with `env`."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env, self.log_dir = env, log_dir
        self.processes: dict[str, subprocess.Popen] = {}
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"

    def start(self, name: str, args: list[str], env: dict | None = None, cwd: Path | None = None):
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                args,
                cwd=cwd or ROOT,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def start_api(
        self,
        name: str = "api",
        *,
        port: int | None = None,
        workers: int = 2,
        env: dict | None = None,
        app: str = "core.wsgi:application",
        health_path: str = "/health/",
    ) -> str:
        """The API server as production runs it (`python -m core.serve`) on `port` (the
        stack's own by default); return its base URL once `health_path` answers.
        `app` may name another WSGI app served the same way (the benchmark's bare app)."""
        port = port or self.port
        command = [sys.executable, "-m", "core.serve", "--bind", f"127.0.0.1:{port}"]
        self.start(name, [*command, "--workers", str(workers), "--app", app], env)
        base_url = f"http://127.0.0.1:{port}"
        self.wait_until(lambda: answers(base_url + health_path), f"{name} to answer")
        return base_url

    def start_worker(
        self, name: str = "worker", *, concurrency: int = 2, env: dict | None = None, args=()
    ):
        """A prefork Celery worker; return once its `concurrency` pool processes exist."""
        process = self.start(
            name,
            [str(BIN / "celery"), "-A", "workers", "worker", "--loglevel=WARNING",
             f"--concurrency={concurrency}", f"--hostname={name}@%h", "--without-gossip",
             "--without-mingle", *args],
            env,
        )  # fmt: skip
        self.wait_until(lambda: len(self.children(name)) >= concurrency, f"{name} pool")
        return process

    def start_beat(self, name: str = "beat"):
        schedule = str(self.log_dir / f"{name}-schedule")
        command = [str(BIN / "celery"), "-A", "workers", "beat", "--loglevel=WARNING"]
        return self.start(name, [*command, "--schedule", schedule])

    def children(self, name: str) -> list[psutil.Process]:
        try:
            return psutil.Process(self.processes[name].pid).children()
        except (psutil.NoSuchProcess, KeyError):
            return []

    def alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    @staticmethod
    def wait_until(predicate, what: str, timeout: float = 60.0, interval: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(interval)
        raise TimeoutError(f"timed out waiting for {what}")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Signal the process group; SIGKILL it if it has not exited within 20 s."""
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")


def _database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return f"postgres://{db.get('USER') or 'postgres'}{password}@{host}:{port}/{db['NAME']}"


class LiveStack(Stack):
    """A Stack on the test database pytest-django created and the test Redis database."""

    def __init__(self, tmp_path: Path, *, env: dict[str, str] | None = None):
        from django.conf import settings

        base = {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "WARNING",
        }
        super().__init__({**os.environ, **base, **(env or {})}, tmp_path)


def token(base_url: str, username: str, password: str) -> str:
    response = requests.post(
        f"{base_url}/login/", json={"username": username, "password": password}, timeout=10
    )
    response.raise_for_status()
    return response.json()["access"]


def fire(
    base_url: str, requests_: list[tuple[str, dict, dict]], *, concurrency: int
) -> list[tuple[int, dict]]:
    """Send (path, json, headers) POSTs from `concurrency` threads; return (status, body)."""
    sessions: dict[int, requests.Session] = {}

    def send(item):
        session = sessions.setdefault(threading.get_ident(), requests.Session())
        path, body, headers = item
        response = session.post(base_url + path, json=body, headers=headers, timeout=30)
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(send, requests_))
