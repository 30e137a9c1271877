"""The order of offers, checked against the stated rule computed independently.

50 buyers join a sold-out event's waitlist for 1-4 tickets each, then 30 confirmed orders
of 1-4 tickets are cancelled one by one, each followed by an offer round. The rule
(core/services/waitlists.py): the tickets not offered yet go, walking the waiting entries
in line order, to every entry whose quantity fits what is still unoffered; an entry passed
over keeps its place and comes first for the next return. `Line` below is that rule and
nothing else: it knows the entries only in the order they joined, never reads the
database. Then offers expire, and their tickets pass on by the same rule.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.utils import timezone

from core.gate.waitlist import waitlist_gate_offers, waitlist_gate_read
from core.models import Order, WaitlistEntry
from core.services.gate import gate_reconcile_event
from core.services.waitlist_offers import waitlist_offer, waitlist_offers_expire
from core.services.waitlists import waitlist_configure
from tests.invariants import assert_invariants
from tests.waitlist.conftest import buy, commit, join

pytestmark = pytest.mark.django_db

ENTRIES, RETURNS, HOLDERS = 50, 30, 36
OFFER_SECONDS = 600


@dataclass
class Line:
    """The waitlist as the rule says it behaves: (user id, quantity) waiting, in line order."""

    waiting: list[tuple[int, int]]
    unoffered: int = 0  # returned tickets no entry could take yet (the gate's pool)
    on_sale: int = 0  # returned tickets that went back on sale: nobody left waiting
    offered: dict[int, int] = field(default_factory=dict)  # user -> tickets, offers out

    def requantify(self, user: int, quantity: int) -> None:
        self.waiting = [(u, quantity if u == user else q) for u, q in self.waiting]

    def offer(self, returned: int) -> list[tuple[int, int]]:
        """Add `returned` tickets and make the round's offers; return them in line order."""
        self.unoffered += returned
        made = []
        for user, quantity in self.waiting:
            if quantity <= self.unoffered:
                made.append((user, quantity))
                self.unoffered -= quantity
        self.waiting = [entry for entry in self.waiting if entry not in made]
        self.offered.update(made)
        if not self.waiting:
            self.on_sale, self.unoffered = self.on_sale + self.unoffered, 0
        return made

    def expire(self, users: set[int]) -> list[tuple[int, int]]:
        """End these users' offers; their tickets go on to the line in one round."""
        returned = sum(self.offered.pop(user) for user in users)
        return self.offer(returned)


def _offers_in_database(event_id: int) -> dict[int, int]:
    out = WaitlistEntry.objects.filter(
        event_id=event_id, status=WaitlistEntry.Status.OFFERED, orders__isnull=True
    )
    return dict(out.values_list("user_id", "offered_quantity"))


def _assert_matches(event_id: int, line: Line, label: str) -> None:
    """The database's and the gate's offers, pool and line are the rule's, exactly."""
    assert _offers_in_database(event_id) == line.offered, label
    gate_offers = {
        user: tickets for user, (tickets, _) in waitlist_gate_offers(event_id=event_id).items()
    }
    assert gate_offers == line.offered, label
    gate = waitlist_gate_read(event_id=event_id)
    assert (gate.pool, gate.remaining) == (line.unoffered, line.on_sale), label
    waiting = WaitlistEntry.objects.filter(event_id=event_id, status=WaitlistEntry.Status.WAITING)
    in_line = list(waiting.order_by("line_key", "id").values_list("user_id", "quantity"))
    assert in_line == line.waiting, label
    assert_invariants(event_id, label=label)


@pytest.fixture
def sale(make_event, buyers):
    """A sold-out event whose HOLDERS confirmed orders have 1-4 tickets each (seeded)."""
    rng = random.Random(2020)
    sizes = [rng.randint(1, 4) for _ in range(HOLDERS)]
    event = make_event(
        total_tickets=sum(sizes), sale_starts_at=timezone.now() - timedelta(minutes=1)
    )
    waitlist_configure(event_id=event.pk, offer_seconds=OFFER_SECONDS, paused=False)
    _, clients = buyers(HOLDERS)
    orders = []
    for client, size in zip(clients, sizes, strict=True):
        response = buy(client, event, size)
        assert response.status_code == 202, response.json()
        orders.append((client, response.json()["id"], size))
    commit(event)
    assert waitlist_gate_read(event_id=event.pk).remaining == 0
    return event, orders


@dataclass
class Run:
    """The sale as the test drives it: the rule's line, the buyers' clients, the returns."""

    event: object
    line: Line
    client_of: dict
    returned: int = 0
    round_of: dict[int, int] = field(default_factory=dict)  # user -> round of its offer
    passed_over: int = 0  # rounds whose offers skipped the head of the line
    kept_back: int = 0  # rounds after which tickets waited in the pool


def _join(event, buyers, rng: random.Random) -> Run:
    """ENTRIES buyers join in turn; five join again with a new quantity (same place)."""
    users, clients = buyers(ENTRIES)
    run = Run(event, Line(waiting=[]), {u.pk: c for u, c in zip(users, clients, strict=True)})
    for user, client in zip(users, clients, strict=True):
        # Fewer small entries than large ones, so that the line runs out of entries a
        # small return fits and tickets have to wait in the pool for the next return.
        (quantity,) = rng.choices([1, 2, 3, 4], weights=[1, 2, 3, 4])
        response = join(client, event, quantity)
        assert response.status_code == 201, response.json()
        run.line.waiting.append((user.pk, quantity))
    for user in rng.sample(users, 5):
        quantity = rng.randint(1, 4)
        response = join(run.client_of[user.pk], event, quantity)
        assert response.status_code == 200, response.json()
        run.line.requantify(user.pk, quantity)
    _assert_matches(event.pk, run.line, "after the joins")
    return run


def _return(run: Run, orders, rng: random.Random, t0: float) -> None:
    """Cancel RETURNS of the holders' orders, each followed by an offer round at t0 + i."""
    line = run.line
    for i, (holder, order_id, size) in enumerate(rng.sample(orders, RETURNS)):
        response = holder.post(f"/orders/{order_id}/cancel/")
        assert response.status_code == 200, response.json()
        run.returned += size
        head = line.waiting[0] if line.waiting else None
        expected = line.offer(size)
        run.round_of.update((user, i) for user, _ in expected)
        run.passed_over += bool(expected) and head not in expected
        run.kept_back += line.unoffered > 0
        made = waitlist_offer(event_id=run.event.pk, now=t0 + i)
        assert made == len(expected), f"return {i} of {size}"
        _assert_matches(run.event.pk, line, f"after return {i} of {size}")


def test_offers_follow_the_rule_through_thirty_returns_of_random_sizes(sale, buyers):
    event, orders = sale
    rng = random.Random(20)
    run = _join(event, buyers, rng)
    _return(run, orders, rng, time.time())
    # The draw exercised the rule's interesting cases: returns that skipped the head for
    # a smaller entry behind it, and tickets kept in the pool because no entry fitted.
    assert run.passed_over > 0 and run.kept_back > 0, (run.passed_over, run.kept_back)
    assert run.line.waiting, "the line emptied: the draw no longer tests who is passed over"
    # Nobody outside the offers gets the pool or the offers' tickets.
    _, (flood,) = buyers(1)
    assert buy(flood, event).json()["code"] == "sold_out_waitlist_open"
    first_waiting = run.client_of[run.line.waiting[0][0]]
    assert buy(first_waiting, event).json()["code"] == "sold_out_waitlist_open"
    assert_invariants(event.pk)


def test_expired_offers_pass_to_the_next_entries_that_fit(sale, buyers):
    event, orders = sale
    rng = random.Random(20)
    run = _join(event, buyers, rng)
    t0 = time.time()
    _return(run, orders, rng, t0)
    line = run.line

    # Half the offers of the first 15 rounds are bought; the rest of them then expire.
    early = sorted(user for user, i in run.round_of.items() if i <= 14)
    bought = set(early[::2])
    for user in bought:
        response = buy(run.client_of[user], event, line.offered.pop(user))
        assert response.status_code == 202, response.json()
    commit(event)
    due = set(early) - bought
    assert waitlist_offers_expire(now=t0 + 14 + OFFER_SECONDS + 0.5) == len(due) > 0
    assert line.expire(due), "the expired tickets went to nobody"
    _assert_matches(event.pk, line, "after the first expiry")
    expired = WaitlistEntry.objects.filter(event_id=event.pk, status="expired")
    assert set(expired.values_list("user_id", flat=True)) == due
    assert buy(run.client_of[min(due)], event).json()["code"] == "sold_out_waitlist_open"

    # Every offer still out expires, those just passed on included: on again by the rule.
    rest = set(line.offered)
    assert waitlist_offers_expire(now=t0 + 10 * OFFER_SECONDS) == len(rest)
    line.expire(rest)
    _assert_matches(event.pk, line, "after the second expiry")

    # The offers now out are bought; nothing is lost or sold twice.
    for user in list(line.offered):
        assert buy(run.client_of[user], event, line.offered.pop(user)).status_code == 202
    commit(event)
    figures = assert_invariants(event.pk)
    taken = Order.objects.filter(event_id=event.pk, waitlist_entry__isnull=False)
    unsold = line.unoffered + line.on_sale
    assert sum(taken.values_list("quantity", flat=True)) + unsold == run.returned
    assert figures["tickets_sold"] == event.total_tickets - unsold


def test_reconciliation_finds_a_pool_no_entry_fits_in_agreement(sold_out, buyers):
    """A return smaller than every waiting entry stays in the pool, and the gate then
    agrees with PostgreSQL: reconciliation has nothing to correct."""
    event, orders = sold_out(total=4)
    _, (big,) = buyers(1)
    join(big, event, 3)
    holder, order_id = orders[0]
    assert holder.post(f"/orders/{order_id}/cancel/").status_code == 200
    assert waitlist_offer(event_id=event.pk) == 0
    assert waitlist_gate_read(event_id=event.pk).pool == 1
    assert_invariants(event.pk)
    assert gate_reconcile_event(event_id=event.pk) == "ok"
