"""The domain: users with a role, events, orders (purchase requests) and tickets."""

from django.contrib.auth.models import AbstractUser
from django.contrib.auth.models import UserManager as BaseUserManager
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower, Upper


class UserManager(BaseUserManager):
    def create_superuser(self, username, email=None, password=None, **extra_fields):
        # `manage.py createsuperuser` makes the first Admin of the API too.
        extra_fields.setdefault("role", User.Role.ADMIN)
        return super().create_superuser(username, email, password, **extra_fields)


class User(AbstractUser):
    class Role(models.TextChoices):
        ADMIN = "Admin", "Admin"
        USER = "User", "User"

    role = models.CharField(max_length=8, choices=Role.choices, default=Role.USER)
    # Every token (access or refresh) issued before this time is void: set by
    # `core.services.users.user_tokens_revoke` in the transaction that deactivates the
    # user or changes their role or password. Redis holds a cache of the recent ones.
    tokens_valid_after = models.DateTimeField(null=True, blank=True, editable=False)

    objects = UserManager()

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        constraints = [
            # "Bob" and "bob" are one account, even when both register at once.
            models.UniqueConstraint(Lower("username"), name="user_username_ci_unique"),
        ]
        indexes = [
            # Rebuilding the Redis cache reads the revocations of the last token lifetime.
            models.Index(
                fields=["tokens_valid_after"],
                name="user_tokens_valid_after_idx",
                condition=Q(tokens_valid_after__isnull=False),
            ),
        ]

    @property
    def is_admin(self) -> bool:
        return self.role == self.Role.ADMIN

    def save(self, *args, **kwargs):
        # The role is the single source of authority: Admins are staff, Users never are.
        self.is_staff = self.role == self.Role.ADMIN or self.is_superuser
        super().save(*args, **kwargs)


class UserTombstone(models.Model):
    """A deleted user's revocation: their tokens stay void once the User row is gone."""

    user_id = models.BigIntegerField(primary_key=True)
    tokens_valid_after = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"deleted user {self.user_id}"


class Event(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    venue = models.CharField(max_length=200, blank=True, default="")
    date = models.DateTimeField()
    total_tickets = models.PositiveIntegerField()
    tickets_sold = models.PositiveIntegerField(default=0, editable=False)
    sale_starts_at = models.DateTimeField(null=True, blank=True)
    sale_ends_at = models.DateTimeField(null=True, blank=True)
    # Most tickets one user may hold for this event; null means the order maximum only.
    max_tickets_per_user = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["date", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(tickets_sold__gte=0) & Q(tickets_sold__lte=F("total_tickets")),
                name="event_tickets_sold_within_total",
            ),
            models.CheckConstraint(
                condition=Q(total_tickets__gte=1), name="event_total_tickets_positive"
            ),
        ]
        # Chosen from EXPLAIN on 100k events / 2M orders (docs/indexes.md).
        indexes = [
            # Listing by date (upcoming/past, both directions) without a sort step.
            models.Index(fields=["date", "id"], name="event_date_id_idx"),
            # `?search=` is icontains, i.e. UPPER(name) LIKE '%...%': a trigram index.
            GinIndex(OpClass(Upper("name"), name="gin_trgm_ops"), name="event_name_trgm_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def tickets_available(self) -> int:
        return self.total_tickets - self.tickets_sold


class Order(models.Model):
    """A purchase request: accepted by the API as pending, made final by a worker."""

    class Status(models.TextChoices):
        PENDING = "pending"
        CONFIRMED = "confirmed"
        REJECTED = "rejected"
        CANCELLED = "cancelled"

    # No single-column indexes: the composite ones below lead with these columns, and
    # every index costs the insert-heavy purchase path.
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="orders", db_index=False)
    event = models.ForeignKey(
        Event, on_delete=models.PROTECT, related_name="orders", db_index=False
    )
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    reason = models.CharField(max_length=200, blank=True, default="")
    # NULL, not '': orders without a key must not collide in the unique constraint.
    idempotency_key = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    # The waitlist offer this order took (core/services/waitlists.py): from then on the
    # offer's tickets are the order's, and no longer count as held.
    waitlist_entry = models.ForeignKey(
        "WaitlistEntry",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="orders",
        db_index=False,
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="order_unique_idempotency_key_per_user",
            ),
            models.CheckConstraint(condition=Q(quantity__gte=1), name="order_quantity_positive"),
        ]
        indexes = [
            # A user's orders, newest first; Admins' unfiltered and per-event listings.
            models.Index(fields=["user", "-created_at", "-id"], name="order_user_recent_idx"),
            models.Index(fields=["-created_at", "-id"], name="order_recent_idx"),
            models.Index(
                fields=["event", "status", "-created_at", "-id"], name="order_event_status_idx"
            ),
            # Drain tasks and the reconciler look for the pending orders of an event.
            models.Index(
                fields=["event", "id"],
                condition=Q(status="pending"),
                name="order_pending_by_event_idx",
            ),
            models.Index(
                fields=["created_at"],
                condition=Q(status="pending"),
                name="order_pending_age_idx",
            ),
            # Partial: orders without an offer (nearly all) never touch it.
            models.Index(
                fields=["waitlist_entry"],
                condition=Q(waitlist_entry__isnull=False),
                name="order_waitlist_entry_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status != self.Status.PENDING


class Ticket(models.Model):
    # One ticket row per confirmed order: the unique order guarantees no double purchase.
    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="ticket")
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="tickets")
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="tickets")
    quantity = models.PositiveIntegerField()
    purchase_date = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-purchase_date"]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.event_id} for {self.user_id}"


class TopEvent(models.Model):
    """A row of the `core_top_events` materialized view (see migration 0002).

    Upcoming events at refresh time, ranked by tickets sold (tickets of cancelled orders
    are deleted, so they do not count); ties share a rank.
    """

    event = models.OneToOneField(
        Event, on_delete=models.DO_NOTHING, primary_key=True, db_constraint=False, related_name="+"
    )
    name = models.CharField(max_length=200)
    date = models.DateTimeField()
    tickets_sold = models.IntegerField()
    rank = models.IntegerField()
    refreshed_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "core_top_events"
        ordering = ["rank", "date", "event_id"]

    def __str__(self) -> str:
        return f"#{self.rank} {self.name}"


class WaitingRoom(models.Model):
    """An event's waiting room: buyers join, get a number and are admitted in turn.

    The Admin's settings (`rate`, `admission_seconds`, `paused`) are written here and to
    the room's Redis hash by one service (core/services/waiting_room); `serving`,
    `advanced_at` and the totals are the Redis counters as last persisted by beat, from
    which a rebuild after a Redis loss restarts (never lower).
    """

    event = models.OneToOneField(
        Event, on_delete=models.CASCADE, primary_key=True, related_name="waiting_room"
    )
    # Buyers admitted per second; null: automatic (at most `capacity` admitted at once).
    rate = models.PositiveIntegerField(null=True, blank=True)
    admission_seconds = models.PositiveIntegerField()
    paused = models.BooleanField(default=False)
    # Automatic mode's most admitted-not-yet-bought buyers (follows the commit rate).
    capacity = models.PositiveIntegerField()
    # Keys the early joiners' random order (HMAC); never shown to anyone.
    secret = models.CharField(max_length=64, editable=False)
    serving = models.PositiveIntegerField(default=0)
    advanced_at = models.FloatField(default=0)  # epoch seconds, as Redis keeps it
    admitted_total = models.PositiveIntegerField(default=0)
    expired_total = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"waiting room of {self.event_id}"


class WaitingRoomEntry(models.Model):
    """A buyer's place in an event's waiting room, durable across Redis losses.

    Early joiners (before the opening) have `early_key`, a keyed hash whose rank among
    the event's early keys is their number; later joiners have `number` itself.
    """

    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, related_name="waiting_room_entries", db_index=False
    )
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+", db_index=False)
    early = models.BooleanField()
    early_key = models.BigIntegerField(null=True, blank=True)
    number = models.PositiveIntegerField(null=True, blank=True)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Joining twice keeps one place; the index also serves the rebuild's reads.
            models.UniqueConstraint(fields=["event", "user"], name="waiting_room_entry_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.event_id}"


class Waitlist(models.Model):
    """An event's waitlist: once it is sold out, buyers line up for tickets that come
    back, and each return is offered to the next entry it fits (core/services/waitlists.py).
    """

    event = models.OneToOneField(
        Event, on_delete=models.CASCADE, primary_key=True, related_name="waitlist"
    )
    # How long an offer holds its tickets for the buyer alone.
    offer_seconds = models.PositiveIntegerField()
    # Paused: no offers are made, and returned tickets go back on general sale.
    paused = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"waitlist of {self.event_id}"


class WaitlistEntry(models.Model):
    """A buyer's place on an event's waitlist, and the offer made to it.

    An entry is `waiting`, then `offered` (its tickets held in the gate until
    `expires_at`), and ends `expired` or `left`; an offer an order took is bought
    (`orders` is not empty: the purchase is one INSERT, it does not update the entry).
    """

    class Status(models.TextChoices):
        WAITING = "waiting"
        OFFERED = "offered"
        EXPIRED = "expired"
        LEFT = "left"

    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, related_name="waitlist_entries", db_index=False
    )
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+", db_index=False)
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.WAITING)
    # The order of the line: a waiting-room number (small) for a buyer who joined the
    # room, else the time of joining in microseconds (large, so after every number).
    line_key = models.BigIntegerField()
    offered_quantity = models.PositiveIntegerField(null=True, blank=True)
    offered_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    joined_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event", "user"], name="waitlist_entry_unique"),
            models.CheckConstraint(condition=Q(quantity__gte=1), name="waitlist_quantity_positive"),
        ]
        indexes = [
            # The line in order, and a waiting entry's position (entries ahead of it).
            models.Index(
                fields=["event", "line_key", "id"],
                condition=Q(status="waiting"),
                name="waitlist_waiting_idx",
            ),
            # Offers out, by the time they end (the expiry job).
            models.Index(
                fields=["expires_at"],
                condition=Q(status="offered"),
                name="waitlist_offered_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} on the waitlist of {self.event_id}"
