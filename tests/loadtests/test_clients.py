"""How both load generators' buyers read an answer (loadtests/clients.py)."""

import json

from loadtests import clients


def headers(**values):
    return {k.replace("_", "-"): v for k, v in values.items()}.get


def test_an_accepted_purchase_is_followed_after_its_retry_after_with_its_estimate():
    body = json.dumps({"id": 7, "estimated_wait_seconds": 1.5}).encode()

    answer = clients.purchase_answer(202, headers(Location="/orders/7/", Retry_After="2"), body)

    assert (answer.outcome, answer.order_id, answer.estimate, answer.after) == (
        "accepted",
        7,
        1.5,
        2.0,
    )


def test_a_busy_503_with_a_code_is_an_answer_whose_retry_after_is_capped():
    body = json.dumps({"code": "service_busy"}).encode()

    answer = clients.purchase_answer(503, headers(Retry_After="30"), body)

    assert answer.outcome == "busy_service_busy"
    assert answer.after == clients.MAX_RETRY_AFTER


def test_a_refusal_is_its_code_and_an_unreadable_failure_is_an_error():
    sold_out = clients.purchase_answer(409, headers(), b'{"code": "sold_out"}')
    proxy = clients.purchase_answer(502, headers(), b"<html>bad gateway</html>")
    no_answer = clients.purchase_answer(0, headers(), b"TimeoutError")

    assert sold_out.refused and sold_out.outcome == "sold_out"
    assert proxy.unclassified and proxy.outcome == "error_502"
    assert no_answer.outcome == "error_TimeoutError"


def test_a_pending_poll_is_polled_again_and_a_final_one_is_not():
    pending = clients.poll_answer(7, 200, headers(Retry_After="1"), b'{"status": "pending"}')
    final = clients.poll_answer(7, 200, headers(), b'{"status": "confirmed"}')

    assert (pending.outcome, pending.after) == ("pending", 1.0)
    assert (final.outcome, final.after, final.order_id) == ("confirmed", None, 7)


def test_a_waitlist_entry_is_read_again_after_its_retry_after_and_an_offer_says_its_tickets():
    waiting = clients.entry_answer(200, headers(Retry_After="3"), b'{"status": "waiting"}')
    body = json.dumps({"status": "offered", "offer_quantity": 2}).encode()
    offered = clients.entry_answer(200, headers(Retry_After="5"), body)
    bought = clients.entry_answer(200, headers(), b'{"status": "bought", "order_id": 9}')

    assert (waiting.outcome, waiting.after, waiting.offered) == ("waiting", 3.0, 0)
    assert (offered.outcome, offered.offered) == ("offered", 2)
    assert (bought.outcome, bought.order_id, bought.after) == ("bought", 9, None)


def test_a_refusal_that_says_join_the_waitlist_is_a_refusal():
    answer = clients.purchase_answer(409, headers(), b'{"code": "sold_out_waitlist_open"}')

    assert answer.refused and answer.outcome == "sold_out_waitlist_open"
