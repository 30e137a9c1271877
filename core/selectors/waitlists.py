"""The waitlist's reads: a buyer's entry as they see it, and the figures per waitlist."""

from dataclasses import dataclass
from datetime import datetime

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
            return 5
        if self.status != "waiting":
            return None
        return min(30, 2 + (self.position or 0) // 10)


def waitlist_entry_view(entry: WaitlistEntry) -> WaitlistEntryView:
    """What the buyer sees of `entry` (one query more for a waiting entry's position, one
    for an offer's order)."""
    status, position, order_id = entry.status, None, None
    if status != WaitlistEntry.Status.WAITING:
        order_id = entry.orders.order_by("-id").values_list("pk", flat=True).first()
        if order_id is not None:
            status = "bought"
    else:
        ahead = Q(line_key__lt=entry.line_key) | Q(line_key=entry.line_key, pk__lt=entry.pk)
        position = (
            1
            + WaitlistEntry.objects.filter(
                ahead, event_id=entry.event_id, status=WaitlistEntry.Status.WAITING
            ).count()
        )
    return WaitlistEntryView(
        event_id=entry.event_id,
        status=status,
        quantity=entry.quantity,
        position=position,
        offer_quantity=entry.offered_quantity,
        expires_at=entry.expires_at if status == "offered" else None,
        order_id=order_id,
        joined_at=entry.joined_at,
    )


def access_waitlist_entry(*, event_id: int, user_id: int) -> WaitlistEntryView:
    """The caller's own entry on the event's waitlist."""
    entry = WaitlistEntry.objects.filter(event_id=event_id, user_id=user_id).first()
    if entry is None:
        raise NotOnWaitlistError()
    return waitlist_entry_view(entry)


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
