"""Locust load test of the flash-sale API: buyers, browsers and an Admin.

The one command (a production-mode stack, the flash-sale shape, reports): `make loadtest`
(python -m loadtests.run). By hand, against a stack started with throttles raised and the
same DATABASE_URL / REDIS_URL / DJANGO_SECRET_KEY in the environment as the server:

    locust -f loadtests/locustfile.py --headless --shape flash -u 64 --processes 2 \\
        --csv /tmp/locust --html /tmp/locust.html              # a flash sale
    locust -f loadtests/locustfile.py --headless -u 100 -r 50 --run-time 30s   # a ramp, mixed users

Before the swarm, the `test_start` hook runs `python -m loadtests.prepare` (buyers with
one shared password hash, one Admin, an event of --tickets tickets on sale now, and an
access token per user minted as /login/ issues them), or loads --credentials FILE made
beforehand. The master hands each worker its own slice of buyers (custom message), so
`--processes N` and `--master/--worker` need nothing else; a user starts buying at once.
`--login` makes every user log in through POST /login/ instead (a password check each:
use it when logins are what is being measured).

Shapes. Without --shape, Locust's usual -u/-r ramp spawns the mix (8 buyers : 3 browsers,
1 Admin), buyers waiting for each order's final answer, then thinking 0.1-0.5 s.
`--shape flash` (FlashSale below) spawns -u buyers within the first second of the sale;
they buy with no think time and poll their orders when Retry-After is due (as the
benchmark's clients do) until one sees `sold_out`, go on for --flood-seconds (the
sold-out flood), and the run ends.

Other options: --tickets (10000), --buyers (200), --credentials FILE, --flood-seconds (5),
--samples-dir DIR (every purchase and poll as CSV, the benchmark's format, for
loadtests.run's analysis), --max-requests (200000) and --max-seconds (600): the run stops
at either, whatever --run-time says (checked twice a second on the master's statistics,
which workers report every second). Purchases are reported by outcome (`purchase accepted`,
`purchase sold_out`, ...), polls as `/orders/[id]/`; a 409 refusal is a valid answer, not
a failure.

The host defaults to http://127.0.0.1:8000; all traffic must stay on this machine.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import gevent
import locust.runners
import locust.stats
import psutil
from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.runners import MasterRunner, WorkerRunner

# A flash sale is over in seconds: chart points (and workers' reports to the master, which
# feed them and the --max-requests check) every second instead of every 5 s and 3 s.
locust.stats.HISTORY_STATS_INTERVAL_SEC = 1
locust.runners.WORKER_REPORT_INTERVAL = 1.0

HOST = "http://127.0.0.1:8000"
ROOT = Path(__file__).resolve().parent.parent
REFUSALS = {"sold_out", "insufficient_tickets", "limit_exceeded", "sale_not_open"}
POLL_TIMEOUT_SECONDS = 120
SAMPLE_COLUMNS = [
    "t",
    "latency",
    "kind",
    "outcome",
    "qty",
    "order_id",
]  # as loadtests.loadgen writes them
TOKEN_MARGIN_SECONDS = 600  # minted tokens outlive --max-seconds by this much

PREPARED: dict = {}  # this process's share: event, password, buyers, tokens
SALE: dict = {"sold_out_at": None}  # master (or local runner): when a buyer first saw sold_out
_ENV: dict = {}
_STATE: dict = {"buyers": None, "sold_out_sent": False, "samples": [], "cpu_start": None}


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--tickets", type=int, default=10_000, help="tickets of the prepared event")
    parser.add_argument("--buyers", type=int, default=200, help="buyers to prepare")
    parser.add_argument(
        "--credentials", default="", help="prepared JSON (python -m loadtests.prepare --out)"
    )
    parser.add_argument(
        "--login",
        action="store_true",
        default=False,
        help="each user logs in through POST /login/ instead of using a prepared token",
    )
    parser.add_argument(
        "--shape",
        choices=["", "flash"],
        default="",
        help="flash: all -u buyers arrive in the sale's first second (default: the -u/-r ramp)",
    )
    parser.add_argument(
        "--flood-seconds",
        type=float,
        default=5.0,
        help="flash shape: seconds of purchases after the first sold_out, then the run ends",
    )
    parser.add_argument(
        "--samples-dir", default="", help="write every purchase and poll as CSV here"
    )
    parser.add_argument(
        "--max-requests", type=int, default=200_000, help="stop after about this many requests"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=600, help="stop after this long in any case"
    )


@events.init.add_listener
def _init(environment, runner=None, **kwargs) -> None:
    _ENV["environment"] = environment
    options = environment.parsed_options
    if runner is None or options is None:
        return
    if isinstance(runner, WorkerRunner):
        runner.register_message("loadtest_prepared", _receive_prepared)
        return
    runner.register_message("loadtest_sold_out", _receive_sold_out)
    if options.shape == "flash":
        # Opt-in: Locust would run any concrete shape class it finds in the file.
        environment.shape_class = FlashSale()
        environment.shape_class.runner = runner


@events.test_start.add_listener
def _prepare(environment, **kwargs) -> None:
    """Prepare (or load) buyers, tokens and the event once, on the master, before any user starts."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        return  # the master sends this worker its share (loadtest_prepared)
    options = environment.parsed_options
    prepared = json.loads(_credentials_path(options).read_text())
    if not options.login and not prepared.get("tokens"):
        raise RuntimeError(
            "the credentials file has no tokens: prepare it with --token-seconds, or run with --login"
        )
    SALE["sold_out_at"] = None
    if isinstance(runner, MasterRunner):
        workers = sorted(
            w.id for w in runner.clients.ready + runner.clients.running + runner.clients.spawning
        )
        for index, client_id in enumerate(workers):
            runner.send_message(
                "loadtest_prepared", _share(prepared, index, len(workers)), client_id
            )
    else:
        _use(prepared)
    _STATE["cpu_start"] = (time.monotonic(), _cpu_seconds())
    gevent.spawn(_watch_limits, environment, time.monotonic() + options.max_seconds)


def _credentials_path(options) -> Path:
    if options.credentials:
        return Path(options.credentials)
    path = Path(tempfile.gettempdir()) / f"loadtest-credentials-{os.getpid()}.json"
    token_seconds = 0 if options.login else options.max_seconds + TOKEN_MARGIN_SECONDS
    subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.prepare",
            "--buyers",
            str(options.buyers),
            "--tickets",
            str(options.tickets),
            "--token-seconds",
            str(token_seconds),
            "--out",
            str(path),
        ],
        cwd=ROOT,
        check=True,
    )
    return path


def _share(prepared: dict, index: int, count: int) -> dict:
    """The part of the prepared data worker `index` of `count` needs: its own buyers."""
    buyers = prepared["buyers"][index::count] or prepared["buyers"]
    wanted = set(buyers) | set(prepared["admins"])
    return {
        **prepared,
        "buyers": buyers,
        "tokens": {name: t for name, t in prepared.get("tokens", {}).items() if name in wanted},
    }


def _use(prepared: dict) -> None:
    PREPARED.clear()
    PREPARED.update(prepared)
    _STATE.update(buyers=itertools.cycle(prepared["buyers"]), sold_out_sent=False, samples=[])


def _receive_prepared(environment, msg, **kwargs) -> None:
    _use(msg.data)


def _receive_sold_out(environment, msg, **kwargs) -> None:
    seen = SALE["sold_out_at"]
    SALE["sold_out_at"] = msg.data if seen is None else min(seen, msg.data)


def _sold_out_seen(at: float) -> None:
    """Tell the master (or the local runner itself) once per process that the sale sold out."""
    if not _STATE["sold_out_sent"]:
        _STATE["sold_out_sent"] = True
        _ENV["environment"].runner.send_message("loadtest_sold_out", at)


def _watch_limits(environment, deadline: float) -> None:
    """Stop the run at --max-seconds or (about) --max-requests, whichever comes first."""
    runner, limit = environment.runner, environment.parsed_options.max_requests
    while runner.state not in ("stopping", "stopped", "cleanup"):
        if time.monotonic() >= deadline:
            return _stop(environment, "--max-seconds reached")
        if runner.stats.total.num_requests >= limit:
            return _stop(environment, "--max-requests reached")
        gevent.sleep(0.5)


def _stop(environment, why: str) -> None:
    print(f"stopping: {why}", flush=True)
    environment.runner.quit()


@events.test_stop.add_listener
def _finish(environment, **kwargs) -> None:
    """Write this process's samples (if asked); on the master, say what the generator's CPU was."""
    options = environment.parsed_options
    if options.samples_dir and not isinstance(environment.runner, MasterRunner):
        directory = Path(options.samples_dir)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / f"samples-{os.getpid()}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(SAMPLE_COLUMNS)
            writer.writerows(_STATE["samples"])
    if _STATE["cpu_start"] and not isinstance(environment.runner, WorkerRunner):
        started, cpu = _STATE["cpu_start"]
        seconds, used = time.monotonic() - started, _cpu_seconds() - cpu
        print(
            f"load generator (locust processes): {used:.1f} CPU s in {seconds:.1f} s "
            f"= {used / max(seconds, 1e-9):.2f} cores",
            flush=True,
        )


def _cpu_seconds() -> float:
    """CPU time of this process and its children (the --processes workers) so far."""
    total = 0.0
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _sample(response, kind: str, outcome: str, qty: int = 0, order_id: int = 0) -> None:
    if _ENV["environment"].parsed_options.samples_dir:
        meta = response.request_meta
        _STATE["samples"].append(
            (
                f"{meta['start_time']:.4f}",
                f"{meta['response_time'] / 1000:.5f}",
                kind,
                outcome,
                qty,
                order_id,
            )
        )


class FlashSale(LoadTestShape):
    """A flash sale: -u buyers arrive within the sale's first second and buy without pausing
    until one sees sold_out, then go on for --flood-seconds (the sold-out flood); the run
    ends there, or at --run-time if the sale never sells out."""

    abstract = True  # installed by --shape flash only (see _init)

    def tick(self):
        options = self.runner.environment.parsed_options
        sold_out_at = SALE["sold_out_at"]
        if sold_out_at is not None and time.time() >= sold_out_at + options.flood_seconds:
            return None
        if options.run_time and self.get_run_time() >= options.run_time:
            return None
        users = options.num_users or 1
        return users, float(users), [Buyer]


def _flash() -> bool:
    return _ENV["environment"].parsed_options.shape == "flash"


class _Authenticated(FastHttpUser):
    abstract = True
    host = HOST
    username = ""

    def on_start(self) -> None:
        self.username = self.pick_username()
        if _ENV["environment"].parsed_options.login:
            self.login()
        else:
            self.auth = {"Authorization": f"Bearer {PREPARED['tokens'][self.username]}"}

    def pick_username(self) -> str:
        return next(_STATE["buyers"])

    def login(self) -> None:
        """Log in (once; again only if the server refuses the token)."""
        response = self.client.post(
            "/login/", json={"username": self.username, "password": PREPARED["password"]}
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"login of {self.username} failed: {response.status_code} {response.text}"
            )
        self.auth = {"Authorization": f"Bearer {response.json()['access']}"}

    def refused(self, response) -> None:
        """A 401: log in again in --login mode; a prepared token is not replaced (the failure shows)."""
        if response.status_code == 401 and _ENV["environment"].parsed_options.login:
            self.login()

    @property
    def event_id(self) -> int:
        return PREPARED["event_id"]


class Buyer(_Authenticated):
    """Buys 1-4 tickets of the sale and polls each order, honouring Retry-After, until it is final.

    Ramp (default): like a person, waits for the final answer, then thinks 0.1-0.5 s.
    Flash shape: like the benchmark's clients (loadtests/loadgen.py), buys again at once and
    polls its pending orders when their Retry-After is due, so a user is one busy client.
    """

    weight = 8

    def on_start(self) -> None:
        super().on_start()
        self.polls: list[
            tuple[float, int, str, float]
        ] = []  # (due, order id, location, give up at)

    def wait_time(self) -> float:
        return 0.0 if _flash() else random.uniform(0.1, 0.5)

    @task
    def shop(self) -> None:
        if self.polls and self.polls[0][0] <= time.monotonic():
            self.poll(*heapq.heappop(self.polls)[1:])
            return
        accepted = self.buy()
        if accepted is None:
            return
        self.follow(*accepted)
        if not _flash():
            while self.polls:
                gevent.sleep(max(0.0, self.polls[0][0] - time.monotonic()))
                self.poll(*heapq.heappop(self.polls)[1:])

    def follow(
        self, order_id: int, location: str, retry_after: float, give_up_at: float | None = None
    ) -> None:
        """Poll this order again once its Retry-After has passed."""
        now = time.monotonic()
        heapq.heappush(
            self.polls,
            (now + retry_after, order_id, location, give_up_at or now + POLL_TIMEOUT_SECONDS),
        )

    def buy(self) -> tuple[int, str, float] | None:
        """POST a purchase; return (order id, location, Retry-After) when accepted."""
        quantity = random.randint(1, 4)
        with self.client.post(
            f"/events/{self.event_id}/purchase/",
            json={"quantity": quantity},
            headers={**self.auth, "Idempotency-Key": uuid.uuid4().hex},
            catch_response=True,
        ) as response:
            code = _code(response)
            outcome = (
                "accepted"
                if response.status_code == 202
                else code or f"error_{response.status_code}"
            )
            response.request_meta["name"] = f"purchase {outcome}"
            if response.status_code == 202:
                location = response.headers["Location"]
                order_id = int(location.rstrip("/").rsplit("/", 1)[-1])
                _sample(response, "buy", outcome, quantity, order_id)
                response.success()
                return order_id, location, float(response.headers.get("Retry-After", "1"))
            _sample(response, "buy", outcome, quantity)
            if response.status_code == 409 and code in REFUSALS:
                response.success()  # a refusal is a correct answer during a flash sale
                if code == "sold_out":
                    _sold_out_seen(time.time())
            else:
                self.refused(response)
                response.failure(f"{response.status_code} {code}")
        return None

    def poll(self, order_id: int, location: str, give_up_at: float) -> None:
        with self.client.get(
            location, headers=self.auth, name="/orders/[id]/", catch_response=True
        ) as response:
            if response.status_code != 200:
                _sample(response, "poll", f"error_{response.status_code}", 0, order_id)
                response.failure(f"{response.status_code} {_code(response)}")
                return
            status = response.json()["status"]
            _sample(response, "poll", status, 0, order_id)
            if status != "pending":
                return
            if time.monotonic() > give_up_at:
                response.failure(f"still pending after {POLL_TIMEOUT_SECONDS} s")
                return
        self.follow(order_id, location, float(response.headers.get("Retry-After", "1")), give_up_at)


class Browser(_Authenticated):
    """Lists events and reads the one on sale (any logged-in caller may)."""

    weight = 3
    wait_time = between(0.5, 2)

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

    def pick_username(self) -> str:
        return PREPARED["admins"][0]

    @task
    def queues(self) -> None:
        self.client.get("/ops/queues/", headers=self.auth, name="/ops/queues/")

    @task
    def pending_orders(self) -> None:
        self.client.get(
            f"/orders/?event={self.event_id}&status=pending",
            headers=self.auth,
            name="/orders/?event",
        )


def _code(response) -> str | None:
    try:
        return response.json().get("code")
    except (
        ValueError,
        AttributeError,
        TypeError,
    ):  # no JSON body (a proxy's error page): the status says it
        return None
