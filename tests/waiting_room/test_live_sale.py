"""A sale with a waiting room, live: the API server, a Celery worker and beat behind
the front door (HAProxy), and 200 buyers in threads doing what a page does.

160 buyers join before the opening, 40 after it, one by one; then every buyer polls the
room's public state through the door (cached there), reads its own state once its
number is served, buys, and polls its order until it is final. The room admits 25 a
second; the 190 tickets sell out.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import requests

from core.models import Order
from core.services.waiting_room import waiting_room_configure
from tests.conftest import token_for
from tests.frontdoor.door import SOURCE, metric, needs_haproxy, start_door
from tests.invariants import assert_invariants, wait_until_no_pending
from tests.live import LiveStack

pytestmark = [pytest.mark.live, needs_haproxy]

EARLY, LATE, TICKETS, RATE = 160, 40, 190, 25
OPENS_IN = 8.0  # s after the joins begin
DEADLINE = 40.0  # s for the whole sale, from the opening
TIMEOUT = 10.0  # s per request: an answer slower than this counts as unanswered


@dataclass
class Buyer:
    token: str
    arrival: int = 0  # the rank of its join's answer among its group's
    number: int | None = None
    admitted_at: float | None = None  # when it first saw itself admitted
    order: dict | None = None
    codes: list[str] = field(default_factory=list)


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.unanswered = 0
        self.public_polls = 0

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


def spearman(xs: list[int], ys: list[int]) -> float:
    def ranks(values):
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0] * len(values)
        for rank, index in enumerate(order):
            out[index] = rank
        return out

    rx, ry, n = ranks(xs), ranks(ys), len(xs)
    return 1 - 6 * sum((a - b) ** 2 for a, b in zip(rx, ry, strict=True)) / (n * (n * n - 1))


def test_a_crowd_joins_is_admitted_in_order_buys_and_the_sale_sells_out_exactly(
    transactional_db, tmp_path, make_event, make_user
):
    opens = time.time() + OPENS_IN
    event = make_event(total_tickets=TICKETS, sale_starts_at=datetime.fromtimestamp(opens, tz=UTC))
    waiting_room_configure(event_id=event.pk, rate=RATE, admission_seconds=30, paused=False)
    buyers = [Buyer(token_for(make_user())) for _ in range(EARLY + LATE)]
    live = LiveStack(tmp_path, env={"DJANGO_TRUSTED_PROXY_ADDRESSES": SOURCE})
    tally = Tally()
    try:
        live.start_api(workers=2)
        live.start_worker(concurrency=2)
        live.start_beat()
        door = start_door(live, api_address=f"127.0.0.1:{live.port}")
        room = f"{door.base_url}/events/{event.pk}/waiting-room/"
        local = threading.local()

        def call(method: str, url: str, buyer: Buyer | None = None, **kwargs):
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            headers = {"Authorization": f"Bearer {buyer.token}"} if buyer else {}
            while True:
                try:
                    response = session.request(method, url, headers=headers, timeout=TIMEOUT,
                                               **kwargs)  # fmt: skip
                except requests.RequestException:
                    tally.add("unanswered")
                    raise
                if response.status_code != 503:  # the door's "busy": as told, retry
                    return response
                time.sleep(float(response.headers.get("Retry-After", 1)))

        joined = iter(range(EARLY))
        join_lock = threading.Lock()

        def join(buyer: Buyer) -> None:
            response = call("POST", room + "join/", buyer)
            assert response.status_code == 201, response.text
            with join_lock:
                buyer.arrival = next(joined)

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(join, buyers[:EARLY]))
        assert time.time() < opens, "the early joins took longer than the time to the opening"
        time.sleep(opens - time.time() + 0.2)
        for rank, buyer in enumerate(buyers[EARLY:]):  # one by one: a known arrival order
            buyer.arrival = rank
            assert call("POST", room + "join/", buyer).status_code == 201

        def shop(buyer: Buyer) -> None:
            end = opens + DEADLINE
            while time.time() < end:
                public = call("GET", room).json()
                tally.add("public_polls")
                if public["sold_out"] and buyer.admitted_at is None:
                    buyer.codes.append("sold_out")
                    return
                if buyer.number is None or public["serving"] >= buyer.number:
                    me = call("GET", room + "me/", buyer).json()
                    buyer.number = me["number"]
                    if me["state"] == "admitted":
                        buyer.admitted_at = buyer.admitted_at or time.time()
                        break
                    if me["state"] in ("sold_out", "expired"):
                        buyer.codes.append(me["state"])
                        return
                time.sleep(0.3)
            else:
                return
            response = call("POST", f"{door.base_url}/events/{event.pk}/purchase/", buyer,
                            json={"quantity": 1})  # fmt: skip
            if response.status_code != 202:
                buyer.codes.append(response.json()["code"])
                return
            order = response.json()
            while order["status"] == "pending" and time.time() < end:
                time.sleep(min(float(response.headers.get("Retry-After", 1)), 1.0))
                response = call("GET", f"{door.base_url}/orders/{order['id']}/", buyer)
                order = response.json()
            buyer.order = order

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(buyers)) as pool:
            list(pool.map(shop, buyers))
        took = time.monotonic() - started
        stats = requests.get(door.metrics_url, timeout=5).text
    finally:
        live.stop_all()

    assert tally.unanswered == 0
    early, late = buyers[:EARLY], buyers[EARLY:]
    # Early joiners: a uniformly random order, all before the later joiners.
    assert sorted(b.number for b in early) == list(range(1, EARLY + 1))
    rho = spearman([b.arrival for b in early], [b.number for b in early])
    assert abs(rho) <= 0.3, rho
    assert [b.number for b in late] == list(range(EARLY + 1, EARLY + LATE + 1))
    admitted_early = [b.admitted_at for b in early if b.admitted_at]
    admitted_late = [b.admitted_at for b in late if b.admitted_at]
    assert len(admitted_early) == EARLY
    if admitted_late:  # a page polls once a second or so: allow that much overlap
        assert max(admitted_early) <= min(admitted_late) + 1.5
    # Nothing oversold, every ticket sold, every answer matching an order.
    wait_until_no_pending(event.pk)
    accepted = [b.order["id"] for b in buyers if b.order]
    figures = assert_invariants(event.pk, accepted_ids=accepted, expect_sold_out=True)
    assert figures["tickets_sold"] == TICKETS
    assert sum(1 for b in buyers if b.order and b.order["status"] == "confirmed") == TICKETS
    assert Order.objects.filter(event=event).count() == TICKETS
    # The crowd's polling of the public state was answered from the door's cache.
    reached = metric(stats, "haproxy_server_http_responses_total", proxy="api", server="api",
                     code="2xx")  # fmt: skip
    hits = metric(stats, "haproxy_backend_http_cache_hits_total", proxy="api")
    print(f"\n{tally.public_polls} public polls, {hits:.0f} from the door's cache, "
          f"{reached:.0f} answers from the API; rho {rho:.3f}; the sale took {took:.1f} s")  # fmt: skip
    assert hits >= 0.8 * tally.public_polls
