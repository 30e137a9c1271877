"""Benchmark: GET /events/top/ (materialized view) against the direct aggregate query.

    python -m loadtests.top_events_bench [--events 100000] [--tickets 2000000] [--repeat 30]

Creates its own database (`bench_top_events`, dropped and recreated; Redis DB 11) with the
load tools' environment (loadtests/stack.py), fills it with
set-based SQL (generate_series, no ORM loops), then measures in one run: the endpoint
through Django's full request stack, the equivalent `GROUP BY ... ORDER BY ... LIMIT`
query, their ratio, and the refresh time. Writes docs/benchmarks/top_events.md and .json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from loadtests.stack import ROOT, stack_prepare, stack_teardown

DATABASE, REDIS_DB = "bench_top_events", 11

DIRECT_QUERY = """
SELECT e.id, e.name, e.date, s.sold,
       rank() OVER (ORDER BY s.sold DESC) AS rank
FROM (SELECT event_id, sum(quantity) AS sold FROM core_ticket GROUP BY event_id) s
JOIN core_event e ON e.id = s.event_id
WHERE e.date >= now()
ORDER BY s.sold DESC, e.date, e.id
LIMIT %s
"""

FILL = [
    # Buyers.
    """INSERT INTO core_user (password, is_superuser, username, first_name, last_name, email,
                              is_staff, is_active, date_joined, role)
       SELECT '!', false, 'bench' || g, '', '', '', false, true, now(), 'User'
       FROM generate_series(1, %(users)s) g""",
    # Events over the next year (a few in the past), each with room for its sales.
    """INSERT INTO core_event (name, description, venue, date, total_tickets, tickets_sold,
                               created_at, updated_at)
       SELECT 'Event ' || g, '', 'Hall ' || (g %% 50),
              now() + ((g %% 400) - 20) * interval '1 day', 1000000, 0, now(), now()
       FROM generate_series(1, %(events)s) g""",
    # Orders, skewed so that a few events sell most (random()^3 leans to low ids).
    """INSERT INTO core_order (user_id, event_id, quantity, status, reason, created_at,
                               updated_at, finalized_at)
       SELECT (SELECT min(id) FROM core_user) + (g %% %(users)s),
              (SELECT min(id) FROM core_event) + floor(%(events)s * random() ^ 3)::int,
              1 + (g %% 4), 'confirmed', '', now(), now(), now()
       FROM generate_series(1, %(tickets)s) g""",
    """INSERT INTO core_ticket (order_id, user_id, event_id, quantity, purchase_date)
       SELECT id, user_id, event_id, quantity, created_at FROM core_order""",
    """UPDATE core_event e SET tickets_sold = s.sold
       FROM (SELECT event_id, sum(quantity) AS sold FROM core_ticket GROUP BY event_id) s
       WHERE e.id = s.event_id""",
    "ANALYZE",
]


def fill(events: int, tickets: int) -> float:
    from django.db import connection

    started = time.perf_counter()
    params = {"events": events, "tickets": tickets, "users": 10_000}
    with connection.cursor() as cursor:
        for statement in FILL:
            cursor.execute(statement, params)
    return time.perf_counter() - started


def measure(repeat: int, limit: int) -> dict:
    from django.db import connection
    from django.test import Client
    from rest_framework_simplejwt.tokens import AccessToken

    from core.models import User
    from core.services.top_events import top_events_refresh

    refresh_ms = [top_events_refresh() * 1000 for _ in range(3)]
    user = User.objects.first()
    token = AccessToken.for_user(user)
    token["role"] = "User"
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="127.0.0.1")

    def endpoint():
        response = client.get(f"/events/top/?limit={limit}")
        assert response.status_code == 200, response.content

    def direct():
        with connection.cursor() as cursor:
            cursor.execute(DIRECT_QUERY, [limit])
            cursor.fetchall()

    endpoint(), direct()  # warm caches and connections
    endpoint_ms, direct_ms = [], []
    for _ in range(repeat):  # interleaved, so both see the same machine noise
        for fn, samples in ((endpoint, endpoint_ms), (direct, direct_ms)):
            started = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - started) * 1000)
    view_top = client.get(f"/events/top/?limit={limit}").json()["results"]
    with connection.cursor() as cursor:
        cursor.execute(DIRECT_QUERY, [limit])
        direct_top = [row[0] for row in cursor.fetchall()]
    return {
        "endpoint_ms_median": statistics.median(endpoint_ms),
        "endpoint_ms_p90": statistics.quantiles(endpoint_ms, n=10)[-1],
        "direct_query_ms_median": statistics.median(direct_ms),
        "direct_query_ms_p90": statistics.quantiles(direct_ms, n=10)[-1],
        "speedup_median": statistics.median(direct_ms) / statistics.median(endpoint_ms),
        "refresh_ms_median": statistics.median(refresh_ms),
        "refresh_ms": refresh_ms,
        "same_top_events": [row["id"] for row in view_top] == direct_top,
    }


def report(figures: dict) -> str:
    f = figures
    return f"""# Top events: materialized view vs. direct aggregate

Command: `{f["command"]}` (one run, {f["repeat"]} interleaved samples each; medians).
Data: {f["events"]:,} events, {f["tickets"]:,} tickets (one order each), filled in
{f["fill_seconds"]:.1f} s with set-based SQL. Machine: 2 cores, PostgreSQL 15 on the same host.

| What | median | p90 |
|---|---:|---:|
| `GET /events/top/?limit={f["limit"]}` (full Django + DRF + JWT stack) | {f["endpoint_ms_median"]:.2f} ms | {f["endpoint_ms_p90"]:.2f} ms |
| Direct `GROUP BY ... ORDER BY ... LIMIT` query alone | {f["direct_query_ms_median"]:.1f} ms | {f["direct_query_ms_p90"]:.1f} ms |
| Ratio (direct / endpoint) | **{f["speedup_median"]:.0f}x** | |
| `REFRESH MATERIALIZED VIEW CONCURRENTLY` | {f["refresh_ms_median"]:.0f} ms | |

Both return the same events in the same order: {f["same_top_events"]}.
The refresh runs every `TOP_EVENTS_REFRESH_SECONDS` (30 s) in a worker and never blocks
readers, so the endpoint serves a ranking at most one interval old at a fraction of the
aggregate's cost.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("--events", 100_000), ("--tickets", 2_000_000), ("--repeat", 30),
                          ("--limit", 10)):  # fmt: skip
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--keep", action="store_true", help="keep the database (for EXPLAIN)")
    parser.add_argument("--fill-only", action="store_true", help="fill, keep, measure nothing")
    args = parser.parse_args()
    stack = stack_prepare(DATABASE, REDIS_DB)
    print(f"filling {args.events:,} events and {args.tickets:,} tickets ...", flush=True)
    fill_seconds = fill(args.events, args.tickets)
    print(f"filled in {fill_seconds:.1f} s; measuring ...", flush=True)
    if args.fill_only:
        return
    figures = measure(args.repeat, args.limit)
    default = (args.events, args.tickets) == (100_000, 2_000_000)
    options = "" if default else f" --events {args.events} --tickets {args.tickets}"
    figures.update(
        events=args.events, tickets=args.tickets, repeat=args.repeat, limit=args.limit,
        fill_seconds=fill_seconds, command="python -m loadtests.top_events_bench" + options,
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "top_events.json").write_text(json.dumps(figures, indent=2) + "\n")
    (args.out / "top_events.md").write_text(report(figures))
    print(report(figures))
    stack_teardown(stack, DATABASE, keep_db=args.keep)


if __name__ == "__main__":
    main()
