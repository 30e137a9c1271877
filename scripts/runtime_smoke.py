"""Sell one ticket with nothing but the runtime pins, as production runs the product.

    scripts/runtime-smoke                 builds the virtualenv, then runs this with it
    DIR/bin/python scripts/runtime_smoke.py --venv DIR

Runs on the runtime virtualenv's own Python, so it can use nothing that
requirements.txt does not install (the standard library, and PyYAML to read
docker-compose.yml). It migrates a database of its own, starts the Procfile's `api:`,
`worker:` and `beat:` lines and Flower as docker-compose starts it, all with
DJANGO_DEBUG=0, and the `proxy:` line (the front door) when HAProxy is installed, then
walks one buyer's whole path over HTTP, through the front door if it runs: register, log
in, an Admin creates an event, purchase → 202 → poll until `confirmed`, the buyer page's
files, a waitlist turned on, `/ops/queues/`, `/metrics`.
It exits 0 only if every step answered as a client expects; otherwise it names the
failing step and prints the processes' logs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "ticketing_runtime_smoke"
REDIS_DB = 10  # this check's own Redis database (tests use 13, the load test 8)
SIGNUP_CODE = secrets.token_urlsafe(16)  # made per run: no credential lives in the repo


class SmokeError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_lines() -> dict[str, str]:
    """The Procfile's process lines by name, exactly as `make run` (honcho) runs them."""
    lines = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            lines[name.strip()] = command.strip()
    return lines


def haproxy_path() -> str | None:
    """HAProxy's executable, also where Debian puts it outside a user's PATH."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def compose_flower_command() -> list[str]:
    """Flower's command in docker-compose.yml (the image's PATH has the venv's bin)."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return list(services["flower"]["command"])


class Processes:
    """The product's processes, each in its own session, logs in one folder."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs, self.running = env, logs, {}

    def start(self, name: str, command: str | list[str], env: dict | None = None) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.running[name] = subprocess.Popen(
            command,
            shell=isinstance(command, str),
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise SmokeError(f"{name} exited with {process.returncode}")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.running.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class Client:
    """JSON over HTTP with urllib: the answer's status, headers and decoded body."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def call(self, method, path, body=None, token=None, headers=None, raw=False):
        request = urllib.request.Request(
            self.base_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, answer_headers, data = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, answer_headers, data = error.code, error.headers, error.read()
        if raw:
            return status, answer_headers, data.decode(errors="replace")
        return status, answer_headers, json.loads(data) if data else None

    def expect(self, step, status, method, path, **kwargs):
        got, headers, body = self.call(method, path, **kwargs)
        if got != status:
            raise SmokeError(f"{step}: {method} {path} answered {got}, not {status}: {body}")
        print(f"  ok  {step}: {method} {path} -> {got}")
        return headers, body


def wait_until(step: str, seconds: float, probe, processes: Processes):
    deadline = time.monotonic() + seconds
    while True:
        processes.check_alive()
        try:
            value = probe()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise SmokeError(f"{step}: not within {seconds:.0f} s")
        time.sleep(0.25)


def run_command(step: str, args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SmokeError(f"{step} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    print(f"  ok  {step}")


def environment(venv: Path, metrics_dir: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {
        **keep,
        "PATH": f"{venv / 'bin'}:{keep.get('PATH', '/usr/bin:/bin')}",
        "VENV": str(venv),  # the Procfile's lines run from ${VENV:-.venv}/bin
        "DJANGO_SETTINGS_MODULE": "core.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
        "REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "ADMIN_SIGNUP_CODE": SIGNUP_CODE,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONUNBUFFERED": "1",
        # Beat's refresh every 2 s instead of 30, so the check sees a periodic task run.
        "TOP_EVENTS_REFRESH_SECONDS": "2",
    }


def redis_flush_own_db(env: dict[str, str]) -> None:
    # FLUSHDB on this check's own database number only (never FLUSHALL).
    code = "import redis,os; redis.Redis.from_url(os.environ['REDIS_URL']).flushdb()"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)


def database_recreate(env: dict[str, str]) -> None:
    code = (
        "import psycopg\n"
        "with psycopg.connect('postgres://postgres@127.0.0.1:5432/postgres',"
        " autocommit=True) as c:\n"
        f"    c.execute('DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)')\n"
        f"    c.execute('CREATE DATABASE {DATABASE}')\n"
    )
    run_command("database created", [sys.executable, "-c", code], env)


def buyer_path(client: Client, processes: Processes) -> None:
    suffix = uuid.uuid4().hex[:8]
    password = secrets.token_urlsafe(16)
    admin = {"username": f"admin{suffix}", "password": password}
    buyer = {"username": f"buyer{suffix}", "password": password}
    client.expect("register an Admin", 201, "POST", "/register/",
                  body={**admin, "role": "Admin", "admin_code": SIGNUP_CODE})  # fmt: skip
    client.expect("register a buyer", 201, "POST", "/register/", body=buyer)
    _, tokens = client.expect("Admin logs in", 200, "POST", "/login/", body=admin)
    admin_token = tokens["access"]
    _, tokens = client.expect("buyer logs in", 200, "POST", "/login/", body=buyer)
    buyer_token = tokens["access"]
    now = datetime.now(UTC)
    event = {
        "name": "Runtime smoke " + suffix,
        "date": (now + timedelta(days=30)).isoformat(),
        "total_tickets": 10,
        "sale_starts_at": (now - timedelta(minutes=1)).isoformat(),
    }
    _, created = client.expect(
        "Admin creates an event", 201, "POST", "/events/", body=event, token=admin_token
    )
    headers, order = client.expect(
        "purchase accepted",
        202,
        "POST",
        f"/events/{created['id']}/purchase/",
        body={"quantity": 2},
        token=buyer_token,
        headers={"Idempotency-Key": "smoke-" + suffix},
    )
    location = headers["Location"]

    def confirmed():
        status, _, body = client.call("GET", location, token=buyer_token)
        if status != 200 or body["status"] == "rejected":
            raise SmokeError(f"order poll: {status} {body}")
        return body["status"] == "confirmed"

    wait_until("order confirmed", 60, confirmed, processes)
    print(f"  ok  order {order['id']} confirmed: GET {location}")
    page_and_waitlist(client, event_id=created["id"], admin_token=admin_token)

    def worker_seen():
        _, body = client.expect("ops queues", 200, "GET", "/ops/queues/", token=admin_token)
        return body.get("workers")

    wait_until("a live worker in /ops/queues/", 30, worker_seen, processes)
    status, _, text = client.call("GET", "/metrics", raw=True)
    if status != 200 or "orders_committed_total" not in text:
        raise SmokeError(f"/metrics answered {status} without orders_committed_total")
    print("  ok  /metrics -> 200 with orders_committed_total")


def page_and_waitlist(client: Client, *, event_id: int, admin_token: str) -> None:
    """The reference buyer page's files are served, and an Admin can turn a waitlist on."""
    for path, marker in ((f"/buyer/?event={event_id}", "buyer.js"), ("/buyer/buyer.js", "fetch(")):
        status, _, text = client.call("GET", path, raw=True)
        if status != 200 or marker not in text:
            raise SmokeError(f"the buyer page: GET {path} answered {status} without {marker!r}")
        print(f"  ok  the buyer page: GET {path} -> 200")
    client.expect("Admin turns a waitlist on", 200, "PUT", f"/events/{event_id}/waitlist/",
                  body={"offer_seconds": 600}, token=admin_token)  # fmt: skip


def _refreshes(client: Client) -> float:
    _, _, text = client.call("GET", "/metrics", raw=True)
    for line in text.splitlines():
        if line.startswith("top_events_refresh_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, required=True, help="the runtime virtualenv")
    venv = parser.parse_args(argv).venv.resolve()
    logs = Path(tempfile.mkdtemp(prefix="runtime-smoke-"))
    metrics_dir = logs / "metrics"
    metrics_dir.mkdir()
    env = environment(venv, metrics_dir)
    api_port, flower_port = free_port(), free_port()
    processes = Processes(env, logs)
    started = time.monotonic()
    try:
        database_recreate(env)
        redis_flush_own_db(env)
        run_command("migrate", [str(venv / "bin/python"), "manage.py", "migrate", "--noinput"], env)
        lines = procfile_lines()
        haproxy = haproxy_path()
        # Behind the front door the API believes X-Forwarded-For from its address only.
        door = {"DJANGO_TRUSTED_PROXY_ADDRESSES": "127.0.0.2"} if haproxy else {}
        processes.start("api", lines["api"], {"API_BIND": f"127.0.0.1:{api_port}", **door})
        base_url = f"http://127.0.0.1:{api_port}"
        if haproxy:
            door_port, door_metrics_port = free_port(), free_port()
            door_env = {
                "HAPROXY": haproxy,
                "HAPROXY_BIND": f"127.0.0.1:{door_port}",
                "HAPROXY_API_ADDRESS": f"127.0.0.1:{api_port}",
                "HAPROXY_METRICS_BIND": f"127.0.0.1:{door_metrics_port}",
            }
            processes.start("proxy", lines["proxy"], door_env)
            base_url = f"http://127.0.0.1:{door_port}"
        else:
            print("  --  no HAProxy: the buyer's path goes to the API directly")
        processes.start("worker", lines["worker"])
        processes.start("beat", lines["beat"].replace("/tmp/", f"{logs}/"))
        flower = [str(venv / "bin" / compose_flower_command()[0]), *compose_flower_command()[1:]]
        flower = [
            arg if not arg.startswith("--port=") else f"--port={flower_port}" for arg in flower
        ]
        processes.start("flower", flower + ["--address=127.0.0.1"])
        client = Client(base_url)
        wait_until("API answers /health/", 60, lambda: client.call("GET", "/health/")[0] == 200,
                   processes)  # fmt: skip
        buyer_path(client, processes)
        if haproxy:
            door_metrics = Client(f"http://127.0.0.1:{door_metrics_port}")
            status, _, text = door_metrics.call("GET", "/metrics", raw=True)
            if (
                status != 200
                or 'haproxy_backend_http_responses_total{proxy="api",code="2xx"}' not in text
            ):
                raise SmokeError(
                    f"the front door's /metrics answered {status} without its counters"
                )
            print(f"  ok  the buyer's path went through the front door (HAProxy) on :{door_port}")
        # Beat logs its sends at DEBUG (workers/celery.py): a refresh counted in /metrics
        # proves beat sent it and a worker ran it.
        wait_until("beat's periodic refresh ran", 30,
                   lambda: _refreshes(client) > 0, processes)  # fmt: skip
        print("  ok  beat's periodic top-events refresh ran (counted in /metrics)")
        flower_client = Client(f"http://127.0.0.1:{flower_port}")
        wait_until("Flower answers", 60,
                   lambda: flower_client.call("GET", "/healthcheck", raw=True)[0] == 200,
                   processes)  # fmt: skip
        print("  ok  Flower answers /healthcheck")
        processes.check_alive()
    except SmokeError as error:
        print(f"runtime smoke FAILED: {error}", file=sys.stderr)
        for name in processes.running:
            print(f"----- {name} log (last 40 lines) -----", file=sys.stderr)
            print("\n".join(processes.log(name).splitlines()[-40:]), file=sys.stderr)
        return 1
    finally:
        processes.stop()
    print(f"runtime smoke passed in {time.monotonic() - started:.1f} s (logs in {logs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
