"""Driving one load generator process (loadtests.loadgen) from the orchestrator.

`drive` starts it, lets the scenario create its event, runs it with a progress bar,
and meters what the run cost: CPU per role, PostgreSQL lock waits, optional profiles.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from tqdm import tqdm

from loadtests.analysis import Samples
from loadtests.profiling import Profiler
from loadtests.stack import ROOT, LockSampler, Meter, Stack, cpu_delta

PROFILED = ("accept", "sale")  # scenarios profiled with --profile


@dataclass
class Context:
    args: object
    stack: Stack
    meter: Meter
    api_url: str
    tokens: list[str]
    buyer_ids: list[int]
    work_dir: Path
    profiles: dict = field(default_factory=dict)
    busy_before: float = 0.0
    baseline_url: str | None = None  # the API of the --baseline commit, when one runs
    baseline_commit: str | None = None


def login_all(base_url: str, usernames: list[str], password: str) -> list[str]:
    """Log every buyer in once through POST /login/ (before any measurement)."""
    session = requests.Session()

    def login(username: str) -> str:
        response = session.post(
            f"{base_url}/login/", json={"username": username, "password": password}, timeout=30
        )
        response.raise_for_status()
        return response.json()["access"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(login, usernames))


class LoadGen:
    """The orchestrator's end of a `python -m loadtests.loadgen` process."""

    def __init__(self, spec: dict):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loadtests.loadgen"],
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._send(spec)
        if not json.loads(self.process.stdout.readline() or "{}").get("ready"):
            raise RuntimeError("load generator did not start")

    def _send(self, fields: dict) -> None:
        self.process.stdin.write(json.dumps(fields) + "\n")
        self.process.stdin.flush()

    def go(self, fields: dict) -> None:
        self._send(fields)

    def wait(self, bar: tqdm, key: str) -> dict:
        for line in self.process.stdout:
            message = json.loads(line)
            if message.get("done"):
                self.process.wait(timeout=30)
                return message
            bar.n = min(message[key], bar.total)
            bar.set_postfix(
                req=message["n"],
                tickets=message["qty"],
                sold_out=message["sold_out"],
                refresh=False,
            )
            bar.refresh()
        raise RuntimeError(f"load generator exited with {self.process.wait()}")


def drive(
    ctx: Context, label: str, spec: dict, setup, *, progress: str = "t", total: float | None = None
) -> dict:
    """Start a load generator, run `setup()` (-> go fields), measure the run; return raw results."""
    samples_path = ctx.work_dir / f"{label}.csv"
    spec = {
        "base_url": ctx.api_url,
        "tokens": ctx.tokens,
        "concurrency": ctx.args.concurrency,
        "max_requests": ctx.args.max_requests,
        "quantities": [1, 4],
        "seed": 7,
        "samples": str(samples_path),
        **spec,
    }
    generator = LoadGen(spec)
    go = setup()
    locks = LockSampler()
    locks.start()
    profiler = None
    if ctx.args.profile and label in PROFILED:
        profiler = Profiler(
            {
                "api": [p.pid for p in ctx.stack.children("api")],
                "worker": [p.pid for p in ctx.stack.children("worker")],
            },
            ctx.work_dir,
            label,
        )
    cpu_before, started = ctx.meter.cpu_snapshot(), time.monotonic()
    generator.go(go)
    try:
        done = _follow(generator, spec, label, progress, total)
    finally:
        if generator.process.poll() is None:  # we failed, not the generator: end it (our own pid)
            generator.process.kill()
        locks_figures = locks.stop()
    seconds = time.monotonic() - started
    cpu_after = ctx.meter.cpu_snapshot()
    cpu = cpu_delta(cpu_before, cpu_after, seconds)
    cpu["loadgen"] = round(done["cpu"] / seconds, 2)
    cpu["other"] = round(max(0.0, cpu["other"] - cpu["loadgen"]), 2)
    # Only the server under load does work while a scenario runs (the others idle), so the
    # `api` role's CPU over the requests served is that server's cost per request.
    api_seconds = cpu_after.get("api", 0.0) - cpu_before.get("api", 0.0)
    api_ms = round(api_seconds / done["n"] * 1000, 3) if done.get("n") else None
    if profiler:
        ctx.profiles[label] = profiler.stop()
    return {
        "done": done,
        "samples": Samples.load(samples_path),
        "cpu_cores": cpu,
        "api_cpu_ms_per_request": api_ms,
        "pg_lock_waits": locks_figures,
        "go": go,
    }


def _follow(generator: LoadGen, spec: dict, label: str, progress: str, total: float | None) -> dict:
    with tqdm(
        total=total or spec["max_seconds"],
        desc=f"{label:<12}",
        unit=progress == "t" and "s" or "tkt",
        bar_format="{desc} {percentage:3.0f}%|{bar:24}| {n:.0f}/{total:.0f} {unit} [{elapsed}] {postfix}",
        leave=True,
        file=sys.stdout,
    ) as bar:
        return generator.wait(bar, progress)
