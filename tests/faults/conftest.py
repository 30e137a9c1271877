"""A live flash sale with a fault injected in the middle, and the report it feeds."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from core.models import Order, User
from tests.concurrency.conftest import FAST_BEAT
from tests.conftest import token_for
from tests.faults import report
from tests.faults.tools import PrivateRedis
from tests.invariants import assert_invariants, invariants_hold, wait_until_no_pending
from tests.live import LiveStack, fire


@dataclass
class Sale:
    """One live sale: what was sent, what came back, and how long recovery took."""

    live: LiveStack
    redis: PrivateRedis
    event_id: int
    tokens: list[str]
    results: list = field(default_factory=list)

    def purchase(self, i: int) -> tuple[str, dict, dict]:
        """The i-th purchase request of the sale: (path, body, headers)."""
        return (
            f"/events/{self.event_id}/purchase/",
            {"quantity": 1 + i % 2},
            {"Authorization": f"Bearer {self.tokens[i % len(self.tokens)]}"},
        )

    def start(self, count: int, concurrency: int = 32) -> threading.Thread:
        requests_ = [self.purchase(i) for i in range(count)]
        thread = threading.Thread(
            target=lambda: self.results.extend(
                fire(self.live.base_url, requests_, concurrency=concurrency)
            )
        )
        thread.start()
        return thread

    def wait_for_orders(self, count: int) -> None:
        self.live.wait_until(
            lambda: Order.objects.filter(event_id=self.event_id).count() >= count, "the sale to run"
        )

    def finish(self, thread: threading.Thread) -> dict:
        """The fault is over now: let the requests end, then settle (recovery timed from now)."""
        ended = time.monotonic()
        thread.join()
        return self.settle(ended)

    def settle(self, fault_ended: float, timeout: float = 90) -> dict:
        """Wait until every order is final and the gate agrees; return the figures."""
        wait_until_no_pending(self.event_id, timeout=timeout)
        self.live.wait_until(
            lambda: invariants_hold(self.event_id, self.redis.client()),
            "the gate to agree with PostgreSQL",
            timeout=timeout,
        )
        recovered = time.monotonic() - fault_ended
        figures = assert_invariants(self.event_id, self.redis.client())
        accepted = [body["id"] for status, body in self.results if status == 202]
        final = set(
            Order.objects.filter(pk__in=accepted)
            .exclude(status="pending")
            .values_list("pk", flat=True)
        )
        codes = Counter(
            "accepted" if status == 202 else body.get("code", str(status))
            for status, body in self.results
        )
        # Every answer is one the API promises: accepted, refused, or "busy, nothing done".
        assert all(status in (202, 409, 503) for status, _ in self.results), codes
        return {
            "sent": len(self.results),
            "accepted": len(accepted),
            "confirmed": Order.objects.filter(event_id=self.event_id, status="confirmed").count(),
            "tickets_sold": figures["tickets_sold"],
            "total": figures["total"],
            "oversold": max(0, figures["tickets_sold"] - figures["total"]),
            "lost": len(accepted) - len(final),
            # Orders committed whose client saw an error: a 503 while the insert itself
            # was committing (see "What the system promises").
            "confirmed_without_202": Order.objects.filter(
                event_id=self.event_id, status="confirmed"
            )
            .exclude(pk__in=accepted)
            .count(),
            "recover_seconds": round(recovered, 2),
            "answers": dict(codes),
        }


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def make_sale(transactional_db, tmp_path, private_redis, make_user, make_event):
    """Start the API server (2 workers), two Celery worker processes and beat on a private Redis."""
    stacks: list[LiveStack] = []

    def make(
        *,
        total: int = 150,
        env: dict | None = None,
        api_env: dict | None = None,
        beats: int = 1,
        workers: int = 2,
    ) -> Sale:
        live = LiveStack(
            tmp_path,
            env={
                **FAST_BEAT,
                "REDIS_URL": private_redis.url,
                "CELERY_BROKER_URL": private_redis.url,
                **(env or {}),
            },
        )
        stacks.append(live)
        live.start_api(workers=2, env=api_env)
        live.start_worker(concurrency=workers)
        for n in range(beats):
            live.start_beat(name=f"beat{n}")
        buyers = [make_user(role=User.Role.USER) for _ in range(40)]
        event = make_event(total_tickets=total)
        return Sale(live, private_redis, event.pk, [token_for(u) for u in buyers])

    yield make
    for live in stacks:
        live.stop_all()


@pytest.fixture(scope="session")
def reliability_rows():
    rows: dict[str, dict] = {}
    yield rows
    if rows:
        report.write(rows)
