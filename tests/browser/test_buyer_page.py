"""The buyer page (/buyer/?event=<id>) in headless Chromium against a live sale behind the
front door: the API server, a Celery worker and beat, HAProxy, and scripted buyers.

Each test reads the page as a person would (the stage shown, the texts, the keyboard
focus) and checks what the page did against the server: the orders in PostgreSQL, and
the page's own request log for the pace of its retries and polls.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from core.models import Order
from core.services.events import event_update
from core.services.waiting_room import waiting_room_configure
from tests.conftest import token_for
from tests.frontdoor.door import needs_haproxy
from tests.invariants import assert_invariants, wait_until_no_pending

from .crowd import Crowd, moment
from .page import PASSWORD, concert, confirmed, needs_chromium, number_shown, purchases

pytestmark = [pytest.mark.live, needs_haproxy, needs_chromium]

CROWD = 300


def test_a_buyer_who_joined_before_the_opening_waits_with_the_crowd_buys_and_sees_confirmed(
    sale, buyer_page, make_user, make_event
):
    event = concert(
        make_event, total_tickets=CROWD + 20, sale_starts_at=timezone.now() + timedelta(minutes=10)
    )
    # 20 a second: a place in the middle of the crowd waits several seconds.
    waiting_room_configure(event_id=event.pk, rate=20, admission_seconds=60, paused=False)
    crowd = Crowd(sale.url, event.pk, [token_for(make_user()) for _ in range(CROWD)])
    crowd.join()
    buyer = make_user()

    page = buyer_page(event)
    page.log_in(buyer.username, PASSWORD)
    page.wait_for_stage("waiting")
    page.wait_for(lambda p: "drawn at random" in p.announced(), "the early joiner's place")
    assert "joined before the opening" in page.text("waiting-note")
    # The opening, a few seconds from now; the crowd shops as the room lets it in.
    opens = time.time() + 4
    event_update(event_id=event.pk, data={"sale_starts_at": moment(opens)})
    shopping = threading.Thread(target=crowd.shop, kwargs={"until": opens + 90})
    shopping.start()
    try:
        # What the page shows while it waits (a low number drawn may be admitted at once).
        numbers, positions = set(), []
        while page.stage() == "waiting" and time.time() < opens + 60:
            if number_shown(page):
                numbers.add(number_shown(page))
                positions.append(int(page.text("position")))
            time.sleep(0.25)
        page.wait_for_stage("buy", timeout=5)
        room = f"{sale.url}/events/{event.pk}/waiting-room/"
        me = requests.get(room + "me/", headers={"Authorization": f"Bearer {token_for(buyer)}"})
        number = me.json()["number"]
        assert numbers <= {number}
        assert "your turn" in page.text("status")
        assert page.text("buy-countdown")  # the admission's time left
        page.screenshot("admitted")
        # The page put the focus on Buy; two tickets, typed, and Enter in the field.
        assert page.focused() == "Buy"
        page.set_quantity("quantity", 2)
        page.press_enter()
        page.wait_for(confirmed, "confirmed", timeout=60)
        page.screenshot("confirmed")
    finally:
        shopping.join()

    order = Order.objects.get(user=buyer)
    assert (order.status, order.quantity, len(order.idempotency_key)) == ("confirmed", 2, 32)
    assert f"order {order.pk}" in page.text("final-text")
    assert [r.status for r in purchases(page)] == ["202"]
    # The place only ever went down while the page showed it.
    assert positions == sorted(positions, reverse=True)
    # The public state at its pace (~2 s, jittered), never in a tight loop.
    looks = [r.at for r in page.requests() if r.method == "GET" and r.path == f"/events/{event.pk}/waiting-room/"]  # fmt: skip
    assert all(b - a >= 1.5 for a, b in zip(looks, looks[1:], strict=False)), looks
    wait_until_no_pending(event.pk)
    accepted = [o["id"] for o in crowd.orders] + [order.pk]
    assert_invariants(event.pk, accepted_ids=accepted)
    ahead = sum(1 for n in crowd.numbers.values() if n < number)
    print(f"\nthe page's buyer drew number {number} of {CROWD + 1} ({ahead} scripted buyers "
          f"ahead bought before it); places to go shown: {positions}")  # fmt: skip


def test_a_reload_in_the_line_keeps_the_place_and_after_the_purchase_the_order(
    sale, buyer_page, make_user, make_event
):
    event = concert(
        make_event, total_tickets=10, sale_starts_at=timezone.now() + timedelta(minutes=10)
    )
    waiting_room_configure(event_id=event.pk, rate=10, admission_seconds=60, paused=False)
    Crowd(sale.url, event.pk, [token_for(make_user()) for _ in range(CROWD)]).join()
    opens = time.time() + 1
    event_update(event_id=event.pk, data={"sale_starts_at": moment(opens)})
    time.sleep(opens - time.time() + 0.5)
    buyer = make_user()

    # Joined after the opening: behind every early joiner, admitted 10 a second.
    page = buyer_page(event)
    page.log_in(buyer.username, PASSWORD)
    assert page.wait_for(number_shown, "a number") == CROWD + 1
    page.wait_for(lambda p: 0 < int(p.text("position") or 0) < CROWD - 20, "the line to move")
    before = int(page.text("position"))
    assert f"Your number is {CROWD + 1}" in page.announced()  # the aria-live region
    progress = page.driver.find_element("id", "progress")
    assert 0 < float(progress.get_attribute("value")) < float(progress.get_attribute("max"))
    page.screenshot("waiting")

    page.reload()
    assert page.wait_for(number_shown, "the number after the reload") == CROWD + 1
    page.wait_for(lambda p: p.text("position").isdigit(), "the position after the reload")
    assert int(page.text("position")) <= before
    # The page joined again and the room answered the same place (200, not 201).
    joins = [r.status for r in page.requests() if r.path.endswith("/waiting-room/join/")]
    assert joins == ["200"]

    waiting_room_configure(event_id=event.pk, rate=1000, admission_seconds=60, paused=False)
    page.wait_for_stage("buy", timeout=30)
    page.press_enter()
    page.wait_for(confirmed, "confirmed")
    page.reload()
    page.wait_for(confirmed, "confirmed after a reload")
    # After the reload the page followed the saved order: no purchase sent again.
    assert purchases(page) == []
    assert Order.objects.filter(user=buyer, status="confirmed").count() == 1


def test_a_busy_front_door_is_retried_after_retry_after_with_the_same_key(
    sale, buyer_page, make_user, make_event
):
    event = concert(make_event, total_tickets=10)  # no waiting room, on sale now
    buyer = make_user()
    page = buyer_page(event)
    page.log_in(buyer.username, PASSWORD)
    page.wait_for_stage("buy")
    assert page.text("status") == "Tickets are on sale."

    # The door stays up, the API behind it does not: every request gets the door's 503.
    sale.live.stop("api")
    page.press_enter()
    page.wait_for(lambda p: len(purchases(p)) >= 2, "two purchases answered 503", timeout=30)
    notice = page.text("notice")
    assert "busy" in notice and "Trying again in" in notice, notice
    key = page.saved(event.pk, buyer.username)["purchase"]["key"]
    sale.restart_api()
    page.wait_for(confirmed, "confirmed")

    attempts = purchases(page)
    assert {r.status for r in attempts[:-1]} == {"503"}
    assert {r.code for r in attempts[:-1]} == {"busy"}
    assert attempts[-1].status == "202"
    # Each one after the door's Retry-After (2 s) at least, never sooner.
    gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:], strict=False)]
    assert min(gaps) >= 2.0, gaps
    # One order, bought with the key the page kept through the retries.
    order = Order.objects.get(user=buyer)
    assert (order.status, order.idempotency_key) == ("confirmed", key)
    assert page.text("notice") == ""


def test_a_lost_connection_is_retried_after_a_growing_pause_with_the_same_key(
    sale, buyer_page, make_user, make_event
):
    event = concert(make_event, total_tickets=10)
    buyer = make_user()
    page = buyer_page(event)
    page.log_in(buyer.username, PASSWORD)
    page.wait_for_stage("buy")

    offline = {"latency": 0, "download_throughput": -1, "upload_throughput": -1}
    page.driver.set_network_conditions(offline=True, **offline)
    page.press_enter()
    page.wait_for(lambda p: len(purchases(p)) >= 3, "three purchases without a network")
    assert "No connection" in page.text("notice")
    page.driver.set_network_conditions(offline=False, **offline)
    page.wait_for(confirmed, "confirmed once back online")

    attempts = purchases(page)
    assert {r.status for r in attempts[:-1]} == {"network error"}
    assert attempts[-1].status == "202"
    # 1, 2, 4 … s (each stretched by up to half): a growing pause, never a tight loop.
    gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:], strict=False)]
    assert all(gap >= 2**i for i, gap in enumerate(gaps[:-1])), gaps
    order = Order.objects.get(user=buyer)
    assert order.status == "confirmed"


def test_a_sold_out_event_says_so_after_the_refused_purchase(
    sale, buyer_page, make_user, make_event
):
    event = concert(make_event, total_tickets=1)
    buyer, other = make_user(), make_user()
    page = buyer_page(event)
    page.log_in(buyer.username, PASSWORD)
    page.wait_for_stage("buy")
    # Someone else takes the last ticket while the page shows the form.
    taken = requests.post(
        f"{sale.url}/events/{event.pk}/purchase/",
        json={"quantity": 1},
        headers={"Authorization": f"Bearer {token_for(other)}"},
        timeout=10,
    )
    assert taken.status_code == 202

    page.press_enter()
    page.wait_for_stage("soldout")
    assert [r.code for r in purchases(page)] in (["sold_out"], ["sold_out_waitlist_open"])
    assert page.text("status") == "Sold out."
    page.wait_for(lambda p: "waitlist" in p.text("soldout-text"), "the waitlist's answer")
    if "no waitlist" in page.text("soldout-text"):
        page.screenshot("sold-out")
    assert not Order.objects.filter(user=buyer).exists()


@pytest.mark.parametrize("sale_env", [{"JWT_ACCESS_LIFETIME_SECONDS": "3"}])
def test_an_expired_token_is_refreshed_and_a_refused_refresh_asks_to_log_in_again(
    sale, buyer_page, make_user, make_event
):
    first, second = concert(make_event), concert(make_event)
    buyer = make_user()
    page = buyer_page(first)
    page.log_in(buyer.username, PASSWORD)
    page.wait_for_stage("buy")
    time.sleep(3.5)  # the access token has expired

    page.press_enter()
    page.wait_for(confirmed, "confirmed")
    asked = [(r.path, r.status, r.code) for r in page.requests() if r.method == "POST"]
    purchase = f"/events/{first.pk}/purchase/"
    assert asked[-3:] == [
        (purchase, "401", "token_not_valid"),
        ("/token/refresh/", "200", ""),
        (purchase, "202", ""),
    ]

    # The refresh token is blacklisted (as after a logout elsewhere) and the access token
    # expires: the page asks to log in again, then goes on where it was.
    tokens = page.driver.execute_script("return JSON.parse(sessionStorage['buyer:tokens'])")
    logout = requests.post(f"{sale.url}/logout/", json={"refresh": tokens["refresh"]}, timeout=10)
    assert logout.status_code == 200
    time.sleep(3.5)
    page.driver.get(page.url.replace(f"event={first.pk}", f"event={second.pk}"))
    page.wait_for_stage("login")
    assert "Log in again" in page.text("login-error")
    page.log_in(buyer.username, PASSWORD)
    page.wait_for_stage("buy")
    page.press_enter()
    page.wait_for(confirmed, "confirmed after logging in again")
    assert Order.objects.filter(user=buyer, status="confirmed").count() == 2
