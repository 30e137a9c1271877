"""Closed-loop HTTP load generator (gevent + geventhttpclient) in a process of its own.

Driven by loadtests/scenarios.py (`python -m loadtests.loadgen`). stdin line 1 is the
spec (JSON); it answers `{"ready": true}` and waits for line 2, merged into the spec
(`path`, `start_at`: known once the event exists). Then `concurrency` clients, one
connection each, run until max_seconds or max_requests; a progress line
`{"t", "n", "qty", "sold_out"}` every 0.5 s, one CSV row per request to `samples`
(loadtests/clients.py's columns), and `{"done": true, ...}` at the end.

Spec: base_url (this machine only), mode ("get" | "buy" | "waitlist"), path, paths (get:
one per token, each buyer reads its own order), tokens, concurrency, max_seconds,
max_requests, start_at (epoch s), poll (follow 202s honouring Retry-After),
grace_after_sold_out (seconds of purchases after a client saw sold_out; null: until the
deadline), quantities ([min, max]), seed, samples (CSV path), network_timeout (default
30 s), entry_path (waitlist).

Mode "waitlist" (loadtests/waitlist_bench.py): one client per token, each a buyer on the
event's waitlist who reads its entry (entry_path) when its Retry-After is due, buys an
offer through `path` as soon as it sees one and polls that order. Its buyers wait for
offers until a later stdin line {"stop": true} (or the deadline) ends the run.
"""

from gevent import monkey

monkey.patch_all()

import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from geventhttpclient import HTTPClient  # noqa: E402

from loadtests import clients  # noqa: E402

NAP = 0.5  # a waiting client sleeps at most this long at a time, so that a stop ends it soon


class Run:
    """Shared state of one run: counters, the sold-out moment, the samples."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.samples: list[tuple] = []
        self.requests = self.accepted_qty = 0
        self.sold_out_at: float | None = None  # monotonic
        self.started = self.deadline = 0.0

    def budget_left(self) -> bool:
        return self.requests < self.spec["max_requests"] and time.monotonic() < self.deadline

    def buying(self) -> bool:
        grace = self.spec.get("grace_after_sold_out")
        if grace is None or self.sold_out_at is None:
            return True
        return time.monotonic() < self.sold_out_at + grace


class Client:
    """One simulated user with one connection; many run concurrently in greenlets."""

    def __init__(self, run: Run, index: int, http: HTTPClient):
        spec, tokens = run.spec, run.spec["tokens"]
        self.run, self.http = run, http
        # Client i acts as buyers i, i+C, i+2C, ... in turn, so every buyer is used.
        self.buyers = list(range(index % len(tokens), len(tokens), spec["concurrency"]))
        self.headers = [
            {"Authorization": f"Bearer {tokens[j]}", "Content-Type": "application/json"}
            for j in self.buyers
        ]
        self.turn = 0
        self.rng = random.Random(spec["seed"] * 100_003 + index)
        self.orders = clients.Orders()
        self.order_headers: dict[int, dict] = {}
        # Mode waitlist: when the entry is read next (None: done; the first reads spread
        # over 2 s), and the key of the offer's purchase.
        self.entry_due: float | None = None
        if spec["mode"] == "waitlist":
            self.entry_due = time.monotonic() + self.rng.uniform(0, 2)
        self.offer_key = uuid.uuid4().hex

    def request(self, method: str, path: str, body: bytes | None, headers: dict):
        """(start epoch s, latency s, status or 0, response header getter, body)."""
        started, t = time.perf_counter(), time.time()
        try:
            response = self.http.request(method, path, body=body, headers=headers)
            payload = response.read()
            response.release()
        except Exception as exc:  # every failure is a sample; the run must go on
            return t, time.perf_counter() - started, 0, lambda _: None, type(exc).__name__.encode()
        return t, time.perf_counter() - started, response.status_code, response.get, payload

    def loop(self) -> None:
        run = self.run
        while run.budget_left():
            due = self.orders.pop_due()
            if due:
                self.poll(*due[:2])
            elif run.spec["mode"] == "get":
                self.get()
            elif run.spec["mode"] == "waitlist":
                if not self.wait_for_offer():
                    return
            elif run.buying():
                self.buy()
            elif self.orders:
                gevent.sleep(max(0.0, min(self.orders.next_due(), run.deadline) - time.monotonic()))
            else:
                return

    def next_headers(self) -> dict:
        self.turn += 1
        return self.headers[self.turn % len(self.headers)]

    def record(self, t, latency, kind, answer, qty=0) -> None:
        self.run.requests += 1
        self.run.samples.append(clients.sample(t, latency, kind, answer, qty))

    def get(self) -> None:
        headers, paths = self.next_headers(), self.run.spec.get("paths")
        path = paths[self.buyers[self.turn % len(self.buyers)]] if paths else self.run.spec["path"]
        t, latency, status, header, body = self.request("GET", path, None, headers)
        busy = clients.busy_answer(status, header, body)
        answer = busy or clients.Answer(
            "ok" if status == 200 else f"error_{status or body.decode()}"
        )
        self.record(t, latency, "get", answer)
        if busy or status != 200:
            gevent.sleep(busy.after if busy else clients.ERROR_BACKOFF)

    def purchase(self, qty: int, headers: dict) -> clients.Answer:
        """POST the purchase of `qty` tickets; follow an accepted order when polling."""
        run, body = self.run, b'{"quantity": %d}' % qty
        t, latency, status, header, payload = self.request("POST", run.spec["path"], body, headers)
        answer = clients.purchase_answer(status, header, payload)
        self.record(t, latency, "buy", answer, qty)
        if answer.order_id:
            run.accepted_qty += qty
            if answer.outcome == "accepted" and run.spec.get("poll"):
                self.order_headers[answer.order_id] = headers
                self.orders.follow(answer.order_id, f"/orders/{answer.order_id}/", answer.after)
        return answer

    def buy(self) -> None:
        run, (low, high) = self.run, self.run.spec["quantities"]
        answer = self.purchase(self.rng.randint(low, high), self.next_headers())
        if answer.outcome == "sold_out" and run.sold_out_at is None:
            run.sold_out_at = time.monotonic()
        elif answer.outcome.startswith("busy_"):
            gevent.sleep(answer.after)
        elif answer.unclassified:
            gevent.sleep(clients.ERROR_BACKOFF)

    def wait_for_offer(self) -> bool:
        """Mode waitlist: read the entry when due and buy its offer; False once the entry
        is final and its order too."""
        due = [d for d in (self.entry_due, self.orders.next_due()) if d is not None]
        if not due:
            return False
        if min(due) > time.monotonic():
            gevent.sleep(min(min(due) - time.monotonic(), NAP))
        elif self.entry_due is not None and self.entry_due <= time.monotonic():
            self.read_entry()
        return True

    def read_entry(self) -> None:
        path, headers = self.run.spec["entry_path"], self.headers[0]
        t, latency, status, header, body = self.request("GET", path, None, headers)
        answer = clients.entry_answer(status, header, body)
        self.record(t, latency, "entry", answer)
        after = answer.after
        if answer.outcome == "offered":
            bought = self.purchase(answer.offered, {**headers, "Idempotency-Key": self.offer_key})
            # An offer seen before the gate holds it is refused for a moment: read again.
            after = None if bought.order_id else bought.after or clients.ERROR_BACKOFF * 10
        self.entry_due = None if after is None else time.monotonic() + after

    def poll(self, order_id: int, path: str) -> None:
        t, latency, status, header, payload = self.request(
            "GET", path, None, self.order_headers[order_id]
        )
        answer = clients.poll_answer(order_id, status, header, payload)
        self.record(t, latency, "poll", answer)
        if answer.after is not None:
            self.orders.follow(order_id, path, answer.after)


def _emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _progress(run: Run) -> None:
    while True:
        gevent.sleep(0.5)
        t = round(time.monotonic() - run.started, 2)
        _emit(t=t, n=run.requests, qty=run.accepted_qty, sold_out=run.sold_out_at is not None)


def _listen(run: Run) -> None:
    """End the run at a later stdin line {"stop": true} (read in a thread: stdin is not
    a gevent socket)."""
    line = gevent.get_hub().threadpool.apply(sys.stdin.readline)
    if line and json.loads(line).get("stop"):
        run.deadline = time.monotonic()


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    clients.raise_open_files_limit(spec["concurrency"] + 1024)
    _emit(ready=True)
    spec.update(json.loads(sys.stdin.readline()))
    url = urlsplit(spec["base_url"])
    assert url.hostname in ("127.0.0.1", "localhost", "::1"), "load goes to this machine only"
    run = Run(spec)
    timeout = spec.get("network_timeout", 30)
    http = [
        HTTPClient(url.hostname, url.port, concurrency=1, connection_timeout=10,
                   network_timeout=timeout)
        for _ in range(spec["concurrency"])
    ]  # fmt: skip
    crowd = [Client(run, i, http[i]) for i in range(spec["concurrency"])]
    delay = spec.get("start_at", 0) - time.time()
    if delay > 0:
        time.sleep(delay)
    run.started = time.monotonic()
    run.deadline = run.started + spec["max_seconds"]
    reporter = gevent.spawn(_progress, run)
    if spec["mode"] == "waitlist":
        gevent.spawn(_listen, run)
    gevent.joinall([gevent.spawn(client.loop) for client in crowd])
    reporter.kill()
    with open(spec["samples"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(clients.COLUMNS)
        writer.writerows(run.samples)
    times = os.times()
    seconds = round(time.monotonic() - run.started, 3)
    cpu = round(times.user + times.system, 2)
    _emit(done=True, n=run.requests, qty=run.accepted_qty, seconds=seconds, cpu=cpu)


if __name__ == "__main__":
    main()
