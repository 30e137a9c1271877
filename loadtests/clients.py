"""What both load generators' buyers share: reading an answer, following orders, the samples.

The benchmark's closed loop (loadtests/loadgen.py, geventhttpclient) and the Locust buyer
(loadtests/locustfile.py, FastHttpUser) send the same requests; this module decides, for
both, what an answer means and when an order is polled again, and writes the same CSV
row, so loadtests/analysis.py computes their figures alike. No gevent, no I/O here.
"""

from __future__ import annotations

import heapq
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

# estimate: the 202's estimated_wait_seconds (accepted purchases only; '' otherwise).
COLUMNS = ["t", "latency", "kind", "outcome", "qty", "order_id", "estimate"]
REFUSALS = {
    "sold_out",
    "sold_out_waitlist_open",
    "insufficient_tickets",
    "limit_exceeded",
    "sale_not_open",
}
MAX_RETRY_AFTER = 5.0  # a busy answer's Retry-After is honoured up to this many seconds
ERROR_BACKOFF = 0.05  # after an answer nobody can classify (5xx, time-outs)


@dataclass(frozen=True)
class Answer:
    """One response as a buyer reads it.

    outcome: accepted | confirmed | a refusal's code | busy_<code> (a 503 with a code: the
    server shedding load) | an order's status (polls) | a waitlist entry's status |
    error_<status or exception>.
    after: seconds until the buyer polls this order (or waitlist entry) again (a 202, a
    pending order, a waiting entry, a poll that failed) or, for a busy purchase, waits
    before its next one; None otherwise. offered: an offered entry's tickets."""

    outcome: str
    order_id: int = 0
    estimate: float | None = None
    after: float | None = None
    offered: int = 0

    @property
    def refused(self) -> bool:
        return self.outcome in REFUSALS

    @property
    def unclassified(self) -> bool:
        return self.outcome.startswith("error_")


def code_of(body: bytes) -> str:
    try:
        return json.loads(body).get("code", "unknown")
    except (ValueError, AttributeError):
        return "unparsable"


def busy_answer(status: int, header: Callable[[str], str | None], body: bytes) -> Answer | None:
    if status != 503 or code_of(body) in ("unknown", "unparsable"):
        return None
    try:
        wait = min(float(header("Retry-After") or "1"), MAX_RETRY_AFTER)
    except ValueError:
        return None
    return Answer(f"busy_{code_of(body)}", after=wait)


def purchase_answer(status: int, header: Callable[[str], str | None], body: bytes) -> Answer:
    """Read a purchase's answer (`status` 0: none came; `body` then names the exception)."""
    if status in (201, 202):
        location = header("Location") or "/orders/0/"
        order_id = int(location.rstrip("/").rsplit("/", 1)[-1] or 0)
        if status == 201:
            return Answer("confirmed", order_id or json.loads(body)["id"])
        data = json.loads(body)
        after = float(header("Retry-After") or "1")
        return Answer("accepted", order_id or data["id"], data.get("estimated_wait_seconds"), after)
    if status == 409:
        return Answer(code_of(body))
    return busy_answer(status, header, body) or Answer(f"error_{status or body.decode()}")


def poll_answer(
    order_id: int, status: int, header: Callable[[str], str | None], body: bytes
) -> Answer:
    """Read a poll's answer: the order's status, polled again after Retry-After while pending."""
    if status == 200:
        state = json.loads(body)["status"]
        after = float(header("Retry-After") or "1") if state == "pending" else None
        return Answer(state, order_id, after=after)
    busy = busy_answer(status, header, body)
    outcome, after = (
        (busy.outcome, busy.after) if busy else (f"error_{status or body.decode()}", 1.0)
    )
    return Answer(outcome, order_id, after=after)


def entry_answer(status: int, header: Callable[[str], str | None], body: bytes) -> Answer:
    """Read a waitlist entry's answer (GET /events/<id>/waitlist/me/): its status, the
    tickets of an offer, and when to read it again (its Retry-After; None once final)."""
    if status == 200:
        data = json.loads(body)
        after = header("Retry-After")
        return Answer(
            data["status"],
            data.get("order_id") or 0,
            after=float(after) if after else None,
            offered=data.get("offer_quantity") or 0,
        )
    busy = busy_answer(status, header, body)
    return busy or Answer(f"error_{status or body.decode()}", after=1.0)


class Orders:
    """A buyer's orders still to poll, each due once its Retry-After has passed."""

    def __init__(self):
        self._heap: list[tuple[float, int, str, float]] = []  # due, order id, path, give up at

    def follow(self, order_id: int, path: str, after: float, give_up_at: float = float("inf")):
        heapq.heappush(self._heap, (time.monotonic() + after, order_id, path, give_up_at))

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self) -> tuple[int, str, float] | None:
        """(order id, path, give up at) of the first order due now, or None."""
        if self._heap and self._heap[0][0] <= time.monotonic():
            return heapq.heappop(self._heap)[1:]
        return None

    def __bool__(self) -> bool:
        return bool(self._heap)


def sample(t: float, latency: float, kind: str, answer: Answer, qty: int = 0) -> tuple:
    """One CSV row (COLUMNS) for a request that started at `t` (epoch s)."""
    estimate = "" if answer.estimate is None else answer.estimate
    return (f"{t:.4f}", f"{latency:.5f}", kind, answer.outcome, qty, answer.order_id, estimate)


def raise_open_files_limit(wanted: int = 16_384) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards `wanted` (one socket per client); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
