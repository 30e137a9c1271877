"""Refreshing the `core_top_events` materialized view."""

import time

from django.db import connection, transaction

# pg_try_advisory_xact_lock key: "top events refresh" (any constant unique in this database).
_REFRESH_LOCK_KEY = 0x70E7E5


def top_events_refresh() -> float | None:
    """Refresh the view without blocking readers; return seconds taken, or None if busy.

    Single-flight across every beat and worker process: a refresh that finds another one
    running returns at once instead of queueing behind it.
    """
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_REFRESH_LOCK_KEY])
        if not cursor.fetchone()[0]:
            return None
        cursor.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY core_top_events")
    return time.perf_counter() - started
