"""The front door in front of the real API server: busy answers, order, the buyer's address.

Each test starts the API server as production does (`python -m core.serve`, two
workers) with the test settings, and HAProxy with deploy/haproxy/haproxy.cfg in front of
it on free ports. Logins are the slow request: the real PBKDF2 hasher costs the API
worker its whole CPU for a while, as a sale's crowd logging in would.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil
import pytest
import requests

from api.exceptions import error_body
from core.services.waiting_room import waiting_room_configure
from tests.live import LiveStack

from .door import SOURCE, Door, metric, needs_haproxy, start_door

pytestmark = [pytest.mark.live, needs_haproxy]

PBKDF2 = {"DJANGO_PASSWORD_HASHERS": "django.contrib.auth.hashers.PBKDF2PasswordHasher"}


@pytest.fixture
def start(transactional_db, tmp_path):
    """Start the API (two workers) and the front door before it; stop both afterwards."""
    stacks = []

    def make(*, api_env: dict | None = None, **door_env: str) -> tuple[LiveStack, Door]:
        live = LiveStack(
            tmp_path, env={"DJANGO_TRUSTED_PROXY_ADDRESSES": SOURCE, **(api_env or {})}
        )
        stacks.append(live)
        live.start_api(workers=2)
        door = start_door(live, api_address=f"127.0.0.1:{live.port}", **door_env)
        return live, door

    yield make
    for live in stacks:
        live.stop_all()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: dict
    sent: float
    seconds: float


def login(base_url: str, *, source: str = "127.0.0.1", forwarded_for: str | None = None) -> Answer:
    """POST a login for a username nobody has (the hasher runs anyway) from `source`."""
    url = urlsplit(base_url)
    body = json.dumps({"username": f"nobody-{uuid.uuid4().hex[:12]}", "password": "wrong-1"})
    headers = {"Content-Type": "application/json"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    # A client time-out here would be the failure the front door exists to prevent.
    connection = http.client.HTTPConnection(
        url.hostname, url.port, timeout=15, source_address=(source, 0)
    )
    sent = time.monotonic()
    try:
        connection.request("POST", "/login/", body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    seconds = time.monotonic() - sent
    return Answer(
        response.status,
        {k.lower(): v for k, v in response.getheaders()},
        json.loads(data) if data else {},
        sent,
        seconds,
    )


def test_a_saturated_api_answers_busy_within_the_queue_time_and_drops_no_one(start):
    live, door = start(api_env=PBKDF2, HAPROXY_API_MAXCONN="2", HAPROXY_QUEUE_TIMEOUT="1s")
    one_login = min(login(door.base_url).seconds for _ in range(3))
    # Enough logins at once to keep both workers busy for about four seconds (bounded).
    count = min(200, max(40, math.ceil(4 * 2 / one_login)))

    with ThreadPoolExecutor(max_workers=count) as pool:
        answers = list(pool.map(lambda _: login(door.base_url), range(count)))

    served = [a for a in answers if a.status == 401]
    busy = [a for a in answers if a.status == 503]
    assert len(served) + len(busy) == count, {a.status for a in answers}
    assert served and busy, (len(served), len(busy), one_login)
    for answer in busy:
        assert answer.headers["retry-after"] == "2"
        assert answer.headers["content-type"] == "application/json"
        assert answer.body["code"] == "busy" and answer.body["retry_after"] == 2
        assert error_body("busy", "message").keys() <= answer.body.keys()  # the API's shape
        # Refused when its second in the queue is up, not when the client gives up.
        assert 0.9 < answer.seconds < 2.0, answer.seconds
    # A served login waited at most the queue time, then ran (with its neighbour).
    assert max(a.seconds for a in served) < 1.0 + 4 * one_login + 0.5
    stats = requests.get(door.metrics_url, timeout=5).text
    assert metric(stats, "haproxy_backend_current_queue", proxy="api") == 0
    assert metric(stats, "haproxy_backend_max_queue", proxy="api") > 0
    assert metric(
        stats, "haproxy_frontend_http_responses_total", proxy="public", code="5xx"
    ) == len(busy)


def test_waiting_requests_are_let_in_first_come_first_served(start):
    live, door = start(api_env=PBKDF2, HAPROXY_API_MAXCONN="1", HAPROXY_QUEUE_TIMEOUT="20s")
    login(door.base_url)  # warm

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = []
        for _ in range(4):  # the first holds the only place; the others queue in order
            futures.append(pool.submit(login, door.base_url))
            time.sleep(0.05)
        answers = [future.result() for future in futures]

    finished = [a.sent + a.seconds for a in answers]
    assert {a.status for a in answers} == {401}
    assert finished == sorted(finished)


def fresh_minute() -> None:
    """Wait for a new throttle window when this one is about to end (fixed windows)."""
    if time.time() % 60 > 45:
        time.sleep(60 - time.time() % 60 + 0.2)


def test_the_api_sees_each_buyer_address_behind_the_door_and_no_one_can_choose_it(start):
    live, door = start(api_env={"THROTTLE_LOGIN_RATE": "2/min"})
    fresh_minute()

    def statuses(base_url: str, source: str, forwarded: list[str | None]) -> list[int]:
        return [login(base_url, source=source, forwarded_for=f).status for f in forwarded]

    # Behind the door, each buyer has a login budget of their own...
    assert statuses(door.base_url, "127.0.0.5", [None, None, None]) == [401, 401, 429]
    assert statuses(door.base_url, "127.0.0.6", [None]) == [401]
    # ...which a buyer cannot renew by claiming other addresses, through the door...
    claims = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    assert statuses(door.base_url, "127.0.0.7", claims) == [401, 401, 429]
    # ...or by going around it: only the door's address is believed.
    assert statuses(live.base_url, "127.0.0.8", claims) == [401, 401, 429]


def test_answers_that_do_not_declare_themselves_public_are_never_cached(start):
    live, door = start()

    def reached() -> float:
        stats = requests.get(door.metrics_url, timeout=5).text
        return metric(
            stats, "haproxy_server_http_responses_total", proxy="api", server="api", code="2xx"
        )

    before = reached()
    with requests.Session() as session:
        answers = [session.get(door.base_url + "/health/", timeout=5) for _ in range(5)]

    assert {a.status_code for a in answers} == {200}
    assert "public" not in answers[0].headers.get("Cache-Control", "")
    assert reached() == before + 5


def test_the_crowd_polling_the_waiting_room_reaches_django_once_per_max_age(start, event):
    waiting_room_configure(event_id=event.pk, rate=10, admission_seconds=60, paused=False)
    live, door = start()
    url = f"{door.base_url}/events/{event.pk}/waiting-room/"

    with requests.Session() as session:
        answers = [session.get(url, timeout=5) for _ in range(20)]

    assert {a.status_code for a in answers} == {200}
    assert "public" in answers[0].headers["Cache-Control"]
    stats = requests.get(door.metrics_url, timeout=5).text
    # The backend counts answers from its cache too; the server's count is what reached
    # Django.
    reached = metric(stats, "haproxy_server_http_responses_total", proxy="api", server="api",
                     code="2xx")  # fmt: skip
    assert reached <= 2  # one per max-age (1 s) while the 20 polls ran
    assert metric(stats, "haproxy_backend_http_cache_hits_total", proxy="api") >= 18


def test_idle_keep_alive_connections_stay_at_the_door(start):
    live, door = start(HAPROXY_API_MAXCONN="8")
    url = urlsplit(door.base_url)
    request = f"GET /health/ HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode()
    clients = []
    try:
        for _ in range(1000):  # each asks once, then stays open and idle
            client = socket.create_connection((url.hostname, url.port), timeout=10)
            clients.append(client)
            client.sendall(request)
            assert client.recv(4096).startswith(b"HTTP/1.1 200")

        api = psutil.Process(live.processes["api"].pid)
        held = [
            c
            for process in [api, *api.children(recursive=True)]
            for c in process.net_connections("tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == live.port
        ]
        assert len(held) <= 8  # the door's connections, at most one per request let in
        started = time.monotonic()
        assert requests.get(door.base_url + "/health/", timeout=5).status_code == 200
        assert time.monotonic() - started < 1.0
    finally:
        for client in clients:
            client.close()
