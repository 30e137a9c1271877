"""What the hot room requests cost: CPU per request over Django's test client.

`pytest tests/waiting_room/test_cost.py -s` prints the figures quoted in
docs/frontend.md ("The waiting room"); the assertions hold only what a regression would
break by far (the round trips and queries are asserted in test_api.py).
"""

import cProfile
import pstats
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import token_for

pytestmark = pytest.mark.django_db
REQUESTS = 500


@pytest.fixture(autouse=True)
def revocations_cached(settings):
    settings.AUTH_REVOCATION_CACHE_SECONDS = 60


def cpu_per_request(send, count: int = REQUESTS) -> float:
    started = time.process_time()
    for _ in range(count):
        send()
    return (time.process_time() - started) / count * 1000


def test_cpu_per_join_own_state_and_public_state(
    admin_client, client_for, make_user, make_event, anon
):
    from django.test import Client

    event = make_event(sale_starts_at=timezone.now() - timedelta(minutes=1))
    admin_client.put(
        f"/events/{event.pk}/waiting-room/", {"rate": 1, "admission_seconds": 60}, format="json"
    )
    url = f"/events/{event.pk}/waiting-room/"
    users = [make_user() for _ in range(REQUESTS)]
    auth = [{"HTTP_AUTHORIZATION": f"Bearer {token_for(u)}"} for u in users]
    plain = Client()  # Django's own client: less test-side work than DRF's APIClient
    plain.post(f"{url}join/", **auth[0])  # warm: scripts, gate
    for headers in auth:
        plain.get(f"{url}me/", **headers)  # warm each token's revocation record: 404
    firsts = iter(auth)

    figures = {
        "first join (INSERT)": cpu_per_request(lambda: plain.post(f"{url}join/", **next(firsts))),
        "repeat join": cpu_per_request(lambda: plain.post(f"{url}join/", **auth[1])),
        "own state": cpu_per_request(lambda: plain.get(f"{url}me/", **auth[1])),
        "public state": cpu_per_request(lambda: plain.get(url)),
        "event read (reference)": cpu_per_request(
            lambda: plain.get(f"/events/{event.pk}/", **auth[1])
        ),
    }

    for name, ms in figures.items():
        print(f"{name:>24}: {ms:.3f} ms CPU per request (client and server, {REQUESTS} requests)")
    print(f"{'round trip of own state':>24}: {round_trip_ms(event, users[1]):.3f} ms wall "
          f"(a PING: {round_trip_ms(None, None):.3f} ms)")  # fmt: skip
    profile = cProfile.Profile()
    profile.runcall(lambda: [plain.get(f"{url}me/", **auth[1]) for _ in range(200)])
    pstats.Stats(profile).sort_stats("tottime").print_stats(r"wt-room|redis/|orjson", 12)
    assert all(ms < 50 for ms in figures.values())


def round_trip_ms(event, user, count: int = 2000) -> float:
    """Wall time of one own-state Lua call (Redis's work included), or of a PING."""
    from core.redis_client import get_redis
    from core.waiting_room import room_read

    def call():
        if event is None:
            return get_redis().ping()
        return room_read(event_id=event.pk, user_id=user.pk, now=time.time())

    started = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - started) / count * 1000
