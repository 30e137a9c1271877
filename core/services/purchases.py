"""The hot path of a flash sale: accept or refuse a purchase request in milliseconds.

Four steps, in this order, each a function below:
1. reserve   core/gate/reserve.py: one Redis Lua call reserves the tickets or refuses
             (a refusal touches neither PostgreSQL nor the broker); on an event with a
             waiting room the same call checks the buyer's admission; a missing gate
             or room is rebuilt from PostgreSQL first (core/services/gate.py).
2. record    one INSERT of the pending order (core/services/orders.py); if it fails,
             the reservation is given back before the error reaches the caller.
3. schedule  one Redis pipeline ends the reservation's flight, writes the order's card
             (core/cards.py) and claims the event's drain, whose task commits the order
             (core/services/drain.py).
4. answer    the order, its place in line and the estimated wait, from step 1's reply.
An accept costs one INSERT and two Redis round trips.
"""

import logging
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import DatabaseError, IntegrityError
from kombu.exceptions import OperationalError

from core.cards import order_card_fill, order_card_of
from core.exceptions import (
    AdmissionExpiredError,
    DatabaseUnavailableError,
    GateUnavailableError,
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    InsufficientTicketsError,
    NotAdmittedYetError,
    NotFoundError,
    NotJoinedToBuyError,
    PurchaseLimitError,
    QueueUnavailableError,
    SaleClosedError,
    SoldOutError,
    ThrottledError,
    WaitlistOfferExceededError,
    WaitlistOpenError,
)
from core.gate.line import order_standing
from core.gate.reserve import (
    GateReply,
    GateStatus,
    IdempotencyRecord,
    Place,
    PurchaseAsk,
    gate_number_return,
    gate_recorded,
    gate_reserve,
    gate_unreserve,
    wait_estimate,
)
from core.models import Order
from core.redis_client import get_redis
from core.services.cancellations import order_abandon
from core.services.drain import drain_claim, drain_publish, drain_unclaim
from core.services.gate import gate_ensure
from core.services.orders import order_insert_pending

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurchaseResult:
    order: Order
    replayed: bool = False
    # While the order is pending: its place in the event's line (core/gate/line.py);
    # None when the line cannot tell without another query.
    position: int | None = None
    estimated_wait_seconds: float | None = None


def purchase_request(
    *,
    user_id: int,
    event_id: int,
    quantity: int,
    idempotency_key: str | None = None,
    rate: tuple[int, int] | None = None,
) -> PurchaseResult:
    """Reserve tickets in the gate, record a pending order, and schedule its commit.

    `rate`: the buyer's allowed requests on the event, per seconds (api/throttles.py).
    """
    ask = PurchaseAsk(user_id, event_id, quantity, idempotency_key, rate)
    reply = _reserve(ask)
    if reply.status is GateStatus.REPLAY:
        return _replayed(_replay(ask, reply.replay))
    _raise_refusal(reply)
    result = _record_order(ask=ask, reply=reply)
    if result.replayed:
        return _replayed(result)
    order = result.order
    # From here on the order exists and is pending. Nothing that fails now (Redis, the
    # broker, an import, a bug) may turn into a 500 for an order the buyer was never told
    # about: the buyer gets its 202, and the requeue job commits it once it is stale.
    # Only a queue refusal that has already rejected the order answers otherwise.
    try:
        _schedule(ask, order=order, place=reply.place)
        logger.info("order accepted", extra={"order_id": order.pk, "event_id": event_id})
        return _answer(order, reply)
    except QueueUnavailableError:
        raise
    except Exception:
        logger.exception("order accepted, its commit left to the requeue job",
                         extra={"order_id": order.pk, "event_id": event_id})  # fmt: skip
        _recorded_quietly(ask, order=order)
        return PurchaseResult(order=order)


# --- 1. reserve ----------------------------------------------------------------------


def _reserve(ask: PurchaseAsk) -> GateReply:
    try:
        reply = gate_reserve(ask)
        if reply.status is GateStatus.MISSING:
            # First purchase, or Redis lost its keys: rebuild the gate and the waiting
            # room from PostgreSQL and retry.
            try:
                found = gate_ensure(event_id=ask.event_id)
            except DatabaseError:
                raise DatabaseUnavailableError() from None
            if not found:
                raise NotFoundError("No event with this id.")
            reply = gate_reserve(ask)
    except redis.RedisError:
        raise GateUnavailableError() from None
    return reply


def _raise_refusal(reply: GateReply) -> None:
    status = reply.status
    if status is GateStatus.THROTTLED:
        raise ThrottledError(retry_after=reply.retry_after)
    if status is GateStatus.SOLD_OUT:
        raise SoldOutError(extra={"tickets_available": 0})
    if status is GateStatus.SOLD_OUT_WAITLIST:
        raise WaitlistOpenError(extra={"tickets_available": 0})
    if status is GateStatus.OFFER_EXCEEDED:
        offered = reply.tickets_offered
        raise WaitlistOfferExceededError(
            f"Your waitlist offer is for {offered} ticket(s).",
            extra={"tickets_offered": offered},
        )
    if status is GateStatus.INSUFFICIENT:
        left = reply.tickets_left
        raise InsufficientTicketsError(
            f"Only {left} ticket(s) left.", extra={"tickets_available": left}
        )
    if status is GateStatus.LIMIT:
        raise PurchaseLimitError.allowing(reply.tickets_allowed)
    if status is GateStatus.SALE_NOT_OPEN:
        raise SaleClosedError()
    if status is GateStatus.NOT_ADMITTED:
        raise NotAdmittedYetError(position=reply.position, retry_after=reply.retry_after)
    if status is GateStatus.ADMISSION_EXPIRED:
        raise AdmissionExpiredError()
    if status is GateStatus.NOT_JOINED:
        raise NotJoinedToBuyError()
    if status is GateStatus.MISSING:
        raise GateUnavailableError()


def _replay(ask: PurchaseAsk, record: IdempotencyRecord) -> PurchaseResult:
    """The answer to a request whose Idempotency-Key the gate has seen before."""
    if record.fingerprint != ask.fingerprint:
        raise IdempotencyKeyReusedError()
    if record.order_id is None:
        raise IdempotencyInProgressError()
    order = Order.objects.get(pk=record.order_id, user_id=ask.user_id)
    return PurchaseResult(order=order, replayed=True)


def _replayed(result: PurchaseResult) -> PurchaseResult:
    """A replayed order with its place in line, recounted (replays are rare)."""
    order = result.order
    if order.status != Order.Status.PENDING:
        return result
    standing = order_standing(order_id=order.pk, place=Place(order.event_id))
    return PurchaseResult(
        order=order,
        replayed=True,
        position=standing.position,
        estimated_wait_seconds=standing.estimate,
    )


# --- 2. record -----------------------------------------------------------------------


def _record_order(*, ask: PurchaseAsk, reply: GateReply) -> PurchaseResult:
    """Insert the pending order for a reservation, giving the tickets back if that fails
    (to the buyer's waitlist offer, when they came from one).

    When the connection breaks during the insert itself, the order may or may not have
    been committed: the reservation is then kept (the gate errs towards refusing) and
    reconciliation settles it; a retry with the same Idempotency-Key finds the order.
    The line then cannot count it either, and is trusted no more.
    """
    place, offer = reply.place, reply.offer_entry
    try:
        order = order_insert_pending(
            user_id=ask.user_id,
            event_id=ask.event_id,
            quantity=ask.quantity,
            idempotency_key=ask.idempotency_key,
            waitlist_entry_id=offer,
        )
    except IntegrityError:
        _give_back(ask, place, offer=offer)
        return _replay_from_database(ask)
    except DatabaseUnavailableError:  # nothing was sent: nothing was written
        _give_back(ask, place, offer=offer)
        raise
    except DatabaseError:
        _give_back(ask, place, tickets=False)
        logger.exception("order outcome unknown", extra={"event_id": ask.event_id})
        raise DatabaseUnavailableError(
            "The database failed while recording the order; it may or may not exist. "
            "Retry with the same Idempotency-Key to find out."
        ) from None
    return PurchaseResult(order=order)


def _give_back(
    ask: PurchaseAsk, place: Place, *, tickets: bool = True, offer: int | None = None
) -> None:
    """End the reservation, giving its tickets back (to `offer`, the waitlist entry they
    came from, if any) unless the order may exist."""
    gate_unreserve(ask, give_back=tickets, offer_entry=offer)
    _return_number(place, outcome_unknown=not tickets)


def _return_number(place: Place, *, outcome_unknown: bool = False) -> None:
    try:
        gate_number_return(place, outcome_unknown=outcome_unknown)
    except redis.RedisError:
        logger.warning("line not updated: Redis unavailable", extra={"event_id": place.event_id})


def _replay_from_database(ask: PurchaseAsk) -> PurchaseResult:
    """Answer a request whose insert conflicted: a replayed key, or an event just deleted."""
    key, existing = ask.idempotency_key, None
    if key:
        existing = Order.objects.filter(user_id=ask.user_id, idempotency_key=key).first()
    if existing is None:
        raise NotFoundError("No event with this id.")
    if f"{existing.event_id}:{existing.quantity}" != ask.fingerprint:
        raise IdempotencyKeyReusedError()
    return PurchaseResult(order=existing, replayed=True)


# --- 3. schedule ---------------------------------------------------------------------


def _schedule(ask: PurchaseAsk, *, order: Order, place: Place) -> None:
    """Hand the (committed) order to the workers: one drain task per event at a time.

    If the broker cannot take it, the order is rejected and its tickets given back, so
    the caller's 503 means exactly "nothing was bought". If even that rejection cannot
    be written, the order stays pending, the requeue job will commit it, and the caller
    gets its 202: the answer always matches what will happen to the order.
    """
    try:
        pipe = get_redis().pipeline(transaction=False)
        gate_recorded(pipe, ask, order_id=order.pk)
        order_card_fill(order_id=order.pk, card=order_card_of(order, place=place), pipe=pipe)
        drain_claim(pipe, event_id=ask.event_id)
        claimed = pipe.execute()[-1]
    except redis.RedisError:
        # The order is durable; the requeue job queues it once it counts as stale.
        logger.warning("gate unreachable after accept", extra={"order_id": order.pk})
        return
    if not claimed:
        return  # a drain of the event is queued or running: it will take this order
    try:
        drain_publish(
            event_id=ask.event_id, countdown=settings.ORDER_COMMIT_DELAY_SECONDS, retry=False
        )
    except (OperationalError, redis.RedisError, OSError) as exc:
        logger.error("order not queued", extra={"order_id": order.pk, "error": repr(exc)})
        if _unschedule(ask, order=order, place=place):
            raise QueueUnavailableError() from exc


def _unschedule(ask: PurchaseAsk, *, order: Order, place: Place) -> bool:
    """Reject an order the broker refused and give its tickets back; False when the order
    stays pending instead (the rejection could not be written, or a worker won)."""
    try:
        abandoned = order_abandon(order_id=order.pk, reason="The order queue was unavailable.")
    except DatabaseError:
        logger.warning("order left to the requeue job", extra={"order_id": order.pk})
        return False
    if not abandoned:
        return False  # the message got through after all and a worker made it final
    try:
        drain_unclaim(event_id=ask.event_id)
        # Tickets taken from a waitlist offer go back to it: the buyer was told nothing
        # was bought, and order_abandon made the offer count as out again.
        gate_unreserve(ask, offer_entry=order.waitlist_entry_id)
        _return_number(place)
    except Exception:
        # The order is rejected: the answer stays "nothing was bought", whatever failed
        # here, and the gate's reconciliation from PostgreSQL counts its tickets back.
        logger.exception("tickets not given back to the gate", extra={"order_id": order.pk})
    return True


def _recorded_quietly(ask: PurchaseAsk, *, order: Order) -> None:
    """Point the request's Idempotency-Key at its order (so that a retry finds it) and end
    the reservation's flight, after a failure cut the schedule step short."""
    try:
        pipe = get_redis().pipeline(transaction=False)
        gate_recorded(pipe, ask, order_id=order.pk)
        pipe.execute()
    except redis.RedisError:
        logger.warning("idempotency record not updated", extra={"order_id": order.pk})


# --- 4. answer -----------------------------------------------------------------------


def _answer(order: Order, reply: GateReply) -> PurchaseResult:
    """The accepted order with its place in line, as the reserve step's reply shows it."""
    line = reply.line
    position = line.position(reply.place, now=time.time())
    wait = None if position is None else wait_estimate(line, position=position)
    return PurchaseResult(order=order, position=position, estimated_wait_seconds=wait)
