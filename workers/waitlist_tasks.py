"""Waitlist tasks (a module of their own, found by workers/celery.py's autodiscovery)."""

from celery import shared_task

from core.services.waitlist_offers import waitlist_offer
from core.services.waitlist_offers import waitlist_tick as waitlist_tick_service
from workers.tasks import RETRYABLE, single_flight


@shared_task(
    name="workers.waitlist_tasks.waitlist_offer_round",
    bind=True,
    ignore_result=True,
    autoretry_for=RETRYABLE,
    retry_backoff=1,
    max_retries=5,
)
def waitlist_offer_round(self, event_id: int) -> int:
    """Offer an event's returned tickets to its waitlist (queued when tickets come back;
    a round finding the pool empty does nothing)."""
    return waitlist_offer(event_id=event_id)


@shared_task(name="workers.waitlist_tasks.waitlist_tick", ignore_result=True)
def waitlist_tick() -> dict | None:
    """End expired offers and offer what is left in the pools (beat, every
    WAITLIST_TICK_SECONDS); one run at a time, a failure waits for the next tick."""
    with single_flight("waitlist-tick", ttl=60) as acquired:
        if not acquired:
            return None
        return waitlist_tick_service()


waitlist_offer_round_task = waitlist_offer_round
