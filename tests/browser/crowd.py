"""Scripted buyers (HTTP clients, not browsers) sharing a sale with the page's buyer.

They do what the frontend contract says a page does, without a page: join the waiting
room, look at the public state until their number is served, buy one ticket, and poll
the order until it is final; a 503 from the front door is retried after Retry-After.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import requests

TIMEOUT = 30.0  # s per request


class Crowd:
    def __init__(self, base_url: str, event_id: int, tokens: list[str]):
        self.base_url, self.event_id, self.tokens = base_url, event_id, tokens
        self.room = f"{base_url}/events/{event_id}/waiting-room/"
        self.local = threading.local()
        self.numbers: dict[str, int] = {}
        self.orders: list[dict] = []
        self.lock = threading.Lock()

    def call(self, method: str, url: str, token: str | None = None, **kwargs):
        session = getattr(self.local, "session", None) or requests.Session()
        self.local.session = session
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        while True:
            response = session.request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)
            if response.status_code != 503:
                return response
            time.sleep(float(response.headers.get("Retry-After", 1)))

    def join(self, concurrency: int = 16) -> None:
        """Every buyer joins the room (before the opening: a random place each)."""

        def join_one(token: str) -> None:
            response = self.call("POST", self.room + "join/", token)
            assert response.status_code == 201, response.text

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(join_one, self.tokens))

    def shop(self, *, until: float) -> None:
        """Every buyer waits for its turn, buys one ticket and follows the order (threads)."""
        with ThreadPoolExecutor(max_workers=len(self.tokens)) as pool:
            list(pool.map(lambda token: self._shop_one(token, until), self.tokens))

    def _shop_one(self, token: str, until: float) -> None:
        number = None
        while time.time() < until:
            public = self.call("GET", self.room).json()
            if public["sold_out"]:
                return
            if number is None or public["serving"] >= number:
                me = self.call("GET", self.room + "me/", token).json()
                number = me["number"]
                if me["state"] == "admitted":
                    break
                if me["state"] != "waiting":
                    return
            time.sleep(0.5)
        else:
            return
        with self.lock:
            self.numbers[token] = number
        url = f"{self.base_url}/events/{self.event_id}/purchase/"
        response = self.call("POST", url, token, json={"quantity": 1})
        if response.status_code != 202:
            return
        order = response.json()
        while order["status"] == "pending" and time.time() < until:
            time.sleep(float(response.headers.get("Retry-After", 1)))
            response = self.call("GET", f"{self.base_url}/orders/{order['id']}/", token)
            order = response.json()
        with self.lock:
            self.orders.append(order)


def moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)
