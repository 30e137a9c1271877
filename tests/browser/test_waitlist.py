"""The buyer page's waitlist, in headless Chromium against a live sale behind the door.

Written against the waitlist's HTTP contract (docs/frontend.md, "The reference buyer
page": PUT/GET /events/<id>/waitlist/, POST .../join/, GET/DELETE .../me/, the entry's
`status`, `position`, `offer_quantity`, `expires_in`, `order_id`). It skips, saying
so, where the waitlist's endpoints do not exist yet (404 on the Admin's PUT); once they
do, it runs with nothing to change.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from core.models import Order, User
from tests.conftest import token_for
from tests.frontdoor.door import needs_haproxy

from .page import PASSWORD, concert, confirmed, needs_chromium, purchases

pytestmark = [pytest.mark.live, needs_haproxy, needs_chromium]


def bearer(user) -> dict:
    return {"Authorization": f"Bearer {token_for(user)}"}


def seconds(countdown: str) -> int:
    minutes, secs = re.fullmatch(r"(\d+):(\d\d)", countdown).groups()
    return int(minutes) * 60 + int(secs)


def test_a_sold_out_event_offers_the_waitlist_and_a_cancellation_becomes_an_offer_bought_here(
    sale, buyer_page, make_user, make_event
):
    event = concert(make_event, total_tickets=2)
    admin = make_user(role=User.Role.ADMIN)
    waitlist = f"{sale.url}/events/{event.pk}/waitlist/"
    turned_on = requests.put(
        waitlist, json={"offer_seconds": 600, "paused": False}, headers=bearer(admin), timeout=10
    )
    if turned_on.status_code == 404:
        pytest.skip("the waitlist's endpoints are not in this build (PUT .../waitlist/ is 404)")
    assert turned_on.status_code in (200, 201), turned_on.text
    # Someone buys every ticket.
    holder = make_user()
    bought = requests.post(f"{sale.url}/events/{event.pk}/purchase/", json={"quantity": 2},
                           headers=bearer(holder), timeout=10)  # fmt: skip
    assert bought.status_code == 202, bought.text
    order_id = bought.json()["id"]
    sale.live.wait_until(
        lambda: Order.objects.get(pk=order_id).status == "confirmed", "the holder's order"
    )

    buyer = make_user()
    page = buyer_page(event)
    page.log_in(buyer.username, PASSWORD)
    # The event reads sold out (or, its copy a second stale, the purchase says so).
    if page.wait_for_stage("soldout", "buy") == "buy":
        page.press_enter()
        page.wait_for_stage("soldout")
    page.wait_for(lambda p: p.text("waitlist-form"), "the waitlist's form")
    assert "on the waitlist" in page.text("soldout-text")
    page.screenshot("sold-out-waitlist")
    assert page.focused() == "Join the waitlist"
    page.set_quantity("waitlist-quantity", 1)
    page.press_enter()
    page.wait_for_stage("waitlist")
    page.wait_for(lambda p: "number 1 on the waitlist" in p.text("waitlist-text"), "the place")

    # The holder cancels: the tickets come back, and the waitlist offers them in order.
    cancelled = requests.post(f"{sale.url}/orders/{order_id}/cancel/", headers=bearer(holder),
                              timeout=10)  # fmt: skip
    assert cancelled.status_code == 200, cancelled.text
    page.wait_for_stage("offer", timeout=60)
    assert "1 ticket(s) came back" in page.text("offer-text")
    first = seconds(page.text("offer-countdown"))
    assert 0 < first <= 600
    time.sleep(2.2)
    assert seconds(page.text("offer-countdown")) < first  # it counts down
    page.screenshot("waitlist-offer")
    assert page.focused() == "Buy them"
    page.press_enter()
    page.wait_for(confirmed, "confirmed")

    order = Order.objects.get(user=buyer)
    assert (order.status, order.quantity) == ("confirmed", 1)
    assert [r.status for r in purchases(page)] == ["202"]
    entry = requests.get(waitlist + "me/", headers=bearer(buyer), timeout=10).json()
    assert (entry["status"], entry["order_id"]) == ("bought", order.pk)
