"""Locust's waiting-room shape: the crowd of docs/benchmarks/crowd.md, smaller.

    make loadtest LOADTEST_ARGS="--room"      # = python -m loadtests.run --room

-u buyers arrive over --arrive-seconds, each joins the prepared event's waiting room
(turned on first by the prepared Admin, rate --room-rate or automatic), follows
Retry-After and the public state (through the front door's cache), buys 1-4 tickets once
admitted and polls its order; then it leaves. The run ends when every buyer has left, or
at --max-seconds. Everything else (prepared data, samples, limits) is loadtests/locustfile.py's.
"""

from __future__ import annotations

import json
import random
import time
import uuid

import gevent
import requests
from locust import FastHttpUser, LoadTestShape, constant, events, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

from loadtests import clients
from loadtests import locustfile as base  # its options, prepared data, samples and limits


@events.init_command_line_parser.add_listener
def _room_options(parser) -> None:
    parser.add_argument("--room-rate", type=int, default=0, help="buyers/s; 0: automatic")
    parser.add_argument("--arrive-seconds", type=float, default=10.0)


@events.test_start.add_listener
def _room_on(environment, **kwargs) -> None:
    """Turn the event's room on, as an Admin would (after locustfile's own test_start)."""
    if isinstance(environment.runner, WorkerRunner):
        return
    options = environment.parsed_options
    prepared = json.loads(base._credentials_path(options).read_text())
    admin = {"Authorization": f"Bearer {prepared['tokens'][prepared['admins'][0]]}"}
    body = {"rate": options.room_rate or None, "admission_seconds": 30, "paused": False}
    url = f"{environment.host}/events/{prepared['event_id']}/waiting-room/"
    requests.put(url, json=body, headers=admin, timeout=30).raise_for_status()


class RoomCrowd(LoadTestShape):
    """-u buyers over --arrive-seconds; the end once they have all left."""

    def tick(self):
        options, elapsed = self.runner.environment.parsed_options, self.get_run_time()
        users = options.num_users or 1
        if elapsed > options.arrive_seconds + 5 and self.runner.user_count == 0:
            return None
        return users, users / max(options.arrive_seconds, 0.1), [RoomBuyer]


class RoomBuyer(FastHttpUser):
    host = "http://127.0.0.1:8000"
    wait_time = constant(0)

    def on_start(self) -> None:
        token = base.PREPARED["tokens"][next(base._STATE["buyers"])]
        self.auth = {"Authorization": f"Bearer {token}"}
        self.room = f"/events/{base.PREPARED['event_id']}/waiting-room/"

    def ask(self, method: str, path: str, name: str, **kwargs) -> tuple[int, float, dict]:
        """(status, Retry-After or 1, JSON body); an answer with a code counts as one.
        Purchases and polls are sampled as the flash shape's are (loadtests/analysis.py)."""
        with self.client.request(method, path, name=name, catch_response=True, **kwargs) as r:
            content, status = r.content or b"", r.status_code
            body = json.loads(content) if content.startswith(b"{") else {}
            if status == 0 or (status >= 500 and "code" not in body):
                r.failure(f"{status}")
            else:
                r.success()
            if name == "purchase":
                base._sample(r, "buy", clients.purchase_answer(status, r.headers.get, content))
            elif name == "/orders/[id]/":
                base._sample(r, "poll", clients.poll_answer(0, status, r.headers.get, content))
            else:
                base._sample(r, name, clients.Answer(body.get("code") or str(status)))
            return status, float(r.headers.get("Retry-After") or 1), body

    @task
    def visit(self) -> None:
        status, after, entry = 0, 1.0, {}
        while status not in (200, 201):
            gevent.sleep(after if status else 0)
            status, after, entry = self.ask("POST", self.room + "join/", "join", headers=self.auth)
        while entry.get("state") == "waiting":
            gevent.sleep(after + random.uniform(0, 1))
            if entry.get("number") is None:
                status, after, got = self.ask("GET", self.room + "me/", "me", headers=self.auth)
                entry = got if status == 200 else entry
                continue
            status, after, public = self.ask("GET", self.room, "public")
            if status == 200 and (public["sold_out"] or entry["number"] <= public["serving"]):
                entry = {"state": "sold_out" if public["sold_out"] else "admitted"}
        if entry.get("state") == "admitted":
            self.buy()
        raise StopUser()

    def buy(self) -> None:
        qty, key = random.randint(1, 4), {"Idempotency-Key": uuid.uuid4().hex}
        path, body = f"/events/{base.PREPARED['event_id']}/purchase/", {"quantity": qty}
        for _ in range(30):
            status, after, got = self.ask(
                "POST", path, "purchase", json=body, headers={**self.auth, **key}
            )
            if status == 202:
                return self.poll(got["id"], after)
            if status == 409 and got.get("code") != "not_admitted_yet":
                return
            gevent.sleep(after)

    def poll(self, order_id: int, after: float) -> None:
        give_up = time.monotonic() + base.POLL_TIMEOUT_SECONDS
        while time.monotonic() < give_up:
            gevent.sleep(after)
            status, after, got = self.ask(
                "GET", f"/orders/{order_id}/", "/orders/[id]/", headers=self.auth
            )
            if status == 200 and got.get("status") != "pending":
                return
