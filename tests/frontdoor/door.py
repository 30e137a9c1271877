"""The front door (HAProxy with deploy/haproxy/haproxy.cfg) started for a test on free ports."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.live import Stack, free_port

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy")
# The address the door connects to the API from (the config's default), which the API
# is told to trust for X-Forwarded-For.
SOURCE = "127.0.0.2"

needs_haproxy = pytest.mark.skipif(
    HAPROXY is None,
    reason="HAProxy is not installed: scripts/system-packages installs it (.ci/run runs that)",
)


@dataclass(frozen=True)
class Door:
    base_url: str
    metrics_url: str


def door_environment(*, api_address: str, port: int, metrics_port: int, **extra: str) -> dict:
    """The variables deploy/haproxy/haproxy.cfg reads, as the Procfile's line passes them."""
    return {
        "HAPROXY_BIND": f"127.0.0.1:{port}",
        "HAPROXY_API_ADDRESS": api_address,
        "HAPROXY_METRICS_BIND": f"127.0.0.1:{metrics_port}",
        **extra,
    }


def start_door(group: Stack, *, api_address: str, name: str = "door", **extra) -> Door:
    """Start HAProxy in front of `api_address`; return once its exporter answers."""
    port, metrics_port = free_port(), free_port()
    env = door_environment(api_address=api_address, port=port, metrics_port=metrics_port, **extra)
    group.start(name, [HAPROXY, "-db", "-f", str(CONFIG)], env=env)
    door = Door(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics")

    def answers() -> bool:
        if not group.alive(name):
            raise RuntimeError(f"{name} exited:\n{group.log(name)}")
        try:
            return requests.get(door.metrics_url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    group.wait_until(answers, f"{name} to answer", timeout=20)
    return door


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of HAProxy's exporter output."""
    want = ",".join(f'{key}="{value}"' for key, value in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(f"{name}{{{want}}}")
