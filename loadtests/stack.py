"""The benchmark's own stack: database, Redis DB, API server and Celery subprocesses, meters.

Everything here is private to the benchmark: a database of its own (dropped and
recreated), a Redis database number of its own (FLUSHDB of that number only), servers
on free loopback ports. Processes are started in their own session and stopped by
process group id, never by name.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import psycopg
import redis

from loadtests.processes import BIN, ROOT, ProcessGroup, answers, free_port  # noqa: F401 (re-exported)

# Two benchmarks on one machine (say, two checkouts) are kept apart with these.
DB_NAME = os.environ.get("BENCH_DATABASE_NAME", "bench_ticketing")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "10"))
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"


def bench_env(metrics_dir: str) -> dict[str, str]:
    """Environment of every process of the run (the orchestrator's own included)."""
    return {
        "DJANGO_SETTINGS_MODULE": "core.settings",
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "DJANGO_SECRET_KEY": "bench-secret-key-not-for-production-0123456789abcdef",
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "THROTTLE_PURCHASE_RATE": "1000000/min",
        "THROTTLE_LOGIN_RATE": "1000000/min",
        "THROTTLE_REGISTER_RATE": "1000000/min",
        "LOG_LEVEL": "WARNING",
        # Logins happen before the measurements; PBKDF2's 1M iterations would make the
        # preparation of a few hundred buyers take minutes of CPU on 2 cores.
        "DJANGO_PASSWORD_HASHERS": "django.contrib.auth.hashers.MD5PasswordHasher",
        "JWT_ACCESS_LIFETIME_SECONDS": "7200",
        # As `make run` and docker-compose: metrics shared through files.
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        "PYTHONUNBUFFERED": "1",
    }


def busy_cores_before(what: str) -> float:
    """Cores already busy for a second before `what` starts; warn when the machine is not idle."""
    busy = psutil.cpu_percent(interval=1.0) * (os.cpu_count() or 1) / 100
    if busy > 0.3:
        print(
            f"WARNING: the machine is already busy ({busy:.1f} cores) before the {what}: "
            "figures will be lower and noisier (see the `other` CPU figures)",
            flush=True,
        )
    return busy


def database_recreate(name: str = DB_NAME) -> None:
    """Drop (with its connections) and create a database of the load tools' own."""
    with psycopg.connect(
        host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")


def database_drop(name: str = DB_NAME) -> None:
    with psycopg.connect(
        host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def redis_flush() -> None:
    redis.Redis.from_url(REDIS_URL).flushdb()  # this DB number only, never FLUSHALL


class Stack(ProcessGroup):
    """API server and Celery processes of the benchmark, with their logs in `log_dir`."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        super().__init__({**os.environ, **env}, log_dir)

    def start_api(
        self,
        name: str,
        *,
        port: int,
        workers: int = 2,
        settings: str | None = None,
        app: str = "core.wsgi:application",
        health_path: str = "/health/",
    ) -> str:
        """Start the API server as production does (core.serve); return its base URL.

        `app` may name another WSGI app served the same way (the bare reference)."""
        env = {"DJANGO_SETTINGS_MODULE": settings} if settings else None
        return self.start_api_server(
            name, port=port, workers=workers, env=env, app=app, health_path=health_path
        )

    def start_baseline_api(self, name: str, *, tree: Path, port: int, workers: int = 2) -> str:
        """Start the API of an older commit checked out in `tree` with that commit's own server.

        The commits this is used for (df71965) served with gunicorn and gunicorn.conf.py; the
        process runs from `tree`, so `core`, `api` and `workers` are imported from there, on
        this stack's database, Redis DB and signing key (the same tokens work)."""
        metrics = self.log_dir / f"metrics-{name}"  # its metric files apart from the current API's
        metrics.mkdir(exist_ok=True)
        self.start(
            name,
            [
                str(BIN / "gunicorn"),
                "core.wsgi:application",
                "--config",
                "gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
            ],
            {"PROMETHEUS_MULTIPROC_DIR": str(metrics)},
            cwd=tree,
        )
        base_url = f"http://127.0.0.1:{port}"
        self.wait_until(lambda: answers(base_url + "/health/"), f"{name} to answer")
        return base_url

    def start_worker(
        self, name: str, *, concurrency: int, env: dict | None = None
    ) -> subprocess.Popen:
        """Start a Celery worker (prefork, `concurrency` processes) on every queue."""
        return self.start_celery_worker(
            name,
            concurrency=concurrency,
            extra_args=("--without-heartbeat", "-Q", "purchases,default"),
            env=env,
        )


class Meter(threading.Thread):
    """Sample peak RSS of every stack process, and CPU time of everything that matters.

    Roles: the processes started by the Stack (and their children) under their own
    names; PostgreSQL and Redis servers by name (read only); the load generator.
    """

    def __init__(self, stack: Stack, interval: float = 0.2):
        super().__init__(daemon=True)
        self.stack, self.interval = stack, interval
        self.peak_rss: dict[int, dict] = {}  # pid -> {"role", "name", "rss_mb"}
        self.extra: dict[str, int] = {}  # role -> pid (load generators)
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._cache: dict[int, psutil.Process] = {}

    def processes(self) -> list[tuple[str, str, psutil.Process]]:
        found = []
        for name, popen in list(self.stack.processes.items()):
            try:
                root = self._proc(popen.pid)
                kind = "celery" if "worker" in name else "api"
                found.append((f"{kind} master", name, root))
                found += [(f"{kind} child", name, self._proc(c.pid)) for c in root.children()]
            except psutil.NoSuchProcess:
                continue
        return found

    def _proc(self, pid: int) -> psutil.Process:
        if pid not in self._cache:
            self._cache[pid] = psutil.Process(pid)
        return self._cache[pid]

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            for role, name, process in self.processes():
                try:
                    rss = process.memory_info().rss / 2**20
                except psutil.NoSuchProcess:
                    continue
                with self._lock:
                    entry = self.peak_rss.setdefault(
                        process.pid, {"name": name, "role": role, "pid": process.pid, "rss_mb": 0.0}
                    )
                    entry["rss_mb"] = max(entry["rss_mb"], round(rss, 1))

    def stop(self) -> None:
        self._halt.set()

    def cpu_snapshot(self, loadgen_pid: int | None = None) -> dict[str, float]:
        """CPU seconds so far, by role: api, worker, postgres, redis, loadgen."""
        totals: dict[str, float] = {}

        def add(role, process):
            try:
                times = process.cpu_times()
                totals[role] = totals.get(role, 0.0) + times.user + times.system
            except psutil.NoSuchProcess:
                pass

        for role, _name, process in self.processes():
            add("worker" if role.startswith("celery") else "api", process)
        for process in psutil.process_iter(["name"]):
            pname = process.info["name"] or ""
            if pname.startswith("postgres"):
                add("postgres", process)
            elif pname.startswith("redis-server"):
                add("redis", process)
        if loadgen_pid:
            add("loadgen", psutil.Process(loadgen_pid))
        machine = psutil.cpu_times()
        totals["machine"] = (
            machine.user
            + machine.nice
            + machine.system
            + machine.irq
            + machine.softirq
            + machine.steal
        )
        return totals


def cpu_delta(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    """Cores used per role over `seconds` (1.0 = one core busy all the time).

    "machine" is every process of the host; "other" what none of the roles explains
    (other work on the machine, short-lived processes): a large one means noise.
    """
    if seconds <= 0:
        return {}
    used = {
        role: round(max(0.0, after.get(role, 0.0) - before.get(role, 0.0)) / seconds, 2)
        for role in sorted(set(before) | set(after))
    }
    known = sum(v for k, v in used.items() if k != "machine")
    used["other"] = round(max(0.0, used.get("machine", 0.0) - known), 2)
    return used


def tmp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def baseline_tree_add(commit: str) -> Path:
    """Check `commit` out in a temporary detached git worktree; return its directory."""
    tree = Path(tempfile.mkdtemp(prefix=f"bench-baseline-{commit}-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), commit],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return tree


def baseline_tree_remove(tree: Path) -> None:
    """Remove a worktree made by baseline_tree_add (and git's record of it)."""
    subprocess.run(
        ["git", "worktree", "remove", "--force", str(tree)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if tree.parent.exists():
        import shutil

        shutil.rmtree(tree.parent, ignore_errors=True)


class LockSampler(threading.Thread):
    """Count PostgreSQL backends of the benchmark database waiting on a lock (pg_stat_activity)."""

    QUERY = """
        SELECT wait_event, left(regexp_replace(query, '\\s+', ' ', 'g'), 60)
        FROM pg_stat_activity
        WHERE datname = %s AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()
    """

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples = 0
        self.times: list[float] = []
        self.waiting: list[int] = []
        self.by_query: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(
            host="127.0.0.1", user="postgres", dbname=DB_NAME, autocommit=True
        ) as conn:
            while not self._halt.wait(self.interval):
                rows = conn.execute(self.QUERY, [DB_NAME]).fetchall()
                self.samples += 1
                self.times.append(time.time())
                self.waiting.append(len(rows))
                for wait_event, query in rows:
                    key = f"{wait_event}: {query}"
                    self.by_query[key] = self.by_query.get(key, 0) + 1

    def stop(self) -> dict:
        self._halt.set()
        self.join(timeout=2)
        waiting = self.waiting or [0]
        return {
            "samples": self.samples,
            "share_of_samples_with_waiters": round(sum(1 for n in waiting if n) / len(waiting), 3),
            "max_waiting_backends": max(waiting),
            "mean_waiting_backends": round(sum(waiting) / len(waiting), 2),
            "top_waits": dict(sorted(self.by_query.items(), key=lambda kv: -kv[1])[:5]),
            "_timeline": {"t": self.times, "waiting": self.waiting},
        }
