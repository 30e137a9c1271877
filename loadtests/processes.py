"""Server processes started for one run: the API server and Celery, each in a session of its own.

Shared by the benchmark (loadtests/stack.py) and the tests that cross processes
(tests/live.py). Every process logs to `<log_dir>/<name>.log` and is stopped by its
process group id, never by name, so nothing else on the machine is touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
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


class ProcessGroup:
    """Named subprocesses of the project, started from its root with `env`."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(
        self, name: str, args: list[str], env: dict | None = None, cwd: Path | None = None
    ) -> subprocess.Popen:
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

    def start_api_server(
        self,
        name: str,
        *,
        port: int,
        workers: int = 2,
        env: dict | None = None,
        app: str = "core.wsgi:application",
        health_path: str = "/health/",
        cwd: Path | None = None,
    ) -> str:
        """The API server as production runs it (`python -m core.serve`); return its base URL
        once `health_path` answers. `app` may name another WSGI app (the bare reference)."""
        self.start(
            name,
            [
                sys.executable,
                "-m",
                "core.serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--app",
                app,
            ],
            env,
            cwd=cwd,
        )
        base_url = f"http://127.0.0.1:{port}"
        self.wait_until(lambda: answers(base_url + health_path), f"{name} to answer")
        return base_url

    def start_celery_worker(
        self,
        name: str,
        *,
        concurrency: int = 2,
        extra_args: tuple[str, ...] = (),
        env: dict | None = None,
    ):
        """A prefork Celery worker; return once its `concurrency` pool processes exist."""
        process = self.start(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "workers",
                "worker",
                "--loglevel=WARNING",
                f"--concurrency={concurrency}",
                f"--hostname={name}@%h",
                "--without-gossip",
                "--without-mingle",
                *extra_args,
            ],
            env=env,
        )
        self.wait_until(lambda: len(self.children(name)) >= concurrency, f"{name} pool")
        return process

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
