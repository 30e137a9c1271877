"""The load tools' stack: one environment, a database and Redis DB of their own, meters.

Every tool calls `stack_prepare`: it recreates the tool's database, flushes its Redis
database number (FLUSHDB of that number only), sets up Django in this process and returns
a `tests.live.Stack`, the processes starter the live tests use too. Meters read CPU and
memory of those processes (psutil) and lock waits of the database (pg_stat_activity).
"""

from __future__ import annotations

import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

import psutil
import psycopg
import redis

from tests.live import ROOT, Stack, free_port  # noqa: F401 (re-exported for the tools)


def environment(database: str, redis_db: int, metrics_dir: Path, *, fast_hashers: bool) -> dict:
    """Production settings for every process of a run, with the rate limits raised so they
    do not decide the result. A signing key made for the run: its tokens die with it.
    `fast_hashers`: MD5 passwords, so that logging buyers in before a measurement does not
    cost minutes of PBKDF2 on 2 cores (off when logins are what is measured)."""
    url = f"redis://127.0.0.1:6379/{redis_db}"
    env = {
        "DJANGO_SETTINGS_MODULE": "core.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "REDIS_URL": url,
        "CELERY_BROKER_URL": url,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "THROTTLE_PURCHASE_RATE": "1000000/min",
        "THROTTLE_LOGIN_RATE": "1000000/min",
        "THROTTLE_REGISTER_RATE": "1000000/min",
        "LOG_LEVEL": "WARNING",
        "JWT_ACCESS_LIFETIME_SECONDS": "7200",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),  # as `make run`: metrics through files
        "PYTHONUNBUFFERED": "1",
    }
    if fast_hashers:
        env["DJANGO_PASSWORD_HASHERS"] = "django.contrib.auth.hashers.MD5PasswordHasher"
    return env


def _admin(sql: str) -> None:
    with psycopg.connect(
        host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True
    ) as c:
        c.execute(sql)


def database_drop(name: str) -> None:
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def stack_prepare(
    database: str, redis_db: int, work_dir: Path | None = None, *, fast_hashers: bool = True
) -> Stack:
    """Recreate `database`, flush `redis_db`, configure and migrate Django in this process;
    return a Stack whose processes share this environment (logs in `work_dir`)."""
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix=f"{database}-"))
    (work_dir / "metrics").mkdir(parents=True, exist_ok=True)
    env = environment(database, redis_db, work_dir / "metrics", fast_hashers=fast_hashers)
    os.environ.update(env)
    database_drop(database)
    _admin(f"CREATE DATABASE {database}")
    redis_flush()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return Stack(dict(os.environ), work_dir)


def stack_teardown(stack: Stack, database: str, *, keep_db: bool = False) -> None:
    """Stop the stack's processes; drop its database and flush its Redis DB unless `keep_db`."""
    stack.stop_all()
    if not keep_db:
        from django.db import connections

        connections.close_all()
        database_drop(database)
        redis_flush()


def redis_flush() -> None:
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()  # this DB number only, never FLUSHALL


def busy_cores_before(what: str) -> float:
    """Cores already busy for a second before `what` starts; warn when the machine is not idle."""
    busy = psutil.cpu_percent(interval=1.0) * (os.cpu_count() or 1) / 100
    if busy > 0.3:
        print(
            f"WARNING: the machine is already busy ({busy:.1f} cores) before the {what}: "
            "figures will be lower and noisier (see the `other` CPU figures)",
            flush=True,
        )
    return round(busy, 2)


class Meter(threading.Thread):
    """Peak RSS of every stack process, and CPU time by role: api, worker (the Stack's
    processes and their children), postgres and redis (servers by name, read only),
    loadgen (every process of `loadgen`, a Stack running Locust; an exited process keeps
    the last CPU time seen) and the whole machine. With `timeline`, a CPU snapshot is
    also kept every `timeline` seconds for `cores(start, stop)`."""

    def __init__(self, stack: Stack, loadgen: Stack | None = None, timeline: float = 0.0):
        super().__init__(daemon=True)
        self.stack, self.loadgen, self.timeline = stack, loadgen, timeline
        self.peak_rss: dict[int, dict] = {}  # pid -> {"name", "role", "pid", "rss_mb"}
        self.points: list[tuple[float, dict[str, float]]] = []
        self._loadgen_cpu: dict[int, float] = {}
        self._halt = threading.Event()
        self._cache: dict[int, psutil.Process] = {}

    def processes(self) -> list[tuple[str, str, psutil.Process]]:
        found = []
        for name, popen in list(self.stack.processes.items()):
            try:
                root = self._cache.setdefault(popen.pid, psutil.Process(popen.pid))
                kind = "celery" if "worker" in name else "api"
                found.append((f"{kind} master", name, root))
                found += [(f"{kind} child", name, child) for child in root.children()]
            except psutil.NoSuchProcess:
                continue
        return found

    def run(self) -> None:
        last = 0.0
        while not self._halt.wait(0.2):
            for role, name, process in self.processes():
                try:
                    rss = round(process.memory_info().rss / 2**20, 1)
                except psutil.NoSuchProcess:
                    continue
                entry = self.peak_rss.setdefault(
                    process.pid, {"name": name, "role": role, "pid": process.pid, "rss_mb": 0.0}
                )
                entry["rss_mb"] = max(entry["rss_mb"], rss)
            if self.timeline and time.time() - last >= self.timeline:
                last = time.time()
                self.points.append((last, self.cpu_snapshot()))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds so far, by role."""
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
            name = process.info["name"] or ""
            if name.startswith("postgres"):
                add("postgres", process)
            elif name.startswith("redis-server"):
                add("redis", process)
        for popen in list(self.loadgen.processes.values()) if self.loadgen else []:
            try:
                root = psutil.Process(popen.pid)
                for process in [root, *root.children(recursive=True)]:
                    times = process.cpu_times()
                    self._loadgen_cpu[process.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                continue
        if self.loadgen:
            totals["loadgen"] = sum(self._loadgen_cpu.values())
        m = psutil.cpu_times()
        totals["machine"] = m.user + m.nice + m.system + m.irq + m.softirq + m.steal
        return totals

    def cores(self, start: float, stop: float) -> dict[str, float]:
        """Cores used per role between the timeline's snapshots that bracket [start, stop]."""
        before = [p for p in self.points if p[0] <= start] or self.points[:1]
        after = [p for p in self.points if p[0] >= stop] or self.points[-1:]
        if not before or not after or after[0][0] <= before[-1][0]:
            return {}
        (t0, first), (t1, last) = before[-1], after[0]
        return cpu_delta(first, last, t1 - t0)


def cpu_delta(before: dict[str, float], after: dict[str, float], seconds: float) -> dict:
    """Cores used per role over `seconds` (1.0 = one core busy all the time).

    "machine" is every process of the host; "other" what none of the roles explains
    (other work on the machine, short-lived processes): a large one means noise."""
    if seconds <= 0:
        return {}
    used = {
        role: round(max(0.0, after.get(role, 0.0) - before.get(role, 0.0)) / seconds, 2)
        for role in sorted(set(before) | set(after))
    }
    known = sum(v for k, v in used.items() if k != "machine")
    used["other"] = round(max(0.0, used.get("machine", 0.0) - known), 2)
    return used


class LockSampler(threading.Thread):
    """Count PostgreSQL backends of `database` waiting on a lock (pg_stat_activity)."""

    QUERY = """
        SELECT wait_event, left(regexp_replace(query, '\\s+', ' ', 'g'), 60)
        FROM pg_stat_activity
        WHERE datname = %s AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()
    """

    def __init__(self, database: str, interval: float = 0.1):
        super().__init__(daemon=True)
        self.database, self.interval = database, interval
        self.times: list[float] = []
        self.waiting: list[int] = []
        self.by_query: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(
            host="127.0.0.1", user="postgres", dbname=self.database, autocommit=True
        ) as conn:
            while not self._halt.wait(self.interval):
                rows = conn.execute(self.QUERY, [self.database]).fetchall()
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
            "samples": len(self.waiting),
            "share_of_samples_with_waiters": round(sum(1 for n in waiting if n) / len(waiting), 3),
            "max_waiting_backends": max(waiting),
            "mean_waiting_backends": round(sum(waiting) / len(waiting), 2),
            "top_waits": dict(sorted(self.by_query.items(), key=lambda kv: -kv[1])[:5]),
            "_timeline": {"t": self.times, "waiting": self.waiting},
        }
