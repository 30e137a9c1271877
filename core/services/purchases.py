"""The hot path of a flash sale: accept or refuse a purchase request in milliseconds."""
import logging
from dataclasses import dataclass

import redis
from kombu.exceptions import OperationalError
from django.db import DatabaseError, IntegrityError, transaction

from core import stock
from core.exceptions import (
    GateUnavailableError,
    DatabaseUnavailableError,
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    InsufficientTicketsError,
    NotFoundError,
    PurchaseLimitError,
    QueueUnavailableError,
    SaleClosedError,
    SoldOutError,
)
from core.models import Order
from core.services.gate import gate_ensure
from core.services.orders import order_abandon

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurchaseResult:
    order: Order
    replayed: bool = False


def purchase_request(
    *, user_id: int, event_id: int, quantity: int, idempotency_key: str | None = None
) -> PurchaseResult:
    """Reserve stock in the gate, record a pending order, and queue its commit.

    A refusal (sold out, too few left, over the per-user limit, sale not open) is
    decided by one Redis call and touches neither PostgreSQL nor the queue. Once stock
    is reserved, any failure gives it back before the error reaches the caller.
    """
    fingerprint = f"{event_id}:{quantity}"
    idem_key = (
        stock.idempotency_key(event_id=event_id, user_id=user_id, key=idempotency_key)
        if idempotency_key
        else ""
    )
    operation_id = stock.new_operation_id("buy")
    answer = _reserve(
        event_id=event_id,
        user_id=user_id,
        quantity=quantity,
        operation_id=operation_id,
        idem_key=idem_key,
        fingerprint=fingerprint,
    )
    if answer.status == "replay":
        return _replay(stored=str(answer.value), fingerprint=fingerprint, user_id=user_id)
    _raise_refusal(answer)

    def release() -> None:
        stock.stock_release(
            event_id=event_id,
            operation_id=operation_id,
            holdings=[(user_id, quantity)],
            idem_key=idem_key,
        )

    try:
        # Its own (sub)transaction, so a conflict leaves the caller's connection usable.
        with transaction.atomic():
            order = Order.objects.create(
                user_id=user_id,
                event_id=event_id,
                quantity=quantity,
                idempotency_key=idempotency_key,
            )
    except IntegrityError:
        release()
        return _replay_from_database(
            user_id=user_id, event_id=event_id, key=idempotency_key, fingerprint=fingerprint
        )
    except DatabaseError:
        release()
        logger.exception("order not recorded", extra={"event_id": event_id})
        raise DatabaseUnavailableError() from None
    _schedule_commit(order=order, operation_id=operation_id, idem_key=idem_key, fingerprint=fingerprint)
    logger.info("order accepted", extra={"order_id": order.pk, "event_id": event_id})
    return PurchaseResult(order=order)


def _reserve(*, event_id: int, **kwargs) -> stock.GateAnswer:
    try:
        answer = stock.stock_reserve(event_id=event_id, **kwargs)
        if answer.status == "missing":
            # First purchase, or Redis lost its keys: rebuild from PostgreSQL and retry.
            try:
                found = gate_ensure(event_id=event_id)
            except DatabaseError:
                raise DatabaseUnavailableError() from None
            if not found:
                raise NotFoundError("No event with this id.")
            answer = stock.stock_reserve(event_id=event_id, **kwargs)
    except redis.RedisError:
        raise GateUnavailableError() from None
    return answer


def _raise_refusal(answer: stock.GateAnswer) -> None:
    left = int(answer.value)
    if answer.status == "sold_out":
        raise SoldOutError(extra={"tickets_available": 0})
    if answer.status == "insufficient":
        raise InsufficientTicketsError(
            f"Only {left} ticket(s) left.", extra={"tickets_available": left}
        )
    if answer.status == "limit":
        raise PurchaseLimitError(
            f"You can buy at most {left} more ticket(s) for this event.",
            extra={"tickets_allowed": left},
        )
    if answer.status == "sale_not_open":
        raise SaleClosedError()
    if answer.status == "missing":
        raise GateUnavailableError()


def _replay(*, stored: str, fingerprint: str, user_id: int) -> PurchaseResult:
    kind, _, rest = stored.partition(":")
    if kind == "p":
        if rest != fingerprint:
            raise IdempotencyKeyReusedError()
        raise IdempotencyInProgressError()
    order_id, _, stored_fingerprint = rest.partition(":")
    if stored_fingerprint != fingerprint:
        raise IdempotencyKeyReusedError()
    return PurchaseResult(order=Order.objects.get(pk=int(order_id), user_id=user_id), replayed=True)


def _replay_from_database(
    *, user_id: int, event_id: int, key: str | None, fingerprint: str
) -> PurchaseResult:
    """Answer a request whose insert conflicted: a replayed key, or an event just deleted."""
    existing = Order.objects.filter(user_id=user_id, idempotency_key=key).first() if key else None
    if existing is None:
        raise NotFoundError("No event with this id.")
    if f"{existing.event_id}:{existing.quantity}" != fingerprint:
        raise IdempotencyKeyReusedError()
    return PurchaseResult(order=existing, replayed=True)


def _schedule_commit(*, order: Order, operation_id: str, idem_key: str, fingerprint: str) -> None:
    """Hand the (committed) order to the workers: one drain task per event at a time.

    If the queue cannot take it, the order is rejected and its stock given back, so the
    caller's 503 means exactly "nothing was bought".
    """
    from workers.tasks import event_orders_commit_task

    event_id = order.event_id
    try:
        pipe = stock.get_redis().pipeline(transaction=False)
        if idem_key:
            pipe.set(idem_key, f"o:{order.pk}:{fingerprint}", keepttl=True)
        pipe.zrem(stock.inflight_key(event_id), operation_id)
        pipe.set(stock.drain_flag_key(event_id), 1, nx=True, ex=stock.DRAIN_FLAG_SECONDS)
        must_publish = pipe.execute()[-1]
    except redis.RedisError:
        # The order is durable; the reconciler queues it once it counts as stale.
        logger.warning("gate unreachable after accept", extra={"order_id": order.pk})
        return
    if not must_publish:
        return
    try:
        event_orders_commit_task.apply_async(args=[event_id], retry=False)
    except (OperationalError, redis.RedisError, OSError) as exc:
        stock.get_redis().delete(stock.drain_flag_key(event_id))
        if order_abandon(order_id=order.pk, reason="The order queue was unavailable."):
            stock.stock_release(
                event_id=event_id,
                operation_id=operation_id,
                holdings=[(order.user_id, order.quantity)],
                idem_key=idem_key,
            )
        logger.error("order not queued", extra={"order_id": order.pk, "error": repr(exc)})
        raise QueueUnavailableError() from exc
