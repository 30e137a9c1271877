"""The front door answers GETs for public responses from its cache, so polls skip Django.

A backend of the test's own (the standard library's HTTP server) counts what reaches it:
the rule is the config's, generic (GET, no Authorization, a response that declares
itself `public` with a max-age), whatever endpoint uses it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.live import Stack

from .door import needs_haproxy, start_door

pytestmark = needs_haproxy

# Path -> Cache-Control (and Vary) of the backend's answer.
ANSWERS = {
    "/public/": {"Cache-Control": "public, max-age=5"},
    "/short/": {"Cache-Control": "public, max-age=2"},
    "/vary-origin/": {"Cache-Control": "public, max-age=5", "Vary": "origin"},
    "/no-cache-control/": {},
    "/private/": {"Cache-Control": "private, max-age=5"},
    "/max-age-only/": {"Cache-Control": "max-age=5"},
}


class Backend(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: Counter[tuple[str, str]] = Counter()

    def handle_error(self, request, client_address):
        pass  # HAProxy closing its idle connections when it stops


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        self.server.hits[self.command, self.path] += 1
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = f'{{"hits": {self.server.hits[self.command, self.path]}}}'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in ANSWERS.get(self.path, {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def backend():
    server = Backend()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def door(backend, tmp_path_factory):
    group = Stack({"PATH": "/usr/sbin:/usr/bin:/bin"}, tmp_path_factory.mktemp("door"))
    host, port = backend.server_address[:2]
    try:
        yield start_door(group, api_address=f"{host}:{port}", HAPROXY_API_SOURCE="0.0.0.0")
    finally:
        group.stop_all()


def get_many(url: str, count: int = 10, **headers: str) -> list[requests.Response]:
    with requests.Session() as session:
        return [session.get(url, headers=headers, timeout=5) for _ in range(count)]


def test_a_public_response_is_fetched_once_within_its_max_age(door, backend):
    answers = get_many(door.base_url + "/public/", 20)

    assert {a.status_code for a in answers} == {200}
    assert {a.json()["hits"] for a in answers} == {1}
    assert backend.hits["GET", "/public/"] == 1


def test_after_its_max_age_the_response_is_fetched_again(door, backend):
    # HAProxy counts a max-age in whole seconds of its clock: 2 s lasts 1 to 2 s.
    get_many(door.base_url + "/short/", 5)
    time.sleep(2.1)
    get_many(door.base_url + "/short/", 5)

    assert backend.hits["GET", "/short/"] == 2


def test_responses_that_vary_by_origin_are_cached_for_requests_without_origin(door, backend):
    # django-cors-headers marks every API response `Vary: origin`; HAProxy 2.6 cannot
    # key its cache on it, so only requests without an Origin header share the copy.
    url = door.base_url + "/vary-origin/"
    answers = get_many(url, 5)
    get_many(url, 3, Origin="https://a.example")

    assert backend.hits["GET", "/vary-origin/"] == 1 + 3
    assert all(answer.headers["Vary"].lower() == "origin" for answer in answers)


@pytest.mark.parametrize("path", ["/no-cache-control/", "/private/", "/max-age-only/"])
def test_responses_that_do_not_declare_themselves_public_are_never_cached(door, backend, path):
    get_many(door.base_url + path, 5)

    assert backend.hits["GET", path] == 5


def test_requests_with_authorization_always_reach_the_api(door, backend):
    get_many(door.base_url + "/public/", 3)  # the anonymous copy is cached
    before = backend.hits["GET", "/public/"]
    get_many(door.base_url + "/public/", 5, Authorization="Bearer someone")

    assert backend.hits["GET", "/public/"] == before + 5


def test_posts_always_reach_the_api(door, backend):
    with requests.Session() as session:
        for _ in range(5):
            session.post(door.base_url + "/public/", json={}, timeout=5)

    assert backend.hits["POST", "/public/"] == 5
