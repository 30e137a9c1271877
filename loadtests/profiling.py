"""Wall-clock profiles of the server processes during a scenario (py-spy, `--profile`).

py-spy samples each gunicorn worker and Celery pool process from outside (no code
change, `--nonblocking` so the targets are never paused), idle frames included: the
question is usually "what is the request waiting for", not only "what burns CPU".
Raw collapsed stacks stay in the run's log directory; the summary (share of samples
per function, inclusive, for the project's code and the I/O waits) goes to --out.
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

FRAME = re.compile(r"(.*) \((.*?):\d+\)")
# Frames worth showing: the project's own code, and where a process waits or talks.
INTERESTING = (
    "(core/", "(api/", "(workers/", "Connection.wait (psycopg", "Connection.commit (psycopg",
    "Cursor.execute (psycopg", "Redis.execute_command", "Pipeline.execute", "Script.__call__",
    "Task.apply_async", "Producer.publish", "SyncWorker.wait", "close_graceful",
    "JWTAuthentication.authenticate (rest_framework_simplejwt", "QuerySet.first",
    "fast_trace_task", "Connection._recv (billiard",
)  # fmt: skip


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy record on the given processes until stop()."""

    def __init__(self, targets: dict[str, list[int]], raw_dir: Path, label: str):
        self.raw_dir, self.label = raw_dir, label
        self.files: dict[str, list[Path]] = {}
        self.processes: list[subprocess.Popen] = []
        binary = py_spy()
        if binary is None:
            print("py-spy not found: no profile", flush=True)
            return
        for role, pids in targets.items():
            for pid in pids:
                path = raw_dir / f"{label}-{role}-{pid}.txt"
                self.files.setdefault(role, []).append(path)
                command = [binary, "record", "--idle", "--nonblocking", "--format", "raw"]
                command += ["--rate", "200", "--pid", str(pid), "--output", str(path)]
                quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
                self.processes.append(subprocess.Popen(command, **quiet))

    def stop(self) -> dict[str, dict]:
        for process in self.processes:
            process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        return {
            role: summarize([p for p in paths if p.exists()]) for role, paths in self.files.items()
        }


def _name(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match.group(2).split("site-packages/")[-1].split("/work/main/")[-1]
    return f"{match.group(1)} ({path})"


def summarize(paths: list[Path], top: int = 30) -> dict:
    """Share of samples (%) per function, inclusive and at the leaf, over all `paths`."""
    inclusive, leaf, total = collections.Counter(), collections.Counter(), 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            names = [_name(f) for f in stack.split(";")]
            total += int(count)
            for name in set(names):
                inclusive[name] += int(count)
            leaf[names[-1]] += int(count)
    if not total:
        return {"samples": 0}

    def share(counter, keep):
        return {k: round(v * 100 / total, 1) for k, v in counter.most_common() if keep(k)}

    return {
        "samples": total,
        "inclusive_pct": dict(
            list(share(inclusive, lambda k: any(s in k for s in INTERESTING)).items())[:top]
        ),
        "leaf_pct": dict(list(share(leaf, lambda k: True).items())[:12]),
    }


def markdown(profiles: dict[str, dict], command: str) -> str:
    lines = [
        "# Wall-clock profiles (py-spy, idle included)",
        "",
        f"Command: `{command}`",
        "",
        "Share of samples of all processes of a role, while the scenario ran. "
        "`Connection.wait (psycopg/...)` is time waiting for PostgreSQL (locks included), "
        "`redis/...` for Redis, `SyncWorker.wait` idle between requests.",
        "",
    ]
    for label, roles in profiles.items():
        for role, summary in roles.items():
            if not summary.get("samples"):
                continue
            lines += [
                f"## {label} — {role} ({summary['samples']:,} samples)",
                "",
                "| inclusive % | function |",
                "|---:|---|",
            ]
            lines += [f"| {pct} | `{name}` |" for name, pct in summary["inclusive_pct"].items()]
            lines += ["", "| leaf % | function |", "|---:|---|"]
            lines += [f"| {pct} | `{name}` |" for name, pct in summary["leaf_pct"].items()]
            lines.append("")
    return "\n".join(lines) + "\n"
