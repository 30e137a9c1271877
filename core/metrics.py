"""Prometheus metrics of the API and the workers.

With PROMETHEUS_MULTIPROC_DIR set (as `make run` and docker-compose do), every gunicorn
and Celery process writes its samples there and `/metrics` adds them up; the gauges that
describe shared state (queues, pending orders, gate agreement) are read at scrape time.
"""

from prometheus_client import Counter, Histogram

REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "API request latency by route.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PURCHASES = Counter(
    "purchase_requests_total",
    "Purchase requests by outcome code (accepted, sold_out, limit_exceeded, ...).",
    ["code"],
)
ORDERS_COMMITTED = Counter(
    "orders_committed_total", "Orders made final by the workers.", ["status"]
)
ORDER_COMMIT_LATENCY = Histogram(
    "order_commit_latency_seconds",
    "From the purchase request to the order being final.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
TOP_EVENTS_REFRESH = Histogram(
    "top_events_refresh_seconds", "Duration of a refresh of the top-events view."
)
