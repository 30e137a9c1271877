"""Locust load test of the flash-sale API: buyers, browsers and an Admin.

Start the stack (`make run`, or gunicorn + a Celery worker with high throttle rates:
THROTTLE_PURCHASE_RATE=1000000/min THROTTLE_LOGIN_RATE=1000000/min), then, with the
same DATABASE_URL / REDIS_URL in the environment as the server:

    locust -f loadtests/locustfile.py --headless -u 100 -r 50 --run-time 30s \\
        --csv /tmp/locust --html /tmp/locust.html

Before the swarm, the `test_start` hook runs `python -m loadtests.prepare` (buyers with
one shared password hash, one Admin, an event of --tickets tickets, written to a JSON
file); pass `--credentials FILE` to reuse a file made beforehand (necessary with
distributed workers). Each user logs in once in on_start and reuses its token. Logins
cost the server one password check each (PBKDF2 by default: tens of ms of CPU), so the
first seconds of a run measure logins; `-r` spreads them.

Options of this file: --tickets (10000), --buyers (200), --credentials FILE,
--max-requests (200000: the run stops there, whatever --run-time says),
--max-seconds (600: a headless run without --run-time stops there). Purchases are
reported by outcome (`purchase accepted`, `purchase sold_out`, ...), polls as
`/orders/[id]/`; a 409 refusal is a valid answer, not a failure.

The host defaults to http://127.0.0.1:8000; all traffic must stay on this machine.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, between, events, task
from locust.runners import WorkerRunner

HOST = "http://127.0.0.1:8000"
ROOT = Path(__file__).resolve().parent.parent
REFUSALS = {"sold_out", "insufficient_tickets", "limit_exceeded", "sale_not_open"}
POLL_TIMEOUT_SECONDS = 120

PREPARED: dict = {}
_ENV: dict = {}
_buyers: itertools.cycle | None = None
_requests = 0


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--tickets", type=int, default=10_000, help="tickets of the prepared event")
    parser.add_argument("--buyers", type=int, default=200, help="buyers to prepare")
    parser.add_argument("--credentials", default="", help="prepared JSON (python -m loadtests.prepare --out)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop after this many requests")
    parser.add_argument("--max-seconds", type=float, default=600, help="stop after this long in any case")


@events.test_start.add_listener
def _prepare(environment, **kwargs) -> None:
    """Prepare (or load) buyers and the event once, before any user starts."""
    options = environment.parsed_options
    path = Path(options.credentials) if options.credentials else None
    if path is None:
        if isinstance(environment.runner, WorkerRunner):
            raise RuntimeError("distributed workers need --credentials FILE made beforehand")
        path = Path(tempfile.gettempdir()) / f"loadtest-credentials-{os.getpid()}.json"
        subprocess.run(
            [sys.executable, "-m", "loadtests.prepare", "--buyers", str(options.buyers),
             "--tickets", str(options.tickets), "--out", str(path)],
            cwd=ROOT, check=True,
        )
    PREPARED.clear()
    PREPARED.update(json.loads(path.read_text()))
    global _buyers
    _buyers = itertools.cycle(PREPARED["buyers"])
    if not isinstance(environment.runner, WorkerRunner):
        gevent.spawn_later(options.max_seconds, _stop, environment, "--max-seconds reached")


@events.init.add_listener
def _remember(environment, **kwargs) -> None:
    _ENV["environment"] = environment


@events.request.add_listener
def _count(**kwargs) -> None:
    global _requests
    _requests += 1
    environment = _ENV.get("environment")
    if environment is not None and _requests == environment.parsed_options.max_requests:
        gevent.spawn(_stop, environment, "--max-requests reached")


def _stop(environment, why: str) -> None:
    if environment.runner is not None and not isinstance(environment.runner, WorkerRunner):
        print(f"stopping: {why}", flush=True)
        environment.runner.quit()


class _Authenticated(FastHttpUser):
    abstract = True
    host = HOST
    username = ""

    def on_start(self) -> None:
        self.auth = {}
        self.login()

    def login(self) -> None:
        """Log in once (again only if the server refuses the token)."""
        response = self.client.post("/login/", json={"username": self.username, "password": PREPARED["password"]})
        if response.status_code != 200:
            raise RuntimeError(f"login of {self.username} failed: {response.status_code} {response.text}")
        self.auth = {"Authorization": f"Bearer {response.json()['access']}"}

    @property
    def event_id(self) -> int:
        return PREPARED["event_id"]


class Buyer(_Authenticated):
    """Buys 1-4 tickets of the sale, then polls the order until it is final."""

    weight = 8
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.username = next(_buyers)
        super().on_start()

    @task
    def buy(self) -> None:
        with self.client.post(
            f"/events/{self.event_id}/purchase/", json={"quantity": random.randint(1, 4)},
            headers=self.auth, catch_response=True,
        ) as response:
            code = _code(response)
            outcome = "accepted" if response.status_code == 202 else code or response.status_code
            response.request_meta["name"] = f"purchase {outcome}"
            if response.status_code == 202:
                location = response.headers["Location"]
                retry_after = float(response.headers.get("Retry-After", "1"))
                response.success()
            elif response.status_code == 409 and code in REFUSALS:
                response.success()  # a refusal is a correct answer during a flash sale
                return
            else:
                if response.status_code == 401:
                    self.login()
                response.failure(f"{response.status_code} {code}")
                return
        self.poll(location, retry_after)

    def poll(self, location: str, retry_after: float) -> None:
        deadline = time.monotonic() + POLL_TIMEOUT_SECONDS
        while True:
            gevent.sleep(retry_after)
            with self.client.get(location, headers=self.auth, name="/orders/[id]/", catch_response=True) as response:
                if response.status_code != 200:
                    response.failure(f"{response.status_code} {_code(response)}")
                    return
                if response.json()["status"] != "pending":
                    return
                retry_after = float(response.headers.get("Retry-After", "1"))
                if time.monotonic() > deadline:
                    response.failure(f"still pending after {POLL_TIMEOUT_SECONDS} s")
                    return


class Browser(_Authenticated):
    """Lists events and reads the one on sale (any logged-in caller may)."""

    weight = 3
    wait_time = between(0.5, 2)

    def on_start(self) -> None:
        self.username = next(_buyers)
        super().on_start()

    @task(1)
    def list_events(self) -> None:
        self.client.get("/events/?when=upcoming", headers=self.auth, name="/events/")

    @task(3)
    def read_event(self) -> None:
        self.client.get(f"/events/{self.event_id}/", headers=self.auth, name="/events/[id]/")


class Admin(_Authenticated):
    """Watches the queues and the sale's pending orders, as an operator would."""

    weight = 1
    fixed_count = 1
    wait_time = between(2, 5)

    def on_start(self) -> None:
        self.username = PREPARED["admins"][0]
        super().on_start()

    @task
    def queues(self) -> None:
        self.client.get("/ops/queues/", headers=self.auth, name="/ops/queues/")

    @task
    def pending_orders(self) -> None:
        self.client.get(f"/orders/?event={self.event_id}&status=pending", headers=self.auth, name="/orders/?event")


def _code(response) -> str | None:
    try:
        return response.json().get("code")
    except Exception:  # a non-JSON body (proxy error page): report the status instead
        return None

