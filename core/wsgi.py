"""WSGI entry point: `python -m core.serve` (granian) serves `core.wsgi:application`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")


def _forget_dead_processes_metrics() -> None:
    """Let the Prometheus multiprocess collector forget the live gauges of dead workers.

    gunicorn had a child_exit hook for this; granian respawns a worker without one, so
    each new worker process does it for those that went before it.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not os.path.isdir(directory):
        return
    from prometheus_client import multiprocess

    pids = {name.rsplit("_", 1)[-1].removesuffix(".db") for name in os.listdir(directory)}
    for pid in filter(str.isdigit, pids):
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(int(pid), directory)
        except PermissionError:
            continue  # alive, another user's


_forget_dead_processes_metrics()
application = get_wsgi_application()
