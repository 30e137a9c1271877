"""The crowd's client process (gevent + geventhttpclient): buyers that wait in the room,
buyers without one, and clients that hammer the purchase. Driven by loadtests/crowd.py:

    python -m loadtests.crowd_client     # stdin: one JSON spec line; stdout: progress, done

Spec: base_url, event_id, opens_at (epoch s), buyers (tokens: one connection each),
hammer (tokens), room (bool), arrive ([from, to] s around the opening), quantities,
deadline (epoch s), network_timeout, samples and buyers (CSV paths), seed. A room buyer
joins at its arrival, follows Retry-After and the public state, buys once admitted and
polls its order; without a room it buys from its arrival, following Retry-After. The
hammering clients buy in a closed loop and ignore every answer. Talks to base_url only.
"""

from gevent import monkey

monkey.patch_all()

import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from geventhttpclient import HTTPClient  # noqa: E402

from loadtests.clients import raise_open_files_limit  # noqa: E402

SAMPLE = ["t", "latency", "kind", "status", "code"]
BUYER = ["index", "arrive", "joined_start", "joined_end", "early", "number", "admitted_seen",
         "outcome", "qty", "order_id"]  # fmt: skip
FINAL = {
    "sold_out",
    "insufficient_tickets",
    "admission_expired",
    "limit_exceeded",
    "not_in_waiting_room",
}


class Crowd:
    def __init__(self, spec: dict):
        self.spec, self.samples, self.buyers, self.done = spec, [], [], 0
        url = urlsplit(spec["base_url"])
        assert url.hostname in ("127.0.0.1", "localhost"), "load goes to this machine only"
        self.host, self.port, self.event = url.hostname, url.port, spec["event_id"]

    def connection(self) -> HTTPClient:
        return HTTPClient(self.host, self.port, concurrency=1, connection_timeout=10,
                          network_timeout=self.spec["network_timeout"])  # fmt: skip

    def over(self) -> bool:
        return time.time() > self.spec["deadline"]

    def ask(self, http, kind, method, path, token=None, body=None, headers=None):
        """(status or 0, Retry-After or None, JSON body or {}); one sample recorded."""
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        t, started = time.time(), time.perf_counter()
        try:
            response = http.request(method, path, body=body, headers=headers)
            payload, status = response.read(), response.status_code
            after = response.get("Retry-After")
            response.release()
        except Exception as exc:  # no answer: recorded, the client goes on
            self.samples.append((t, time.perf_counter() - started, kind, 0, type(exc).__name__))
            return 0, None, {}
        try:
            data = json.loads(payload) if payload else {}
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        code = data.get("code", "") if status >= 300 else ""
        self.samples.append((t, time.perf_counter() - started, kind, status, code))
        return status, float(after) if after else None, data

    def buyer(self, index: int, token: str, arrive: float) -> None:
        rec = dict.fromkeys(BUYER, "")
        rec.update(index=index, arrive=arrive)
        http, rng = self.connection(), random.Random(self.spec["seed"] * 7919 + index)
        gevent.sleep(max(0.0, arrive - time.time()))
        try:
            if self.spec["room"]:
                self.wait_in_room(http, token, rec, rng)
            if not rec["outcome"]:
                self.buy(http, token, rec, rng)
        finally:
            http.close()
            self.buyers.append(rec)
            self.done += 1

    def wait_in_room(self, http, token, rec, rng) -> None:
        """Join, then wait (own state, public state) until admitted; rec's outcome set if not."""
        base = f"/events/{self.event}/waiting-room/"
        while not self.over():
            rec["joined_start"] = time.time()
            status, after, entry = self.ask(http, "join", "POST", base + "join/", token)
            if status in (200, 201):
                break
            gevent.sleep(after or 1.0)
        else:
            rec["outcome"] = "deadline"
            return
        rec.update(joined_end=time.time(), early=int(bool(entry.get("early"))))
        number, wait, pace, last = entry.get("number"), after or 1.0, None, None
        while not self.over():
            if entry.get("state") == "admitted":
                break
            if entry.get("state") in ("sold_out", "expired"):
                rec["outcome"] = entry["state"]
                return
            gevent.sleep(wait if number else wait + rng.uniform(0, 2))  # pages' timers differ
            if number is None:  # early: the place is decided at the opening
                status, after, got = self.ask(http, "me", "GET", base + "me/", token)
                entry = got if status == 200 else entry
                number, wait = entry.get("number"), after or 1.0
                continue
            status, after, public = self.ask(http, "public", "GET", base)
            if status != 200:
                wait = after or 1.0
                continue
            if public["sold_out"]:
                entry = {"state": "sold_out"}
                continue
            position, now = number - public["serving"], time.time()
            if position <= 0:
                entry = {"state": "admitted"}
                continue
            if last and now > last[0]:
                pace = max((public["serving"] - last[1]) / (now - last[0]), 0.0) or pace
            last = (now, public["serving"])
            speed = public["rate"] or pace or max(public["capacity"], 1) / 2
            wait = min(max(position / speed, 1.0), 30.0)
        rec["number"], rec["admitted_seen"] = number, time.time()
        if self.over():
            rec["outcome"] = "deadline"

    def buy(self, http, token, rec, rng) -> None:
        path, qty = f"/events/{self.event}/purchase/", rng.randint(*self.spec["quantities"])
        key = {"Idempotency-Key": str(uuid.uuid4())}
        while not self.over():
            status, after, data = self.ask(http, "purchase", "POST", path, token,
                                           b'{"quantity": %d}' % qty, key)  # fmt: skip
            code = data.get("code", "")
            if status == 202:
                rec.update(outcome="accepted", qty=qty, order_id=data["id"])
                return self.poll(http, token, data["id"], after or 1.0)
            if code in FINAL:
                rec["outcome"] = code
                return
            gevent.sleep(after or 1.0)  # busy, not admitted yet, not open, no answer
        rec["outcome"] = "deadline"

    def poll(self, http, token, order_id, after) -> None:
        while not self.over():
            gevent.sleep(after)
            status, after, data = self.ask(http, "poll", "GET", f"/orders/{order_id}/", token)
            if status == 200 and data.get("status") != "pending":
                return
            after = after or 1.0

    def hammer(self, token: str) -> None:
        http, path, rng = self.connection(), f"/events/{self.event}/purchase/", random.Random()
        gevent.sleep(max(0.0, self.spec["opens_at"] + self.spec["arrive"][0] - time.time()))
        while not self.over() and self.done < len(self.spec["buyers"]):
            body = b'{"quantity": %d}' % rng.randint(*self.spec["quantities"])
            status, _, data = self.ask(http, "hammer", "POST", path, token, body)
            if status == 202:
                self.buyers.append(
                    {"index": -1, "outcome": "hammer_accepted", "order_id": data["id"]}
                )
            if status == 0:
                gevent.sleep(0.05)
        http.close()


def _write(path: str, header: list, rows) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    raise_open_files_limit(len(spec["buyers"]) + len(spec["hammer"]) + 1024)
    crowd, rng = Crowd(spec), random.Random(spec["seed"])
    low, high = spec["arrive"]
    arrivals = [spec["opens_at"] + rng.uniform(low, high) for _ in spec["buyers"]]
    greenlets = [
        gevent.spawn(crowd.buyer, i, tok, arrivals[i]) for i, tok in enumerate(spec["buyers"])
    ]
    greenlets += [gevent.spawn(crowd.hammer, token) for token in spec["hammer"]]
    started = time.time()
    while crowd.done < len(spec["buyers"]) and not crowd.over():
        gevent.sleep(1.0)
        print(json.dumps({"t": round(time.time() - started), "n": len(crowd.samples),
                          "finished": crowd.done}), flush=True)  # fmt: skip
    gevent.joinall(greenlets, timeout=max(0.0, spec["deadline"] - time.time()) + 15)
    gevent.killall(greenlets, timeout=5)
    _write(spec["samples"], SAMPLE, crowd.samples)
    _write(spec["buyers_out"], BUYER, ([r.get(k, "") for k in BUYER] for r in crowd.buyers))
    times = os.times()
    cpu = round(times.user + times.system, 2)
    print(json.dumps({"done": True, "n": len(crowd.samples), "cpu": cpu}), flush=True)


if __name__ == "__main__":
    main()
