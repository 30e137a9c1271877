"""Waiting-room tasks (a module of their own, found by workers/celery.py's autodiscovery)."""

import logging

from celery import shared_task

from core.services.waiting_room_persist import waiting_room_persist_all

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def waiting_room_persist() -> int:
    """Persist every room's counter and set its automatic capacity (beat, every
    WAITING_ROOM_PERSIST_SECONDS); a failure waits for the next beat, which writes the
    same figures."""
    return waiting_room_persist_all()
