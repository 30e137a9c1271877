"""Faults with waitlist offers out, in a live sale (tests/faults/conftest.py's `make_sale`:
the API server, a Celery worker and beat on a Redis of the test's own).

Each test sells an event out, lets eight buyers join its waitlist for one ticket each,
cancels three confirmed orders and waits until the offer rounds (the cancellations'
tasks and beat's tick) have offered every returned ticket, in line order. Then:
- a worker is SIGKILLed while it commits the order that takes an offer, and another is
  started: the order is committed once, the offer is not made again, nobody else gets it;
- Redis is restarted empty: once the gate is rebuilt from PostgreSQL (by the next
  purchase, or by reconciliation when no purchase comes), the offers are held again for
  the same buyers, who can still buy, and nobody else can;
- the broker is unreachable when an offered buyer buys: the 503 says nothing was
  bought, so the offer must still be theirs once the broker is back.
The rows go to docs/reliability.md like the other faults'.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

import pytest
import requests
from django.db.models import Sum

from core.gate.keys import gate_keys
from core.models import Order, Ticket, User, WaitlistEntry
from tests.conftest import token_for
from tests.faults.conftest import Sale
from tests.faults.test_faults import _lock_waiters, _pg
from tests.faults.tools import TcpProxy
from tests.invariants import invariants_hold, sold_figures
from tests.live import fire

pytestmark = [pytest.mark.faults, pytest.mark.live, pytest.mark.django_db(transaction=True)]

TOTAL, REQUESTS, ENTRIES, CANCELS = 60, 160, 8, 3
# Beat's waitlist tick twice a second (the default is every 2 s).
ENV = {"WAITLIST_TICK_SECONDS": "0.5"}


@dataclass
class Offers:
    """A sold-out sale with offers out: the waitlist's buyers (user, token) in line order,
    and the tickets the cancellations returned (one offer of one ticket each)."""

    sale: Sale
    line: list[tuple[User, str]]
    returned: int

    @property
    def offered(self) -> list[tuple[User, str]]:
        return self.line[: self.returned]

    @property
    def waiting(self) -> list[tuple[User, str]]:
        return self.line[self.returned :]

    def call(self, method: str, path: str, token: str, body: dict | None = None, key=None):
        headers = {"Authorization": f"Bearer {token}"}
        if key:
            headers["Idempotency-Key"] = key
        response = requests.request(
            method, self.sale.live.base_url + path, json=body, headers=headers, timeout=10
        )
        return response.status_code, response.json()

    def buy(self, token: str, key: str | None = None, *, count: bool = True):
        """One ticket for the buyer of `token`; the answer counts in the sale's row unless
        `count` is False (a replay: its order is counted once already)."""
        answer = self.call(
            "POST", f"/events/{self.sale.event_id}/purchase/", token, {"quantity": 1}, key
        )
        if count:
            self.sale.results.append(answer)
        return answer

    def offers_in_database(self) -> dict[int, tuple[int, int]]:
        return sold_figures(self.sale.event_id, self.sale.redis.client())["database_offers"]

    def offers_in_gate(self) -> dict[int, tuple[int, int]] | None:
        return sold_figures(self.sale.event_id, self.sale.redis.client())["gate_offers"]


def _offers_out(sale: Sale, make_user) -> Offers:
    """Sell the sale's event out with a waitlist on, line ENTRIES buyers up, cancel
    CANCELS confirmed orders; return once every returned ticket is offered."""
    admin = token_for(make_user(role=User.Role.ADMIN))
    path = f"/events/{sale.event_id}/waitlist/"
    offers = Offers(sale, [], 0)
    status, body = offers.call("PUT", path, admin, {"offer_seconds": 600})
    assert status == 200, body
    sale.start(REQUESTS).join()
    sale.live.wait_until(
        lambda: invariants_hold(sale.event_id, sale.redis.client()), "the sale to drain"
    )
    assert sold_figures(sale.event_id, sale.redis.client())["tickets_sold"] == TOTAL
    for _ in range(ENTRIES):
        user = make_user()
        offers.line.append((user, token_for(user)))
        status, body = offers.call("POST", path + "join/", offers.line[-1][1], {"quantity": 1})
        assert status == 201, body
    # Cancel the first CANCELS confirmed orders, each by its buyer.
    confirmed = set(
        Order.objects.filter(event_id=sale.event_id, status="confirmed").values_list(
            "pk", flat=True
        )
    )
    to_cancel = [
        (i, b) for i, (s, b) in enumerate(sale.results) if s == 202 and b["id"] in confirmed
    ][:CANCELS]
    for i, order in to_cancel:
        status, body = offers.call(
            "POST", f"/orders/{order['id']}/cancel/", sale.tokens[i % len(sale.tokens)]
        )
        assert status == 200, body
        offers.returned += order["quantity"]
    # Offered by the worker (the cancellations' tasks, beat's tick): the head of the line.
    expected = {user.pk for user, _ in offers.offered}
    sale.live.wait_until(
        lambda: set(offers.offers_in_database()) == expected, "the offers", timeout=20
    )
    sale.live.wait_until(
        lambda: offers.offers_in_gate() == offers.offers_in_database(), "the gate's offers"
    )
    return offers


def _assert_offered_once(offers: Offers) -> None:
    """The returned tickets went to the head of the line, once each, and were bought."""
    entries = WaitlistEntry.objects.filter(event_id=offers.sale.event_id)
    ever_offered = entries.filter(offered_at__isnull=False)
    assert set(ever_offered.values_list("user_id", flat=True)) == {u.pk for u, _ in offers.offered}
    assert ever_offered.aggregate(n=Sum("offered_quantity"))["n"] == offers.returned
    assert set(entries.filter(status="waiting").values_list("user_id", flat=True)) == {
        u.pk for u, _ in offers.waiting
    }
    taken = Order.objects.filter(event_id=offers.sale.event_id, waitlist_entry__isnull=False)
    assert sorted(taken.filter(status="confirmed").values_list("user_id", flat=True)) == sorted(
        u.pk for u, _ in offers.offered
    )
    assert not taken.filter(status="pending").exists()
    assert offers.offers_in_database() == offers.offers_in_gate() == {}


def test_worker_killed_while_committing_the_order_that_takes_an_offer(
    make_sale, make_user, reliability_rows
):
    sale = make_sale(total=TOTAL, env=ENV)
    offers = _offers_out(sale, make_user)
    (taker, token), *others = offers.offered
    observer, blocker = _pg(), _pg(autocommit=False)
    # Hold the event row: the commit of the offer's order blocks inside its transaction.
    blocker.execute("SELECT id FROM core_event WHERE id = %s FOR NO KEY UPDATE", [sale.event_id])
    status, order = offers.buy(token, key="take-the-offer")
    assert status == 202, order
    sale.live.wait_until(lambda: _lock_waiters(observer) >= 1, "the commit inside its transaction")
    assert Order.objects.get(pk=order["id"]).status == "pending"
    sale.live.stop("worker", signal.SIGKILL)  # the whole worker, pool and parent
    blocker.rollback()
    observer.close(), blocker.close()
    fault_ended = time.monotonic()
    sale.live.start_worker("worker-restarted")
    # While the order is pending, its offer is gone from both stores, not offered again;
    # a retry finds the same order, another purchase of the buyer's is refused.
    assert taker.pk not in offers.offers_in_database()
    assert taker.pk not in offers.offers_in_gate()
    assert offers.buy(token, key="take-the-offer", count=False) == (202, order)
    assert offers.buy(token)[1]["code"] == "sold_out_waitlist_open"
    for _, waiting in offers.waiting:
        assert offers.buy(waiting)[1]["code"] == "sold_out_waitlist_open"
    for _, other in others:
        assert offers.buy(other)[0] == 202
    row = sale.settle(fault_ended)
    assert Order.objects.get(pk=order["id"]).status == "confirmed"
    assert Ticket.objects.filter(order_id=order["id"]).count() == 1
    assert Order.objects.filter(user=taker, event_id=sale.event_id).count() == 1
    _assert_offered_once(offers)
    assert row["oversold"] == 0 and row["lost"] == 0
    assert row["tickets_sold"] == row["total"]
    reliability_rows["waitlist_worker_sigkill"] = {**row, "offers": offers.returned}


@pytest.mark.parametrize("rebuilt_by", ["purchase", "reconciliation"])
def test_redis_restarted_empty_with_offers_out(
    make_sale, make_user, private_redis, reliability_rows, rebuilt_by
):
    sale = make_sale(total=TOTAL, env=ENV)
    offers = _offers_out(sale, make_user)
    held = offers.offers_in_gate()
    assert held == offers.offers_in_database() and len(held) == offers.returned
    private_redis.restart_empty()  # the gate, its offers and the queued messages: gone
    fault_ended = time.monotonic()
    gate = gate_keys(sale.event_id)[0]
    if rebuilt_by == "reconciliation":
        # Nobody buys: beat's reconciliation rebuilds the gate, offers and all.
        sale.live.wait_until(lambda: private_redis.client().exists(gate), "the rebuild", timeout=20)
        assert offers.offers_in_gate() == held
    # Everybody but the offered buyers: the holders and the entries still waiting. The
    # first request (with rebuilt_by="purchase") rebuilds the gate from PostgreSQL.
    others = sale.tokens + [token for _, token in offers.waiting]
    crowd = [
        (f"/events/{sale.event_id}/purchase/", {"quantity": 1}, {"Authorization": f"Bearer {t}"})
        for t in others * 3
    ]
    refused = fire(sale.live.base_url, crowd, concurrency=16)
    sale.results.extend(refused)
    assert {(s, b.get("code")) for s, b in refused} == {(409, "sold_out_waitlist_open")}
    assert offers.offers_in_gate() == held  # the same buyers, the same entries
    for _, token in offers.offered:
        status, body = offers.buy(token)
        assert status == 202, body
        assert offers.buy(token)[1]["code"] == "sold_out_waitlist_open"
    row = sale.settle(fault_ended)
    _assert_offered_once(offers)
    assert row["oversold"] == 0 and row["lost"] == 0
    assert row["tickets_sold"] == row["total"]
    name = "waitlist_redis_restart" + ("_reconcile" if rebuilt_by == "reconciliation" else "")
    reliability_rows[name] = {**row, "offers": offers.returned}


def test_an_offered_buyer_refused_by_a_broker_outage_keeps_the_offer(
    make_sale, make_user, private_redis, reliability_rows
):
    proxy = TcpProxy(private_redis.port)
    try:
        sale = make_sale(
            total=TOTAL, env={**ENV, "CELERY_BROKER_URL": f"redis://127.0.0.1:{proxy.port}/0"}
        )
        offers = _offers_out(sale, make_user)
        (taker, token), *_ = offers.offered
        me = f"/events/{sale.event_id}/waitlist/me/"
        proxy.down()
        status, body = offers.buy(token)
        # The accept found no drain queued and could not queue one: "nothing was done".
        assert (status, body["code"]) == (503, "queue_unavailable"), body
        proxy.up()
        fault_ended = time.monotonic()
        time.sleep(1.5)  # three of beat's waitlist ticks
        entry = offers.call("GET", me, token)[1]
        assert entry["status"] == "offered", entry
        assert offers.offers_in_database().get(taker.pk) == offers.offers_in_gate().get(taker.pk)
        status, body = offers.buy(token)
        assert status == 202, body
        for _, other in offers.offered[1:]:
            assert offers.buy(other)[0] == 202
        row = sale.settle(fault_ended)
    finally:
        proxy.close()
    # The 503's order is rejected; the retry's took the offer, which went nowhere else.
    mine = Order.objects.filter(event_id=sale.event_id, user=taker).order_by("id")
    assert list(mine.values_list("status", flat=True)) == ["rejected", "confirmed"]
    _assert_offered_once(offers)
    assert row["oversold"] == 0 and row["lost"] == 0
    reliability_rows["waitlist_broker_unreachable"] = {**row, "offers": offers.returned}
