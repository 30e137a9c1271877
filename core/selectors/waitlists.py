"""The waitlist's reads: a buyer's entry as they see it, and the figures per waitlist."""

from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from core.exceptions import NotOnWaitlistError
from core.models import Order, Waitlist, WaitlistEntry


def offers_out(event_id) -> QuerySet[WaitlistEntry]:
    """The event's waitlist offers not taken yet (no order took them)."""
    return WaitlistEntry.objects.filter(
        event_id=event_id, status=WaitlistEntry.Status.OFFERED, orders__isnull=True
    )


@dataclass(frozen=True)
class WaitlistEntryView:
    """A buyer's entry as they see it: `status` is waiting, offered, bought (an order took
    the offer), expired or left."""

    event_id: int
    status: str
    quantity: int
    position: int | None  # waiting: 1 = the next to be offered
    offer_quantity: int | None
    expires_at: datetime | None
    order_id: int | None
    joined_at: datetime

    @property
    def retry_after(self) -> int | None:
        """Seconds to the next poll: sooner near the head of the line; None once final."""
        if self.status == "offered":
            return 10  # the offer holds for minutes; the page counts down from expires_at
        if self.status != "waiting":
            return None
        return min(30, 5 + (self.position or 0) // 5)


# One statement for the whole view: the entry, a waiting entry's position (entries ahead
# of it in the line, on the index of waiting entries) and the order that took an offer.
# Raw SQL: the ORM's two querysets cost 1.7 ms a poll against 0.55 ms for a sold-out
# refusal (docs/benchmarks/waitlist.md, "Where the speed gap comes from").
_ENTRY = """
SELECT e.status, e.quantity, e.offered_quantity, e.expires_at, e.joined_at,
  CASE WHEN e.status = 'waiting' THEN 1 + (
    SELECT count(*) FROM core_waitlistentry a
    WHERE a.event_id = e.event_id AND a.status = 'waiting'
      AND (a.line_key, a.id) < (e.line_key, e.id)) END,
  CASE WHEN e.status <> 'waiting' THEN (
    SELECT max(o.id) FROM core_order o WHERE o.waitlist_entry_id = e.id) END
FROM core_waitlistentry e WHERE e.event_id = %s AND e.user_id = %s
"""


def access_waitlist_entry(*, event_id: int, user_id: int) -> WaitlistEntryView:
    """The caller's own entry on the event's waitlist, as they see it (one query)."""
    with connection.cursor() as cursor:
        cursor.execute(_ENTRY, [event_id, user_id])
        row = cursor.fetchone()
    if row is None:
        raise NotOnWaitlistError()
    status, quantity, offered, expires_at, joined_at, position, order_id = row
    if order_id is not None:
        status = "bought"
    return WaitlistEntryView(
        event_id=event_id,
        status=status,
        quantity=quantity,
        position=position,
        offer_quantity=offered,
        expires_at=expires_at if status == "offered" else None,
        order_id=order_id,
        joined_at=joined_at,
    )


def waitlist_figures(*, event_ids: list[int] | None = None) -> list[dict]:
    """Per waitlist (by event): its settings, entries waiting, offers out, offers taken
    and offers expired (two queries)."""
    waitlists = Waitlist.objects.order_by("event_id")
    entries = WaitlistEntry.objects.annotate(
        taken=Exists(Order.objects.filter(waitlist_entry=OuterRef("pk")))
    )
    if event_ids is not None:
        waitlists = waitlists.filter(event_id__in=event_ids)
        entries = entries.filter(event_id__in=event_ids)
    if event_ids == []:
        return []
    Status = WaitlistEntry.Status
    counts = {
        row.pop("event_id"): row
        for row in entries.values("event_id")
        .annotate(
            waiting=Count("pk", filter=Q(status=Status.WAITING)),
            offers_out=Count("pk", filter=Q(status=Status.OFFERED, taken=False)),
            offers_taken=Count("pk", filter=Q(taken=True)),
            offers_expired=Count("pk", filter=Q(status=Status.EXPIRED, taken=False)),
        )
        .order_by()
    }
    zero = {"waiting": 0, "offers_out": 0, "offers_taken": 0, "offers_expired": 0}
    return [
        {
            "event_id": w.event_id,
            "offer_seconds": w.offer_seconds,
            "paused": w.paused,
            **counts.get(w.event_id, zero),
        }  # fmt: skip
        for w in waitlists
    ]
