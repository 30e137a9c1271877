"""Engines of a run's own: a throwaway Redis Cluster and a RabbitMQ virtual host.

Used by the tests (tests/conftest.py `redis_cluster`, `rabbitmq_url`) and the benchmark's
scale-out section. The cluster has three primaries, no replicas, on free ports in a temp
dir. Nothing is persisted (`--save ""`, no AOF), so a node restarted after a kill
comes back empty, as one without persistence does. `cluster-require-full-coverage no`
keeps the other nodes serving their slots while one is down: the product's answer for
the lost slots is a 503, not a cluster-wide stop.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import redis


def _cluster_port() -> int:
    """A free port P with P + 10000 free too (the node's cluster bus), P <= 55535."""
    while True:
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


class RedisClusterNodes:
    def __init__(self, nodes: int = 3):
        self.dir = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        self.ports = [_cluster_port() for _ in range(nodes)]
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """REDIS_URL for the product: any one node; the client discovers the others."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def _start_node(self, port: int) -> None:
        self.processes[port] = subprocess.Popen(
            [
                "redis-server",
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.dir / f"nodes-{port}.conf"),
                "--cluster-node-timeout", "1000",
                "--cluster-require-full-coverage", "no",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.dir),
                "--logfile", str(self.dir / f"{port}.log"),
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def start(self) -> RedisClusterNodes:
        try:
            self._create()
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        for port in self.ports:
            self._start_node(port)
        subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        self.wait_ok()

    def wait_ok(self, timeout: float = 20) -> None:
        """Wait until every live node says cluster_state:ok."""
        deadline = time.monotonic() + timeout
        while True:
            states = [
                redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
                .cluster("info")
                .get("cluster_state")
                for port, process in self.processes.items()
                if process.poll() is None
            ]
            if states and set(states) == {"ok"}:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster not ok: {self.dir}")
            time.sleep(0.1)

    def port_of(self, node_name: str) -> int:
        return int(node_name.rsplit(":", 1)[1])

    def kill(self, port: int) -> None:
        """SIGKILL one node (no replica takes over: its slots are gone until it returns)."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def restart(self, port: int) -> None:
        """Start a killed node again, empty, with its old identity and slots."""
        self._start_node(port)
        self.wait_ok()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def rabbitmq_vhost(name: str):
    """Yield a broker URL on vhost `name` (127.0.0.1:5672, guest/guest), created now and
    deleted with its queues after. Without rabbitmqctl here (RabbitMQ elsewhere): the
    default vhost."""
    ctl = shutil.which("rabbitmqctl")
    made = (
        bool(ctl) and subprocess.run([ctl, "add_vhost", name], capture_output=True).returncode == 0
    )
    if made:
        subprocess.run([ctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*"], check=True,
                       capture_output=True)  # fmt: skip
    try:
        yield "amqp://guest:guest@127.0.0.1:5672/" + (name if made else "")
    finally:
        if made:
            subprocess.run([ctl, "delete_vhost", name], capture_output=True)
