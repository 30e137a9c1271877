"""Locust load test of the flash-sale API: buyers, browsers and an Admin.

`make loadtest` (python -m loadtests.run) runs it against a stack of its own; by hand
(docs/load-testing.md), against a stack with the server's DATABASE_URL, REDIS_URL and
DJANGO_SECRET_KEY: `locust -f loadtests/locustfile.py --headless --shape flash -u 64`.
Before the swarm the master prepares (loadtests.prepare) or loads (--credentials) buyers,
an Admin, an event on sale and their tokens, and sends each worker its own slice of buyers.
Without --shape, -u/-r ramps the mix (8 buyers : 3 browsers : 1 Admin), buyers waiting
for each order's final answer; `--shape flash` starts -u buyers at once that buy without
pausing and poll as the benchmark's clients do (both read answers through
loadtests/clients.py) until one sees sold_out, then --flood-seconds more. A 409 refusal is
a valid answer, not a failure. The run stops at --max-requests or --max-seconds.
"""

from __future__ import annotations

import csv
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

from loadtests import clients

# A flash sale is over in seconds: chart points (and workers' reports to the master, which
# feed them and the --max-requests check) every second instead of every 5 s and 3 s.
locust.stats.HISTORY_STATS_INTERVAL_SEC = 1
locust.runners.WORKER_REPORT_INTERVAL = 1.0

ROOT = Path(__file__).resolve().parent.parent
POLL_TIMEOUT_SECONDS = 120
TOKEN_MARGIN_SECONDS = 600  # minted tokens outlive --max-seconds by this much
PREPARED: dict = {}  # this process's share: event, password, buyers, tokens
SALE: dict = {"sold_out_at": None}  # master (or local runner): when a buyer first saw sold_out
_STATE: dict = {"buyers": None, "sold_out_sent": False, "samples": [], "cpu_start": None}


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    add = parser.add_argument
    add("--tickets", type=int, default=10_000, help="tickets of the prepared event")
    add("--buyers", type=int, default=200, help="buyers to prepare")
    add("--credentials", default="", help="prepared JSON (python -m loadtests.prepare --out)")
    add("--login", action="store_true", default=False, help="log in instead of a prepared token")
    add("--shape", choices=["", "flash"], default="", help="flash: all -u buyers at once")
    add("--flood-seconds", type=float, default=5.0, help="flash: purchases after sold_out")
    add("--samples-dir", default="", help="write every purchase and poll as CSV here")
    add("--max-requests", type=int, default=200_000, help="stop after about this many requests")
    add("--max-seconds", type=float, default=600, help="stop after this long in any case")


def _opts() -> object:
    return _STATE["environment"].parsed_options


@events.init.add_listener
def _init(environment, runner=None, **kwargs) -> None:
    _STATE["environment"] = environment
    if runner is None or environment.parsed_options is None:
        return
    if isinstance(runner, WorkerRunner):
        runner.register_message("loadtest_prepared", lambda environment, msg, **kw: _use(msg.data))
        return
    runner.register_message("loadtest_sold_out", _receive_sold_out)
    if environment.parsed_options.shape == "flash":
        # Opt-in: Locust would run any concrete shape class it finds in the file.
        environment.shape_class = FlashSale()
        environment.shape_class.runner = runner


@events.test_start.add_listener
def _prepare(environment, **kwargs) -> None:
    """Prepare (or load) buyers, tokens and the event once, on the master, before any user starts."""
    runner, options = environment.runner, environment.parsed_options
    if isinstance(runner, WorkerRunner):
        return  # the master sends this worker its share (loadtest_prepared)
    prepared = json.loads(_credentials_path(options).read_text())
    if not options.login and not prepared.get("tokens"):
        raise RuntimeError("the credentials file has no tokens: prepare them, or use --login")
    SALE["sold_out_at"] = None
    if isinstance(runner, MasterRunner):
        clients_ = runner.clients
        workers = sorted(w.id for w in clients_.ready + clients_.running + clients_.spawning)
        for index, client_id in enumerate(workers):
            share = _share(prepared, index, len(workers))
            runner.send_message("loadtest_prepared", share, client_id)
    else:
        _use(prepared)
    _STATE["cpu_start"] = (time.monotonic(), _cpu_seconds())
    gevent.spawn(_watch_limits, environment, time.monotonic() + options.max_seconds)


def _credentials_path(options) -> Path:
    if options.credentials:
        return Path(options.credentials)
    path = Path(tempfile.gettempdir()) / f"loadtest-credentials-{os.getpid()}.json"
    token_seconds = 0 if options.login else options.max_seconds + TOKEN_MARGIN_SECONDS
    command = [sys.executable, "-m", "loadtests.prepare", "--buyers", str(options.buyers)]
    command += ["--tickets", str(options.tickets), "--token-seconds", str(token_seconds)]
    subprocess.run([*command, "--out", str(path)], cwd=ROOT, check=True)
    return path


def _share(prepared: dict, index: int, count: int) -> dict:
    """The part of the prepared data worker `index` of `count` needs: its own buyers."""
    buyers = prepared["buyers"][index::count] or prepared["buyers"]
    wanted = set(buyers) | set(prepared["admins"])
    tokens = {name: t for name, t in prepared.get("tokens", {}).items() if name in wanted}
    return {**prepared, "buyers": buyers, "tokens": tokens}


def _use(prepared: dict) -> None:
    PREPARED.clear()
    PREPARED.update(prepared)
    _STATE.update(buyers=itertools.cycle(prepared["buyers"]), sold_out_sent=False, samples=[])


def _receive_sold_out(environment, msg, **kwargs) -> None:
    seen = SALE["sold_out_at"]
    SALE["sold_out_at"] = msg.data if seen is None else min(seen, msg.data)


def _watch_limits(environment, deadline: float) -> None:
    """Stop the run at --max-seconds or (about) --max-requests, whichever comes first."""
    runner, limit = environment.runner, environment.parsed_options.max_requests
    while runner.state not in ("stopping", "stopped", "cleanup"):
        why = "--max-seconds" if time.monotonic() >= deadline else None
        why = why or ("--max-requests" if runner.stats.total.num_requests >= limit else None)
        if why:
            print(f"stopping: {why} reached", flush=True)
            return runner.quit()
        gevent.sleep(0.5)


@events.test_stop.add_listener
def _finish(environment, **kwargs) -> None:
    """Write this process's samples (if asked); on the master, say what the generator's CPU was."""
    options, runner = environment.parsed_options, environment.runner
    if options.samples_dir and not isinstance(runner, MasterRunner):
        directory = Path(options.samples_dir)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / f"samples-{os.getpid()}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(clients.COLUMNS)
            writer.writerows(_STATE["samples"])
    if _STATE["cpu_start"] and not isinstance(runner, WorkerRunner):
        started, cpu = _STATE["cpu_start"]
        seconds, used = time.monotonic() - started, _cpu_seconds() - cpu
        print(
            f"load generator (locust processes): {used:.1f} CPU s in {seconds:.1f} s "
            f"= {used / max(seconds, 1e-9):.2f} cores",
            flush=True,
        )


def _cpu_seconds() -> float:
    """CPU time of this process and its children (the --processes workers) so far."""
    total, me = 0.0, psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


class FlashSale(LoadTestShape):
    """A flash sale: -u buyers arrive within the sale's first second and buy without pausing
    until one sees sold_out, then go on for --flood-seconds (the sold-out flood); the run
    ends there, or at --run-time if the sale never sells out."""

    abstract = True  # installed by --shape flash only (see _init)

    def tick(self):
        options, sold_out_at = self.runner.environment.parsed_options, SALE["sold_out_at"]
        if sold_out_at is not None and time.time() >= sold_out_at + options.flood_seconds:
            return None
        if options.run_time and self.get_run_time() >= options.run_time:
            return None
        users = options.num_users or 1
        return users, float(users), [Buyer]


class _Authenticated(FastHttpUser):
    abstract = True
    host = "http://127.0.0.1:8000"

    def on_start(self) -> None:
        self.username = self.pick_username()
        if _opts().login:
            self.login()
        else:
            self.auth = {"Authorization": f"Bearer {PREPARED['tokens'][self.username]}"}

    def pick_username(self) -> str:
        return next(_STATE["buyers"])

    def login(self) -> None:
        """Log in (once; again only if the server refuses the token)."""
        body = {"username": self.username, "password": PREPARED["password"]}
        response = self.client.post("/login/", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"login of {self.username} failed: {response.status_code}")
        self.auth = {"Authorization": f"Bearer {response.json()['access']}"}

    @property
    def event_id(self) -> int:
        return PREPARED["event_id"]


class Buyer(_Authenticated):
    """Buys 1-4 tickets of the sale and polls each order, honouring Retry-After, until it is final.

    Ramp (default): like a person, waits for the final answer, then thinks 0.1-0.5 s.
    Flash shape: like the benchmark's clients, buys again at once and polls its pending
    orders when their Retry-After is due, so a user is one busy client.
    """

    weight = 8

    def on_start(self) -> None:
        super().on_start()
        self.orders = clients.Orders()

    def wait_time(self) -> float:
        return 0.0 if _opts().shape == "flash" else random.uniform(0.1, 0.5)

    @task
    def shop(self) -> None:
        due = self.orders.pop_due()
        if due:
            return self.poll(*due)
        self.buy()
        while self.orders and _opts().shape != "flash":
            gevent.sleep(max(0.0, self.orders.next_due() - time.monotonic()))
            due = self.orders.pop_due()
            if due:
                self.poll(*due)

    def buy(self) -> None:
        quantity = random.randint(1, 4)
        headers = {**self.auth, "Idempotency-Key": uuid.uuid4().hex}
        path = f"/events/{self.event_id}/purchase/"
        with self.client.post(
            path, json={"quantity": quantity}, headers=headers, catch_response=True
        ) as response:
            answer = clients.purchase_answer(
                response.status_code, response.headers.get, response.content or b""
            )
            response.request_meta["name"] = f"purchase {answer.outcome}"
            _sample(response, "buy", answer, quantity)
            if answer.outcome == "accepted":
                response.success()
                self.orders.follow(answer.order_id, f"/orders/{answer.order_id}/", answer.after,
                                   time.monotonic() + POLL_TIMEOUT_SECONDS)  # fmt: skip
            elif answer.refused:
                response.success()  # a refusal is a correct answer during a flash sale
                if answer.outcome == "sold_out" and not _STATE["sold_out_sent"]:
                    _STATE["sold_out_sent"] = True  # tell the master (or the local runner) once
                    _STATE["environment"].runner.send_message("loadtest_sold_out", time.time())
            else:
                if response.status_code == 401 and _opts().login:
                    self.login()  # a prepared token is not replaced: the failure shows
                response.failure(f"{response.status_code} {answer.outcome}")
                if answer.after:
                    gevent.sleep(answer.after)  # busy: honour Retry-After

    def poll(self, order_id: int, path: str, give_up_at: float) -> None:
        with self.client.get(
            path, headers=self.auth, name="/orders/[id]/", catch_response=True
        ) as response:
            answer = clients.poll_answer(
                order_id, response.status_code, response.headers.get, response.content or b""
            )
            _sample(response, "poll", answer)
            if response.status_code != 200:
                response.failure(f"{response.status_code} {answer.outcome}")
            if answer.after is None:
                return
            if time.monotonic() > give_up_at:
                response.failure(f"still pending after {POLL_TIMEOUT_SECONDS} s")
                return
        self.orders.follow(order_id, path, answer.after, give_up_at)


def _sample(response, kind: str, answer: clients.Answer, qty: int = 0) -> None:
    if _opts().samples_dir:
        meta = response.request_meta
        row = clients.sample(meta["start_time"], meta["response_time"] / 1000, kind, answer, qty)
        _STATE["samples"].append(row)


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
        path = f"/orders/?event={self.event_id}&status=pending"
        self.client.get(path, headers=self.auth, name="/orders/?event")
