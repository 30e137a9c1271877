"""GET /metrics (Prometheus text format) and the middleware timing every request."""

import os
import time

from django.conf import settings
from django.http import HttpResponse
from django.utils.crypto import constant_time_compare
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from core.metrics import REQUEST_LATENCY


class SharedStateCollector:
    """Gauges read at scrape time from Redis and PostgreSQL, the same for every process."""

    def collect(self):
        from core.ops import gate_agreement, orders_pending_summary, queue_depths, workers_alive

        depth = GaugeMetricFamily("queue_depth", "Messages waiting per queue.", labels=["queue"])
        for queue, size in queue_depths().items():
            depth.add_metric([queue], size)
        yield depth
        orders = orders_pending_summary()
        yield GaugeMetricFamily(
            "orders_pending", "Orders accepted, not yet final.", value=orders["pending"]
        )
        yield GaugeMetricFamily(
            "orders_oldest_pending_seconds",
            "Age of the oldest pending order.",
            value=orders["oldest_pending_seconds"],
        )
        yield GaugeMetricFamily(
            "workers_alive",
            "Celery workers that announced themselves within the alive window.",
            value=len(workers_alive()),
        )
        rows = gate_agreement()
        yield GaugeMetricFamily(
            "gate_disagreements",
            "Events on sale whose Redis gate differs from PostgreSQL's figure.",
            value=sum(1 for row in rows if not row["agrees"]),
        )
        yield from _line_gauges(rows)
        yield from _waiting_room_gauges()
        yield from _waitlist_gauges()


def _line_gauges(rows: list[dict]):
    """Per event on sale (at most gate_agreement's limit, so the label set stays small)."""
    gauges = {
        "line_length": GaugeMetricFamily(
            "event_line_length", "Pending orders in the event's line.", labels=["event"]
        ),
        "served_per_second": GaugeMetricFamily(
            "event_line_served_per_second",
            "Orders of the event made final per second over the last 10 s.",
            labels=["event"],
        ),
        "oldest_waiting_seconds": GaugeMetricFamily(
            "event_line_oldest_waiting_seconds",
            "Age of the event's oldest pending order.",
            labels=["event"],
        ),
    }
    for row in rows:
        for key, gauge in gauges.items():
            gauge.add_metric([str(row["event"])], row[key])
    yield from gauges.values()


_WAITING_ROOM_GAUGES = {
    "joined": "Buyers who joined the event's waiting room.",
    "waiting": "Buyers in the waiting room not admitted yet.",
    "serving": "The waiting room's counter: every number up to it is admitted.",
    "admitted_per_second": "Buyers admitted per second over the last 10 s.",
    "admitted_not_bought": "Admitted buyers who have not bought and whose admission runs.",
    "expired": "Admissions that expired unused (each let the next buyer in).",
    "capacity": "Most admitted-not-bought buyers at once (automatic rate).",
    "admitting": "1 while the room admits: open, not paused, stock left.",
}


def _per_event_gauges(prefix: str, texts: dict[str, str], rows: list[dict]):
    """One gauge `<prefix>_<key>{event}` per entry of `texts`, a sample per row."""
    gauges = {
        key: GaugeMetricFamily(f"{prefix}_{key}", text, labels=["event"])
        for key, text in texts.items()
    }
    for row in rows:
        for key, gauge in gauges.items():
            gauge.add_metric([str(row["event"])], float(row[key]))
    yield from gauges.values()


def _waiting_room_gauges():
    """Per event on sale with a waiting room (core.ops.waiting_room_summary)."""
    from core.ops import waiting_room_summary

    yield from _per_event_gauges("event_waiting_room", _WAITING_ROOM_GAUGES, waiting_room_summary())


_WAITLIST_GAUGES = {
    "waiting": "Entries on the event's waitlist waiting for an offer.",
    "offers_out": "Waitlist offers holding tickets, not taken yet.",
    "offers_taken": "Waitlist offers an order took.",
    "offers_expired": "Waitlist offers that expired untaken (each passed to the next entry).",
    "paused": "1 while the waitlist is paused (returns go on general sale).",
}


def _waitlist_gauges():
    """Per event on sale with a waitlist (core.ops.waitlist_summary)."""
    from core.ops import waitlist_summary

    yield from _per_event_gauges("event_waitlist", _WAITLIST_GAUGES, waitlist_summary())


def _exposition() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY  # this process only
    shared = CollectorRegistry()
    shared.register(SharedStateCollector())
    return generate_latest(registry) + generate_latest(shared)


def metrics_view(request):
    """Serve the metrics; with METRICS_TOKEN set, only to `Authorization: Bearer <token>`."""
    token = settings.METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not constant_time_compare(sent, token):
            return HttpResponse(
                b'{"code": "not_authenticated", "message": "A metrics token is required."}',
                status=401,
                content_type="application/json",
            )
    return HttpResponse(_exposition(), content_type=CONTENT_TYPE_LATEST)


class RequestMetricsMiddleware:
    """Observe each request's latency under its route template (not the raw path)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match else "unmatched"
        REQUEST_LATENCY.labels(request.method, route, response.status_code).observe(
            time.perf_counter() - started
        )
        return response
