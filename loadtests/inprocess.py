"""CPU per request of the hot endpoints, in-process through the WSGI handler (no server).

Its own database and Redis DB (loadtests/stack.py). Every request goes through
`core.wsgi.application` as a server would call it (middleware, dispatch, authentication,
Redis, SQL, rendering; not the server, which the benchmark measures). Prints CPU µs per
request (median of 5 slices) per endpoint; --profile ENDPOINT adds its cProfile grouped
by stage; --redis-cluster measures again on a three-node Redis Cluster started for the
run (CPU and wall time per request, side by side); --idempotency-key sends purchases
with a fresh Idempotency-Key (what one costs a refusal: `--only sold_out`).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
import uuid

DATABASE, REDIS_DB = "inprocess_ticketing", 9

# Where a frame's file lives -> the stage it is charged to (first match wins).
STAGES = [
    ("redis", ("redis/", "hiredis", "core/gate/keys", "core/gate/reserve", "core/redis_client")),
    ("sql", ("django/db/", "psycopg")),
    ("authentication", ("rest_framework_simplejwt", "jwt/", "api/authentication",
                        "core/services/users")),
    ("rendering", ("renderers", "serializers", "orjson", "json/", "django/http/response",
                   "fields.py")),
    ("middleware", ("django/middleware", "django/contrib", "corsheaders", "api/metrics",
                    "prometheus_client")),
    ("dispatch", ("rest_framework/", "django/urls", "django/core/handlers", "api/", "core/")),
    ("server", ("wsgiref", "django/core/handlers/wsgi")),
]  # fmt: skip


def _fixtures() -> dict:
    """A buyer with a token, an event on sale, a sold-out one, a pending and a final order."""
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework_simplejwt.tokens import RefreshToken

    from api.serializers import role_claims
    from core.models import Event, Order, User
    from core.services.events import event_create

    buyer = User.objects.create(username="inprocess-buyer", role=User.Role.USER)
    refresh = RefreshToken.for_user(buyer)
    role_claims(refresh, buyer)
    date = timezone.now() + timedelta(days=30)
    big = event_create(name="Big", date=date, total_tickets=1_000_000)
    sold_out = event_create(name="Sold out", date=date, total_tickets=1)
    Order.objects.create(user=buyer, event=sold_out, quantity=1)
    from core.redis_client import get_redis

    get_redis().hset(f"gate:{{ev:{sold_out.pk}}}", "remaining", 0)
    # The pending order is accepted as a buyer's would be (numbered in the event's line,
    # its card in Redis); a drain flag already set keeps it from being queued for commit.
    from core.gate.keys import drain_flag_key
    from core.services.purchases import purchase_request

    get_redis().set(drain_flag_key(big.pk), 1, ex=3600)
    pending = purchase_request(user_id=buyer.pk, event_id=big.pk, quantity=1).order
    confirmed, now = Order.Status.CONFIRMED, timezone.now()
    final = Order.objects.create(
        user=buyer, event=big, quantity=1, status=confirmed, finalized_at=now
    )
    Event.objects.filter(pk=big.pk).update(tickets_sold=1)
    return {
        "token": str(refresh.access_token),
        "big": big.pk,
        "sold_out": sold_out.pk,
        "pending": pending.pk,
        "final": final.pk,
    }


def endpoints(fx: dict) -> dict:
    """name -> (method, path, body, expected status, authenticated)."""
    buy = json.dumps({"quantity": 1}).encode()
    return {
        "health": ("GET", "/health/", b"", 200, False),
        "event_read": ("GET", f"/events/{fx['big']}/", b"", 200, True),
        "sold_out": ("POST", f"/events/{fx['sold_out']}/purchase/", buy, 409, True),
        "accept": ("POST", f"/events/{fx['big']}/purchase/", buy, 202, True),
        "poll_pending": ("GET", f"/orders/{fx['pending']}/", b"", 200, True),
        "poll_final": ("GET", f"/orders/{fx['final']}/", b"", 200, True),
    }


def request_of(app, fx: dict, name: str):
    """A function that sends one request of endpoint `name` through `app`, as a server would
    call it, and stops the run if the answer's status is not the expected one."""
    method, path, body, expected, auth = endpoints(fx)[name]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {fx['token']}"} if auth else {}
    if body:
        headers.update(CONTENT_TYPE="application/json", CONTENT_LENGTH=str(len(body)))

    def start_response(status, headers, exc_info=None):
        if int(status.split()[0]) != expected:
            raise SystemExit(f"{method} {path}: {status}, expected {expected}")

    def call() -> None:
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "wsgi.version": (1, 0), "HTTP_ACCEPT": "*/*", **headers,
        }  # fmt: skip
        if body and fx.get("keyed"):  # a fresh key each time: a first request, not a replay
            environ["HTTP_IDEMPOTENCY_KEY"] = uuid.uuid4().hex
        response = app(environ, start_response)
        b"".join(response)
        if hasattr(response, "close"):
            response.close()

    return call


def measure(app, fx: dict, name: str, requests: int, clock=time.process_time) -> float:
    """Microseconds per request on `clock` (CPU by default, time.perf_counter for wall-clock
    time, round trips included): the median over 5 slices of requests/5, after a warm-up."""
    call, per_slice, slices = request_of(app, fx, name), max(1, requests // 5), []
    for _ in range(50):  # warm caches and connections
        call()
    for _ in range(5):
        started = clock()
        for _ in range(per_slice):
            call()
        slices.append((clock() - started) / per_slice * 1e6)
    return statistics.median(slices)


def compare_cluster(app, fx: dict, names: list[str], requests: int) -> str:
    """Each endpoint on the single Redis, then on a Redis Cluster: CPU and wall µs."""
    from django.conf import settings

    from core.redis_client import redis_clients_forget
    from tests.engines import RedisClusterNodes

    rows = {}
    for topology in ("single", "cluster"):
        for name in names:
            cpu = measure(app, fx, name, requests)  # warms up first (rebuilds on the cluster)
            wall = measure(app, fx, name, requests, time.perf_counter)
            rows.setdefault(name, {})[topology] = (cpu, wall)
        if topology == "single":
            cluster = RedisClusterNodes().start()
            settings.REDIS_URL = cluster.url
            redis_clients_forget()
    cluster.stop()
    lines = [
        "| endpoint | CPU µs single | CPU µs cluster | CPU + | wall µs single | wall µs cluster |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        (c1, w1), (c2, w2) = row["single"], row["cluster"]
        lines.append(
            f"| {name} | {c1:.0f} | {c2:.0f} | {(c2 / c1 - 1) * 100:+.0f}% | {w1:.0f} | {w2:.0f} |"
        )
    return "\n".join(lines)


def _stage(filename: str) -> str:
    for stage, markers in STAGES:
        if any(marker in filename for marker in markers):
            return stage
    return "other"


def _caller_stage(func: tuple, table: dict, seen: set) -> str:
    """The stage of `func`, or of its heaviest caller when it has none of its own."""
    stage = _stage(func[0])
    if stage != "other" or func in seen or func not in table or len(seen) > 30:
        return stage
    seen.add(func)
    callers = table[func][4]
    if not callers:
        return stage
    heaviest = max(callers, key=lambda caller: callers[caller][3])
    return _caller_stage(heaviest, table, seen)


def profile(app, fx: dict, name: str, requests: int, top: int) -> str:
    """cProfile `requests` calls; return the top functions and each stage's share of self time.

    Self time in builtins and the standard library goes to the stage of their caller
    (a socket send made by redis-py is Redis time)."""
    call, profiler = request_of(app, fx, name), cProfile.Profile(time.process_time)
    profiler.enable()
    for _ in range(requests):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    shares: dict[str, float] = {}
    total = 0.0
    for func, (_cc, _nc, tottime, _ct, callers) in stats.stats.items():
        total += tottime
        if _stage(func[0]) != "other" or not callers:
            shares[_stage(func[0])] = shares.get(_stage(func[0]), 0.0) + tottime
            continue
        # Builtins and the standard library (socket sends, getattr, copy, json) are
        # charged to the stage of whoever called them, edge by edge.
        for caller, edge in callers.items():
            stage = _caller_stage(caller, stats.stats, set())
            shares[stage] = shares.get(stage, 0.0) + edge[2]
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats("cumulative").print_stats(top)
    lines = [
        f"{stage:<15} {seconds / total * 100:5.1f}%"
        for stage, seconds in sorted(shares.items(), key=lambda kv: -kv[1])
    ]
    return "\n".join(["self time by stage:", *lines, "", out.getvalue()])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--only", nargs="*", help="endpoints to measure")
    parser.add_argument("--profile", help="cProfile this endpoint")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--redis-cluster", action="store_true", help="also on a Redis Cluster")
    parser.add_argument("--idempotency-key", action="store_true", help="purchases send one")
    parser.add_argument("--database", default=DATABASE, help="dropped and recreated")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB, help="flushed (FLUSHDB)")
    args = parser.parse_args(argv)
    from loadtests.stack import stack_prepare

    stack_prepare(args.database, args.redis_db)
    fx = {**_fixtures(), "keyed": args.idempotency_key}
    from core.wsgi import application

    names = args.only or list(endpoints(fx))
    if args.redis_cluster:
        print(compare_cluster(application, fx, names, args.requests))
        return 0
    results = {name: measure(application, fx, name, args.requests) for name in names}
    floor = results.get("health")
    for name, micros in results.items():
        ratio = f"  ({floor / micros:.2f}x health)" if floor else ""
        print(f"{name:<14} {micros:8.0f} us CPU/request{ratio}")
    if args.profile:
        print(profile(application, fx, args.profile, args.requests, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
