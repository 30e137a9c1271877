"""Returns under a sold-out flood, live: a granian API server, a Celery worker and beat.

An event sells out to 20 holders (1-4 tickets each), 200 buyers join its waitlist over
HTTP, then the 20 holders cancel at the same moment while 1,000 other clients flood the
purchase. The offer rounds run where production runs them: the task each cancellation
queues and beat's tick. Then:
- every returned ticket is offered exactly once (the offers add up to the tickets
  returned, no entry is offered twice, the pool is empty);
- the offers follow the rule (core/services/waitlists.py) in line order. How the 20
  returns were cut into rounds depends on timing, so the test checks what the rule
  implies whatever the cut: within a round (its offers share `offered_at`), an entry the
  round passed over needed more tickets than everything the round offered behind it;
  an entry still waiting was passed over by every round;
- the flood got nothing: every answer a "sold out, join the waitlist" refusal, no order;
- each offer is taken at most once (its buyer sends two purchases at once), nothing is
  oversold, and the invariants hold once the orders are drained.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.contrib.auth.hashers import make_password
from django.db.models import Sum
from django.utils import timezone

from core.models import Event, Order, User, WaitlistEntry
from core.services.waitlists import waitlist_configure
from tests.concurrency.conftest import FAST_BEAT
from tests.conftest import token_for
from tests.invariants import assert_invariants, sold_figures, wait_until_no_pending
from tests.live import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

HOLDERS, ENTRIES, FLOODERS = 20, 200, 1_000
FLOOD_REQUESTS_EACH = 3  # 3,000 purchases in all, over keep-alive connections
FLOOD_THREADS = 48
TIMEOUT = 10.0  # s per request
LATER = timedelta(seconds=1)  # a round that began this much later decided later


@pytest.fixture
def live(transactional_db, tmp_path):
    """The API server (2 workers), a Celery worker (2 processes) and beat, whose
    waitlist tick runs twice a second."""
    stack = LiveStack(tmp_path, env={**FAST_BEAT, "WAITLIST_TICK_SECONDS": "0.5"})
    try:
        stack.start_api(workers=2)
        stack.start_worker(concurrency=2)
        stack.start_beat()
        yield stack
    finally:
        stack.stop_all()


def _users(prefix: str, count: int) -> list[User]:
    password = make_password(None)  # unusable: the tokens are made here
    return User.objects.bulk_create(
        User(username=f"{prefix}{i}", role=User.Role.USER, password=password) for i in range(count)
    )


class Client:
    """One buyer's HTTP calls over a keep-alive session of the calling thread."""

    _local = threading.local()

    def __init__(self, base_url: str, user: User):
        self.base_url, self.user = base_url, user
        self.headers = {"Authorization": f"Bearer {token_for(user)}"}

    def post(self, path: str, body: dict | None = None, key: str | None = None):
        session = getattr(self._local, "session", None) or requests.Session()
        self._local.session = session
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        response = session.post(self.base_url + path, json=body, headers=headers, timeout=TIMEOUT)
        return response.status_code, response.json()


def _sell_out(live: LiveStack, rng: random.Random):
    """An event with a waitlist, sold out to HOLDERS confirmed orders of 1-4 tickets."""
    sizes = [rng.randint(1, 4) for _ in range(HOLDERS)]
    event = Event.objects.create(
        name="Waitlist under a flood",
        date=timezone.now() + timedelta(days=30),
        total_tickets=sum(sizes),
    )
    waitlist_configure(event_id=event.pk, offer_seconds=600, paused=False)
    holders = [Client(live.base_url, user) for user in _users("holder", HOLDERS)]
    orders = []
    for i, (holder, size) in enumerate(zip(holders, sizes, strict=True)):
        status, body = holder.post(f"/events/{event.pk}/purchase/", {"quantity": size}, f"h{i}")
        assert status == 202, body
        orders.append((holder, body["id"], size))
    wait_until_no_pending(event.pk, timeout=30)
    assert Order.objects.filter(event_id=event.pk, status="confirmed").count() == HOLDERS
    return event, orders


def _join(live: LiveStack, event, rng: random.Random) -> list[tuple[Client, int]]:
    """ENTRIES buyers join one after another (their line order): 1-4 tickets, ones the
    most common so that every round can offer all its tickets."""
    line = []
    for user in _users("entry", ENTRIES):
        client = Client(live.base_url, user)
        (quantity,) = rng.choices([1, 2, 3, 4], weights=[2, 1, 1, 1])
        status, body = client.post(f"/events/{event.pk}/waitlist/join/", {"quantity": quantity})
        assert status == 201, body
        line.append((client, quantity))
    return line


class Flood(threading.Thread):
    """FLOODERS clients, each sending FLOOD_REQUESTS_EACH purchases: `answers` holds
    (user id, status, code) per request, `seconds` how long it took; `started` is set
    once the first tenth of the requests have been answered."""

    def __init__(self, live: LiveStack, event):
        super().__init__()
        self.path = f"/events/{event.pk}/purchase/"
        self.clients = [Client(live.base_url, user) for user in _users("flood", FLOODERS)]
        self.answers: list[tuple[int, int, str]] = []
        self.seconds = 0.0
        self.started = threading.Event()
        self.lock = threading.Lock()

    def shop(self, client: Client) -> None:
        for _ in range(FLOOD_REQUESTS_EACH):
            try:
                status, body = client.post(self.path, {"quantity": 1})
                code = body.get("code", "")
            except (requests.RequestException, ValueError) as exc:
                status, code = 0, type(exc).__name__
            with self.lock:
                self.answers.append((client.user.pk, status, code))
                if len(self.answers) >= FLOODERS * FLOOD_REQUESTS_EACH // 10:
                    self.started.set()

    def run(self) -> None:
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=FLOOD_THREADS) as pool:
            list(pool.map(self.shop, self.clients))
        self.seconds = time.monotonic() - began


def _cancel_at_once(orders) -> list[tuple[int, dict]]:
    barrier = threading.Barrier(len(orders))

    def cancel(item):
        holder, order_id, _ = item
        barrier.wait()
        return holder.post(f"/orders/{order_id}/cancel/")

    with ThreadPoolExecutor(max_workers=len(orders)) as pool:
        return list(pool.map(cancel, orders))


def _offered_tickets(event_id: int) -> int:
    offered = WaitlistEntry.objects.filter(event_id=event_id, offered_at__isnull=False)
    return offered.aggregate(n=Sum("offered_quantity"))["n"] or 0


def _assert_rounds_follow_the_rule(event_id: int, join_order: list[tuple[int, int]]) -> int:
    """Within each round, an entry waiting during it and passed over needed more tickets
    than the round offered behind it (its budget was at least what it offered); return
    the number of rounds that made offers."""
    entries = list(
        WaitlistEntry.objects.filter(event_id=event_id).order_by("line_key", "id")
        .values_list("user_id", "quantity", "offered_quantity", "offered_at")
    )  # fmt: skip
    assert [(user, quantity) for user, quantity, _, _ in entries] == join_order
    rounds: dict = defaultdict(set)
    for place, (_, quantity, offered, when) in enumerate(entries):
        if when is not None:
            assert offered == quantity, entries[place]
            rounds[when].add(place)
    for when, chosen in rounds.items():
        for place, (_, quantity, _, offered_at) in enumerate(entries):
            # Waiting during this round: never offered, or offered by a round that began
            # well after it (a round's offers share the time it began; rounds that began
            # close together may have decided in either order).
            if offered_at is None or offered_at > when + LATER:
                behind = sum(entries[p][1] for p in chosen if p > place)
                assert quantity > behind, (when, place, entries[place], sorted(chosen))
    return len(rounds)


def test_returns_under_a_sold_out_flood_go_once_each_to_the_line_in_order(live):
    rng = random.Random(1000)
    event, orders = _sell_out(live, rng)
    line = _join(live, event, rng)
    returned = sum(size for _, _, size in orders)
    assert sum(1 for _, quantity in line if quantity == 1) >= returned  # see _join

    flood = Flood(live, event)
    flood.start()
    assert flood.started.wait(60), "the flood did not start"
    cancelled_at, cancelled_wall = time.monotonic(), time.time()
    cancels = _cancel_at_once(orders)
    cancelled_in = time.monotonic() - cancelled_at
    assert {status for status, _ in cancels} == {200}, cancels
    flood.join(timeout=60)
    assert not flood.is_alive(), "the flood did not end"

    # Every returned ticket is offered: by the cancellations' tasks and beat's ticks.
    live.wait_until(
        lambda: _offered_tickets(event.pk) >= returned, "the offers", timeout=20, interval=0.1
    )
    offered_in = time.monotonic() - cancelled_at
    time.sleep(1.5)  # three more ticks: no offer beyond the returns
    assert _offered_tickets(event.pk) == returned
    figures = assert_invariants(event.pk)
    assert figures["gate_remaining"] == figures["database_remaining"] == 0  # no pool left
    offers = figures["database_offers"]
    assert sum(tickets for tickets, _ in offers.values()) == returned
    rounds = _assert_rounds_follow_the_rule(event.pk, [(c.user.pk, q) for c, q in line])

    # The flood got nothing: every answer a refusal that says "join the waitlist".
    answers = flood.answers
    assert len(answers) == FLOODERS * FLOOD_REQUESTS_EACH
    codes = Counter((status, code) for _, status, code in answers)
    assert set(codes) == {(409, "sold_out_waitlist_open")}, codes
    flooders = {user for user, _, _ in answers}
    assert not Order.objects.filter(event_id=event.pk, user_id__in=flooders).exists()

    # Each offered buyer sends two purchases at once: one takes the offer, the other is
    # refused; then the orders drain.
    offered = [(c, q) for c, q in line if c.user.pk in offers]

    def buy(attempt: tuple[Client, int, int]) -> tuple[int, int, dict]:
        client, quantity, n = attempt
        path = f"/events/{event.pk}/purchase/"
        return (client.user.pk, *client.post(path, {"quantity": quantity}, f"offer-{n}"))

    with ThreadPoolExecutor(max_workers=16) as pool:
        bought = list(pool.map(buy, [(c, q, n) for c, q in offered for n in range(2)]))
    accepted = Counter(user for user, status, _ in bought if status == 202)
    assert accepted == Counter({c.user.pk: 1 for c, _ in offered}), bought
    refused = {body.get("code") for _, status, body in bought if status != 202}
    assert refused == {"sold_out_waitlist_open"}, bought
    wait_until_no_pending(event.pk, timeout=30)
    figures = assert_invariants(
        event.pk,
        accepted_ids=[body["id"] for _, _, body in bought if "id" in body]
        + [order_id for _, order_id, _ in orders],
        expect_sold_out=True,
    )
    assert figures["tickets_sold"] == event.total_tickets
    taken = Order.objects.filter(event_id=event.pk, waitlist_entry__isnull=False)
    assert taken.filter(status="confirmed").count() == len(offers)
    assert sum(taken.values_list("quantity", flat=True)) == returned
    assert sold_figures(event.pk)["database_offers"] == {}
    times = WaitlistEntry.objects.filter(event_id=event.pk, offered_at__isnull=False)
    first = min(times.values_list("offered_at", flat=True)).timestamp() - cancelled_wall
    print(
        f"\nfirst round {first:.2f} s after the cancellations; returned {returned} tickets in {HOLDERS} cancellations; {len(offers)} offers "
        f"in {rounds} rounds, all made {offered_in:.2f} s after the cancellations began (the "
        f"last cancellation answered after {cancelled_in:.2f} s); flood "
        f"{len(answers)} requests in {flood.seconds:.2f} s ({len(answers) / flood.seconds:.0f}/s)"
    )
