"""Domain errors. Services raise them; `api.exceptions` renders them as JSON."""

from typing import Any


class ApplicationError(Exception):
    """Base of every error a client may see; `code` is stable, `message` is prose."""

    code = "error"
    status_code = 400
    message = "The request could not be processed."
    retry_after: int | None = None

    def __init__(self, message: str | None = None, *, extra: dict[str, Any] | None = None):
        self.message = message or self.message
        self.extra = extra or {}
        super().__init__(self.message)


class NotFoundError(ApplicationError):
    code = "not_found"
    status_code = 404
    message = "Not found."


class PermissionDeniedError(ApplicationError):
    code = "permission_denied"
    status_code = 403
    message = "You do not have permission to perform this action."


class ConflictError(ApplicationError):
    code = "conflict"
    status_code = 409


class SoldOutError(ConflictError):
    code = "sold_out"
    message = "This event is sold out."


class InsufficientTicketsError(ConflictError):
    code = "insufficient_tickets"
    message = "Fewer tickets are left than requested."


class PurchaseLimitError(ConflictError):
    code = "limit_exceeded"
    message = "This purchase would exceed the per-user ticket limit for this event."

    @classmethod
    def allowing(cls, allowed: int) -> "PurchaseLimitError":
        """The refusal that tells the buyer how many more tickets they may have."""
        return cls(
            f"You can buy at most {allowed} more ticket(s) for this event.",
            extra={"tickets_allowed": allowed},
        )


class SaleClosedError(ConflictError):
    code = "sale_not_open"
    message = "Tickets for this event are not on sale now."


class IdempotencyInProgressError(ConflictError):
    code = "request_in_progress"
    message = "A request with this Idempotency-Key is still being processed; retry shortly."
    retry_after = 1


class IdempotencyKeyReusedError(ApplicationError):
    code = "idempotency_key_reused"
    status_code = 422
    message = "This Idempotency-Key was already used with a different request."


class OrderNotCancellableError(ConflictError):
    code = "order_not_cancellable"
    message = "Only confirmed orders of events that have not started can be cancelled."


class EventHasSalesError(ConflictError):
    code = "event_has_sales"
    message = "An event with sales or pending orders cannot be deleted."


class TotalBelowCommittedError(ConflictError):
    code = "total_below_committed"
    message = "total_tickets cannot drop below the tickets sold or reserved."


class ThrottledError(ApplicationError):
    code = "throttled"
    status_code = 429
    message = "Too many requests; retry after the time given."

    def __init__(self, message: str | None = None, *, retry_after: int, extra=None):
        super().__init__(message, extra={"retry_after": retry_after, **(extra or {})})
        self.retry_after = retry_after


class ServiceBusyError(ApplicationError):
    """A dependency is down or overloaded: nothing was done, the client may retry."""

    code = "service_unavailable"
    status_code = 503
    message = "The service is busy; nothing was done. Retry shortly."
    retry_after = 2


class DatabaseUnavailableError(ServiceBusyError):
    code = "database_unavailable"
    message = "The database is unavailable; nothing was done. Retry shortly."


class QueueUnavailableError(ServiceBusyError):
    code = "queue_unavailable"
    message = "The order queue is unavailable; nothing was done. Retry shortly."


class GateUnavailableError(ServiceBusyError):
    code = "gate_unavailable"
    message = "The stock gate is unavailable; nothing was done. Retry shortly."


class TooManyAttemptsError(ApplicationError):
    code = "too_many_attempts"
    status_code = 429
    message = "Too many failed logins for this account; retry later."


class TokenRefusedError(ApplicationError):
    """A refresh token that may not be renewed (base of the two causes below)."""

    status_code = 401


class NoActiveAccountError(TokenRefusedError):
    code = "no_active_account"
    message = "No active account for this token."


class TokenRevokedError(TokenRefusedError):
    code = "token_revoked"
    message = "This token has been revoked."


# --- The waiting room (core/services/waiting_room.py) ---------------------------------


class WaitingRoomClosedError(NotFoundError):
    code = "waiting_room_closed"
    message = "This event has no waiting room."


class NotInWaitingRoomError(NotFoundError):
    code = "not_in_waiting_room"
    message = "You have not joined this event's waiting room."


class NotAdmittedYetError(ConflictError):
    """Not admitted yet: the body carries the position, Retry-After the wait."""

    code = "not_admitted_yet"
    message = "Your turn in the waiting room has not come yet."

    def __init__(self, message: str | None = None, *, position: int | None, retry_after: int):
        super().__init__(message, extra={"position": position})
        self.retry_after = retry_after


class NotJoinedToBuyError(ConflictError):
    """A purchase on an event with a waiting room by a buyer who never joined it: the
    same code as the own state's 404, as a 409 here (the event is there; the purchase
    conflicts with the room)."""

    code = "not_in_waiting_room"
    message = "This event has a waiting room: join it first, then buy once admitted."


class AdmissionExpiredError(ConflictError):
    code = "admission_expired"
    message = "Your admission from the waiting room has expired."


class WaitingRoomUnavailableError(ServiceBusyError):
    code = "waiting_room_unavailable"
    message = "The waiting room is unavailable; nothing was done. Retry shortly."


# --- The waitlist (core/services/waitlists.py) ----------------------------------------


class WaitlistOpenError(ConflictError):
    """Sold out, on an event with a waitlist: as cheap as `sold_out`, and says what to do."""

    code = "sold_out_waitlist_open"
    message = (
        "This event is sold out. Join its waitlist (POST /events/<id>/waitlist/join/) to be "
        "offered tickets that come back, in the order of the line."
    )


class WaitlistOfferExceededError(ConflictError):
    code = "offer_quantity_exceeded"
    message = "This purchase asks for more tickets than your waitlist offer holds."


class NoWaitlistError(NotFoundError):
    code = "no_waitlist"
    message = "This event has no waitlist."


class NotOnWaitlistError(NotFoundError):
    code = "not_on_waitlist"
    message = "You are not on this event's waitlist."


class NotSoldOutError(ConflictError):
    code = "not_sold_out"
    message = "Tickets for this event are on sale: buy them instead of joining the waitlist."


class WaitlistNeedsRoomError(ConflictError):
    """A waitlist join on an event with a waiting room by a buyer who never joined the room:
    the waitlist continues the room's line, so the room's number comes first."""

    code = "not_in_waiting_room"
    message = "This event has a waiting room: join it first; its line continues on the waitlist."
