"""/ops/queues/ answers in milliseconds with a live worker (no broadcast ping per request)."""

import statistics
import time

import pytest
import requests

from tests.live import LiveStack, token

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

REQUESTS = 50


def test_ops_queues_answers_in_milliseconds_with_a_live_worker(admin, make_event, tmp_path):
    for _ in range(3):
        make_event()
    live = LiveStack(tmp_path)
    try:
        live.start_api(workers=1)
        live.start_worker(concurrency=1)
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + token(
            live.base_url, admin.username, "correct-horse-battery"
        )
        url = live.base_url + "/ops/queues/"
        live.wait_until(
            lambda: session.get(url, timeout=10).json()["workers"], "the worker to show"
        )
        timings, bodies = [], []
        for _ in range(REQUESTS):
            started = time.perf_counter()
            response = session.get(url, timeout=10)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200
            bodies.append(response.json())
    finally:
        live.stop_all()
    timings.sort()
    median, p95 = statistics.median(timings), timings[int(REQUESTS * 0.95) - 1]
    print(
        f"GET /ops/queues/ x{REQUESTS}: median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"max {timings[-1] * 1000:.1f} ms"
    )
    assert all(body["workers"] == [bodies[0]["workers"][0]] for body in bodies)
    assert bodies[0]["workers"][0].startswith("worker@")
    # The ping it replaced waited 0.5 s for answers on every request.
    assert median < 0.1
