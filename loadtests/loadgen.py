"""Closed-loop HTTP load generator (gevent + geventhttpclient), run in a process of its own.

`loadtests.bench` drives it; it is not meant to be run by hand:

    python -m loadtests.loadgen      # stdin: a spec line, then a "go" line

Protocol. stdin line 1: the spec (JSON, below). The process connects nothing yet,
prints `{"ready": true}` and waits for line 2, a JSON object merged into the spec
(typically `path` and `start_at`, known only once the event exists). It then runs
`concurrency` clients, each with its own connection, prints a progress line
`{"t", "n", "qty", "sold_out"}` every 0.5 s, writes one CSV row per request to
`samples` (a 202's `estimated_wait_seconds` with it) and ends with `{"done": true, ...}`.

Spec: base_url, mode ("get" | "buy"), path, tokens, concurrency, max_seconds,
max_requests, start_at (epoch s), poll (follow 202s to a final status, honouring
Retry-After), grace_after_sold_out (seconds of further purchases once a client saw
sold_out; null = keep buying until the deadline), quantities ([min, max]), seed,
samples (CSV path), network_timeout (seconds, default 30; a request without an
answer by then is recorded as an error), paths (optional, "get" mode: one path per
token, so that each buyer reads its own order).

A 503 with a JSON `code` is an answer (the server shedding load): it is recorded as
`busy_<code>` and the client waits its Retry-After, as the Locust buyer does.

Every run is bounded by max_seconds and max_requests, and only ever talks to base_url.
"""

from gevent import monkey

monkey.patch_all()

import csv  # noqa: E402
import heapq  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from geventhttpclient import HTTPClient  # noqa: E402

from loadtests.rlimit import raise_open_files_limit  # noqa: E402

# estimate: the 202's estimated_wait_seconds (accepted purchases only; '' otherwise).
COLUMNS = ["t", "latency", "kind", "outcome", "qty", "order_id", "estimate"]
# A response we cannot classify (5xx, timeouts) is recorded, then the client backs off.
ERROR_BACKOFF = 0.05
MAX_RETRY_AFTER = 5.0  # a busy answer's Retry-After is honoured up to this many seconds


class Run:
    """Shared state of one run: counters, the sold-out moment, the samples."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.samples: list[tuple] = []
        self.requests = 0
        self.accepted_qty = 0
        self.sold_out_at: float | None = None  # monotonic
        self.deadline = 0.0
        self.started = 0.0

    def budget_left(self) -> bool:
        return self.requests < self.spec["max_requests"] and time.monotonic() < self.deadline

    def buying(self) -> bool:
        grace = self.spec.get("grace_after_sold_out")
        if grace is None or self.sold_out_at is None:
            return True
        return time.monotonic() < self.sold_out_at + grace

    def record(self, t, latency, kind, outcome, qty=0, order_id=0, estimate=None) -> None:
        self.samples.append(
            (
                f"{t:.4f}",
                f"{latency:.5f}",
                kind,
                outcome,
                qty,
                order_id,
                "" if estimate is None else estimate,
            )
        )


def _code(body: bytes) -> str:
    try:
        return json.loads(body).get("code", "unknown")
    except (ValueError, AttributeError):
        return "unparsable"


def _busy(response, payload: bytes) -> float | None:
    """Seconds to wait when `response` is a 503 with a `code` and Retry-After, else None."""
    if (
        response is None
        or response.status_code != 503
        or _code(payload) in ("unknown", "unparsable")
    ):
        return None
    try:
        return min(float(response.get("Retry-After", "1")), MAX_RETRY_AFTER)
    except ValueError:
        return None


class Client:
    """One simulated user with one connection; many run concurrently in greenlets."""

    def __init__(self, run: Run, index: int, http: HTTPClient):
        spec = run.spec
        self.run, self.http = run, http
        tokens = spec["tokens"]
        # Client i acts as buyers i, i+C, i+2C, ... in turn, so every buyer is used.
        self.buyers = list(range(index % len(tokens), len(tokens), spec["concurrency"])) or [
            index % len(tokens)
        ]
        self.headers = [
            {"Authorization": f"Bearer {tokens[j]}", "Content-Type": "application/json"}
            for j in self.buyers
        ]
        self.turn = 0
        self.rng = random.Random(spec["seed"] * 100_003 + index)
        self.polls: list[tuple[float, int, str, dict]] = []  # (due, order id, path, headers)

    def request(self, method: str, path: str, body: bytes | None, headers: dict):
        started, t = time.perf_counter(), time.time()
        try:
            response = self.http.request(method, path, body=body, headers=headers)
            payload = response.read()
            response.release()
        except Exception as exc:  # every failure is a sample; the run must go on
            return t, time.perf_counter() - started, None, type(exc).__name__.encode()
        return t, time.perf_counter() - started, response, payload

    def loop(self) -> None:
        run = self.run
        while run.budget_left():
            now = time.monotonic()
            if self.polls and self.polls[0][0] <= now:
                self.poll()
            elif run.buying() and run.spec["mode"] == "buy":
                self.buy()
            elif run.spec["mode"] == "get":
                self.get()
            elif self.polls:
                gevent.sleep(max(0.0, min(self.polls[0][0], run.deadline) - now))
            else:
                return

    def next_headers(self) -> dict:
        self.turn += 1
        return self.headers[self.turn % len(self.headers)]

    def get(self) -> None:
        headers = self.next_headers()
        paths = self.run.spec.get("paths")
        path = paths[self.buyers[self.turn % len(self.buyers)]] if paths else self.run.spec["path"]
        t, latency, response, body = self.request("GET", path, None, headers)
        self.run.requests += 1
        status = response.status_code if response else 0
        wait = _busy(response, body)
        if wait is not None:
            self.run.record(t, latency, "get", f"busy_{_code(body)}")
            gevent.sleep(wait)
            return
        self.run.record(
            t, latency, "get", "ok" if status == 200 else f"error_{status or body.decode()}"
        )
        if status != 200:
            gevent.sleep(ERROR_BACKOFF)

    def buy(self) -> None:
        run = self.run
        low, high = run.spec["quantities"]
        qty = self.rng.randint(low, high)
        headers = self.next_headers()
        body = b'{"quantity": %d}' % qty
        t, latency, response, payload = self.request("POST", run.spec["path"], body, headers)
        run.requests += 1
        status = response.status_code if response else 0
        if status in (201, 202):
            order_id = int(
                response.get("Location", "/orders/0/").rstrip("/").rsplit("/", 1)[-1] or 0
            )
            estimate = None
            if status == 202:
                body = json.loads(payload)
                order_id = order_id or body["id"]
                estimate = body.get("estimated_wait_seconds")
            elif not order_id:
                order_id = json.loads(payload)["id"]
            run.accepted_qty += qty
            run.record(
                t,
                latency,
                "buy",
                "accepted" if status == 202 else "confirmed",
                qty,
                order_id,
                estimate,
            )
            if status == 202 and run.spec.get("poll"):
                delay = float(response.get("Retry-After", "1"))
                heapq.heappush(
                    self.polls,
                    (time.monotonic() + delay, order_id, f"/orders/{order_id}/", headers),
                )
            return
        wait = _busy(response, payload)
        if wait is not None:
            run.record(t, latency, "buy", f"busy_{_code(payload)}", qty)
            gevent.sleep(wait)
            return
        outcome = _code(payload) if status == 409 else f"error_{status or payload.decode()}"
        run.record(t, latency, "buy", outcome, qty)
        if outcome == "sold_out" and run.sold_out_at is None:
            run.sold_out_at = time.monotonic()
        if status != 409:
            gevent.sleep(ERROR_BACKOFF)

    def poll(self) -> None:
        _, order_id, path, headers = heapq.heappop(self.polls)
        t, latency, response, payload = self.request("GET", path, None, headers)
        self.run.requests += 1
        status = response.status_code if response else 0
        if status != 200:
            wait = _busy(response, payload)
            outcome = (
                f"busy_{_code(payload)}"
                if wait is not None
                else f"error_{status or payload.decode()}"
            )
            self.run.record(t, latency, "poll", outcome, 0, order_id)
            heapq.heappush(self.polls, (time.monotonic() + (wait or 1.0), order_id, path, headers))
            return
        state = json.loads(payload)["status"]
        self.run.record(t, latency, "poll", state, 0, order_id)
        if state == "pending":
            delay = float(response.get("Retry-After", "1"))
            heapq.heappush(self.polls, (time.monotonic() + delay, order_id, path, headers))


def _progress(run: Run) -> None:
    while True:
        gevent.sleep(0.5)
        _emit(
            t=round(time.monotonic() - run.started, 2),
            n=run.requests,
            qty=run.accepted_qty,
            sold_out=run.sold_out_at is not None,
        )


def _emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    raise_open_files_limit(spec["concurrency"] + 1024)
    _emit(ready=True)
    spec.update(json.loads(sys.stdin.readline()))
    url = urlsplit(spec["base_url"])
    assert url.hostname in ("127.0.0.1", "localhost", "::1"), "load goes to this machine only"
    run = Run(spec)
    clients = [
        Client(
            run,
            i,
            HTTPClient(
                url.hostname,
                url.port,
                concurrency=1,
                connection_timeout=10,
                network_timeout=spec.get("network_timeout", 30),
            ),
        )
        for i in range(spec["concurrency"])
    ]
    delay = spec.get("start_at", 0) - time.time()
    if delay > 0:
        time.sleep(delay)
    run.started = time.monotonic()
    run.deadline = run.started + spec["max_seconds"]
    reporter = gevent.spawn(_progress, run)
    gevent.joinall([gevent.spawn(client.loop) for client in clients])
    reporter.kill()
    with open(spec["samples"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(run.samples)
    times = os.times()
    _emit(
        done=True,
        n=run.requests,
        qty=run.accepted_qty,
        seconds=round(time.monotonic() - run.started, 3),
        cpu=round(times.user + times.system, 2),
    )


if __name__ == "__main__":
    main()
