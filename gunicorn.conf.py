"""gunicorn settings, each overridable from the environment."""
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
backlog = int(os.environ.get("GUNICORN_BACKLOG", "2048"))
keepalive = 5
timeout = 30
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
# Trust X-Forwarded-* only when a proxy is declared (as Django does), never by default.
forwarded_allow_ips = os.environ.get(
    "FORWARDED_ALLOW_IPS",
    "127.0.0.1,::1" if int(os.environ.get("DJANGO_TRUSTED_PROXIES", "0") or 0) else "",
)


def child_exit(server, worker):
    # Let the Prometheus multiprocess collector forget the gauges of a dead worker.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
