"""OWASP API6 (sensitive business flows), API4 (rate limits) and API2 (password
guessing) against live processes.

A scalper owns one account and a script: fifty purchases at once, or cancel and buy
again in a loop, must never leave them holding more than the event's per-user limit.
The rate limits must hold across API worker processes (they are counted in Redis, not in a
process), which only separate processes can show: each test starts the API server with two
workers, checks in its access log that both served the burst, and, where orders are
committed, one Celery worker. The last test keeps a known gap visible: the limit is the
Redis gate's alone.
"""

import itertools
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db.models import Sum

from core.gate.store import gate_held
from core.models import Order
from core.redis_client import get_redis
from core.services import purchases
from core.services.orders import orders_commit
from tests.conftest import token_for
from tests.invariants import assert_invariants, wait_until_no_pending
from tests.live import LiveStack

pytestmark = [pytest.mark.security, pytest.mark.django_db(transaction=True)]

LIMIT = 4
# Every request in the access log with the pid of the API worker that served it.
ACCESS_LOG = {"API_ACCESS_LOG": "1"}


@pytest.fixture
def start(transactional_db, tmp_path):
    """Start the API (2 workers, access log with pids) and maybe one Celery worker."""
    stacks = []

    def make(*, env: dict | None = None, worker: bool = True) -> LiveStack:
        live = LiveStack(tmp_path, env={**ACCESS_LOG, **(env or {})})
        stacks.append(live)
        live.start_api(workers=2)
        wait_for_both_workers(live)
        if worker:
            live.start_worker(concurrency=1)
        return live

    yield make
    for live in stacks:
        live.stop_all()


def post_all(
    base_url: str, items: list[tuple[str, dict, dict]], concurrency: int
) -> list[requests.Response]:
    """POST (path, json, headers) items from `concurrency` threads, a session each."""
    sessions: dict[int, requests.Session] = {}

    def send(item):
        session = sessions.setdefault(threading.get_ident(), requests.Session())
        path, body, headers = item
        return session.post(base_url + path, json=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(send, items))


def post_one(live: LiveStack, item: tuple[str, dict, dict]) -> requests.Response:
    path, body, headers = item
    return requests.post(live.base_url + path, json=body, headers=headers, timeout=30)


def serving_pids(live: LiveStack, path_pattern: str, method: str = "POST") -> set[str]:
    """The API worker pids that answered requests whose path matches."""
    pattern = re.compile(rf"pid=<?(\d+)>? {method} {path_pattern} \d{{3}}")
    return {match.group(1) for match in pattern.finditer(live.log("api"))}


def wait_for_both_workers(live: LiveStack) -> None:
    """Return once both API workers answer (the stack waits for the first only)."""

    def both_answered() -> bool:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda _: requests.get(f"{live.base_url}/health/", timeout=5), range(8)))
        return len(serving_pids(live, "/health/", method="GET")) == 2

    live.wait_until(both_answered, "both API workers", interval=0.2)


def wait_for_a_fresh_window(seconds_needed: float = 15.0) -> None:
    """Start a burst early in a one-minute window of the fixed-window rate limit.

    A burst that straddled two windows would rightly be allowed twice the rate.
    """
    left = 60 - time.time() % 60
    if left < seconds_needed:
        time.sleep(left + 0.5)


def confirmed_quantity(user, event) -> int:
    orders = Order.objects.filter(user=user, event=event, status=Order.Status.CONFIRMED)
    return orders.aggregate(n=Sum("quantity"))["n"] or 0


def purchase(event, token: str, quantity: int, key: str | None = None) -> tuple[str, dict, dict]:
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    return (f"/events/{event.pk}/purchase/", {"quantity": quantity}, headers)


# --- Scalping: the per-user limit -------------------------------------------------------


@pytest.mark.live
@pytest.mark.parametrize("quantities", [[1], [1, 2, 3, 4]], ids=["one-each", "mixed"])
def test_fifty_concurrent_purchases_by_one_user_never_exceed_the_per_user_limit(
    start, buyer, make_event, quantities
):
    event = make_event(total_tickets=100, max_tickets_per_user=LIMIT)
    live = start()
    token = token_for(buyer)
    cycle = itertools.cycle(quantities)
    burst = [purchase(event, token, next(cycle), key=f"scalp-{i}") for i in range(50)]

    responses = post_all(live.base_url, burst, concurrency=25)

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {202, 409}, set(statuses)
    refusals = {r.json()["code"] for r in responses if r.status_code == 409}
    assert refusals <= {"limit_exceeded"}
    accepted = sum(r.json()["quantity"] for r in responses if r.status_code == 202)
    assert 0 < accepted <= LIMIT
    if quantities == [1]:
        assert accepted == LIMIT  # stock was plenty: exactly the limit, not less
    wait_until_no_pending(event.pk)
    assert confirmed_quantity(buyer, event) == accepted <= LIMIT
    assert gate_held(event_id=event.pk, user_id=buyer.pk) == accepted
    assert_invariants(event.pk)
    assert len(serving_pids(live, r"/events/\d+/purchase/")) == 2


@pytest.mark.live
def test_cancel_and_rebuy_loops_never_hold_more_than_the_per_user_limit(start, buyer, make_event):
    event = make_event(total_tickets=100, max_tickets_per_user=LIMIT)
    live = start()
    token = token_for(buyer)
    auth = {"Authorization": f"Bearer {token}"}
    first = post_one(live, purchase(event, token, LIMIT, key="round-0"))
    assert first.status_code == 202
    wait_until_no_pending(event.pk)
    keys = itertools.count(1)

    for round_ in range(4):
        held = Order.objects.filter(user=buyer, event=event, status=Order.Status.CONFIRMED)
        cancels = [(f"/orders/{order.pk}/cancel/", {}, auth) for order in held]
        buys = [purchase(event, token, 1 + i % LIMIT, key=f"round-{next(keys)}") for i in range(12)]
        # Cancels race the purchases: some buys see the old holding, some the freed one.
        responses = post_all(live.base_url, cancels + buys, concurrency=16)

        assert all(r.status_code == 200 for r in responses[: len(cancels)]), round_
        bought = responses[len(cancels) :]
        assert {r.status_code for r in bought} <= {202, 409}
        assert {r.json()["code"] for r in bought if r.status_code == 409} <= {"limit_exceeded"}
        wait_until_no_pending(event.pk)
        # Every buy may have lost the race to its round's cancel; none may have won twice.
        assert confirmed_quantity(buyer, event) <= LIMIT, round_
        assert gate_held(event_id=event.pk, user_id=buyer.pk) == confirmed_quantity(buyer, event)
        assert_invariants(event.pk)

    # Replaying the first purchase's key returns that (cancelled) order: no fifth holding.
    replay = post_one(live, purchase(event, token, LIMIT, key="round-0"))
    assert replay.status_code == 202
    assert (replay.json()["id"], replay.json()["status"]) == (first.json()["id"], "cancelled")
    assert replay.headers["Idempotent-Replayed"] == "true"
    wait_until_no_pending(event.pk)
    assert confirmed_quantity(buyer, event) <= LIMIT
    assert_invariants(event.pk)


# --- Rate limits across processes -----------------------------------------------------


def assert_throttled(response: requests.Response) -> None:
    assert response.status_code == 429, response.text[:200]
    assert response.json()["code"] == "throttled"
    assert 0 < int(response.headers["Retry-After"]) <= 60


@pytest.mark.live
def test_the_purchase_rate_limit_holds_across_api_processes(start, buyer, make_event):
    event = make_event(total_tickets=1000)
    live = start(env={"THROTTLE_PURCHASE_RATE": "5/min"}, worker=False)
    token = token_for(buyer)
    wait_for_a_fresh_window()

    responses = post_all(
        live.base_url, [purchase(event, token, 1) for _ in range(20)], concurrency=10
    )

    passed = [r for r in responses if r.status_code != 429]
    assert len(passed) == 5
    assert {r.status_code for r in passed} == {202}
    for response in responses:
        if response.status_code == 429:
            assert_throttled(response)
    assert Order.objects.filter(user=buyer).count() == 5
    assert len(serving_pids(live, r"/events/\d+/purchase/")) == 2


@pytest.mark.live
def test_the_login_rate_limit_holds_across_api_processes(start, buyer):
    live = start(env={"THROTTLE_LOGIN_RATE": "5/min"}, worker=False)
    wrong = {"username": buyer.username, "password": "not-the-password"}
    wait_for_a_fresh_window()

    responses = post_all(live.base_url, [("/login/", wrong, {}) for _ in range(20)], concurrency=10)
    right = requests.post(
        f"{live.base_url}/login/",
        json={"username": buyer.username, "password": "correct-horse-battery"},
        timeout=10,
    )

    passed = [r for r in responses if r.status_code != 429]
    assert len(passed) == 5
    assert {(r.status_code, r.json()["code"]) for r in passed} == {(401, "authentication_failed")}
    for response in responses:
        if response.status_code == 429:
            assert_throttled(response)
    # The right password waits too: a guess must not be able to confirm a hit.
    assert_throttled(right)
    assert len(serving_pids(live, "/login/")) == 2


# --- Password guessing: per account and per address ----------------------------------

# As behind one reverse proxy: the client address is the last X-Forwarded-For entry.
BEHIND_A_PROXY = {
    "DJANGO_TRUSTED_PROXIES": "1",
    "THROTTLE_LOGIN_RATE": "30/min",
    "THROTTLE_LOGIN_FAILURES": "10/15min",
}


def login_from(address: str, username: str, password: str) -> tuple[str, dict, dict]:
    body = {"username": username, "password": password}
    return ("/login/", body, {"X-Forwarded-For": address})


@pytest.mark.live
def test_credential_stuffing_from_twenty_addresses_is_stopped_per_account(start, buyer, make_user):
    other = make_user()
    live = start(env=BEHIND_A_PROXY, worker=False)
    wait_for_a_fresh_window()
    # 10 guesses per address: each stays under the address limit (30/min).
    guesses = [login_from(f"10.0.0.{i % 20}", buyer.username, f"guess-{i}") for i in range(200)]

    responses = post_all(live.base_url, guesses, concurrency=10)

    answers = [(r.status_code, r.json()["code"]) for r in responses]
    assert answers.count((401, "authentication_failed")) == 10
    assert answers.count((429, "too_many_attempts")) == 190
    for response in responses:
        if response.status_code == 429:
            assert 0 < int(response.headers["Retry-After"]) <= 15 * 60
    # The owner waits out the window too (the trade-off, docs/security.md)...
    owner = post_one(live, login_from("10.1.0.1", buyer.username, "correct-horse-battery"))
    assert (owner.status_code, owner.json()["code"]) == (429, "too_many_attempts")
    # ...but the attacking addresses were not blocked for other accounts.
    real = post_one(live, login_from("10.0.0.3", other.username, "correct-horse-battery"))
    assert real.status_code == 200 and real.json()["access"]
    assert len(serving_pids(live, "/login/")) == 2


@pytest.mark.live
def test_password_spraying_from_one_address_is_stopped_per_address(start, make_user):
    victims = [make_user() for _ in range(200)]
    other = make_user()
    live = start(env=BEHIND_A_PROXY, worker=False)
    wait_for_a_fresh_window()
    sprays = [login_from("10.0.0.66", user.username, "Summer2026!") for user in victims]

    responses = post_all(live.base_url, sprays, concurrency=10)

    answers = [(r.status_code, r.json()["code"]) for r in responses]
    assert answers.count((401, "authentication_failed")) == 30
    assert answers.count((429, "throttled")) == 170
    for response in responses:
        if response.status_code == 429:
            assert_throttled(response)
    real = post_one(live, login_from("10.0.0.67", other.username, "correct-horse-battery"))
    assert real.status_code == 200 and real.json()["access"]
    assert len(serving_pids(live, "/login/")) == 2


# --- The limit holds in PostgreSQL too, when the gate forgot a reservation ------------


def test_the_per_user_limit_survives_redis_losing_the_gate_during_a_purchase(
    buyer, make_event, monkeypatch
):
    event = make_event(total_tickets=100, max_tickets_per_user=LIMIT)
    record_order = purchases._record_order

    def record_after_redis_lost_the_gate(**kwargs):
        # Redis restarts empty between this purchase's reservation and its insert, and
        # the same buyer's next purchase rebuilds the gate from PostgreSQL meanwhile.
        monkeypatch.setattr(purchases, "_record_order", record_order)
        get_redis().flushdb()
        purchases.purchase_request(user_id=buyer.pk, event_id=event.pk, quantity=LIMIT)
        return record_order(**kwargs)

    monkeypatch.setattr(purchases, "_record_order", record_after_redis_lost_the_gate)
    purchases.purchase_request(user_id=buyer.pk, event_id=event.pk, quantity=LIMIT)
    orders_commit(event_id=event.pk)

    assert confirmed_quantity(buyer, event) <= LIMIT
