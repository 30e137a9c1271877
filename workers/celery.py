"""The Celery application: a Redis or RabbitMQ broker, a queue of its own for purchases, beat jobs."""

import logging
import os

import redis
from celery import Celery, bootsteps, current_task, signals
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from core.services.workers import worker_forget, worker_heartbeat  # noqa: E402
from workers import kombu_fixes  # noqa: E402

kombu_fixes.apply()

PURCHASES_QUEUE = "purchases"
DEFAULT_QUEUE = "default"


def on_rabbitmq(broker_url: str) -> bool:
    return broker_url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


# Connecting a producer (the API's publish of a commit task): one immediate retry, then
# the error. kombu's default retries for about 6 s, holding an API worker while the
# buyer waits for a 503 anyway. Workers reconnect their consumer under
# broker_connection_retry, which these do not limit.
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def broker_options(broker_url: str) -> dict:
    """The queues and transport options for `broker_url` (also used by the benchmark's
    publisher, which talks to another broker than its own settings name)."""
    if on_rabbitmq(broker_url):
        # Quorum queues: durable, replicated over a RabbitMQ cluster's nodes, and the
        # type RabbitMQ recommends for data that must not be lost. An unacknowledged
        # message returns to the queue as soon as its worker's connection closes (no
        # visibility timeout to wait out). Direct exchanges, as on Redis: Celery's
        # native delayed delivery (topic exchanges) counts whole seconds only and
        # refuses the drain's 0.1 s countdown, so a worker holds a delayed drain until
        # its ETA, as it does on Redis.
        # Each queue its own exchange and routing key: a Queue without them gets
        # Celery's default exchange and key ("default"), which on RabbitMQ binds both
        # queues to one key and delivers every message to both.
        queues = [
            Queue(
                name,
                Exchange(name, type="direct"),
                routing_key=name,
                queue_arguments={"x-queue-type": "quorum"},
            )
            for name in (PURCHASES_QUEUE, DEFAULT_QUEUE)
        ]
        # A publish returns once RabbitMQ has the message (publisher confirms): the 202
        # promises a queued commit, as Redis's LPUSH reply does.
        return {
            "task_queues": queues,
            "broker_transport_options": {"confirm_publish": True, **_PUBLISH_RETRY},
        }
    return {
        "task_queues": [Queue(PURCHASES_QUEUE), Queue(DEFAULT_QUEUE)],
        "broker_transport_options": {
            # A worker that dies mid-task leaves its message unacknowledged: Redis hands
            # it to another worker once this many seconds have passed.
            "visibility_timeout": 60,
            "socket_timeout": 2,
            "socket_connect_timeout": 2,
            **_PUBLISH_RETRY,
        },
    }


class _DirectExchangeNotice(logging.Filter):
    """Drop Celery's per-publish warning that direct exchanges get no native delayed
    delivery: chosen above, and it would be logged for every delayed drain."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Direct exchanges are not supported")


logging.getLogger("celery.app.base").addFilter(_DirectExchangeNotice())

app = Celery("workers")
app.conf.update(
    broker_url=settings.CELERY_BROKER_URL,
    broker_connection_retry_on_startup=True,
    # A message is acknowledged only after its task ran; a worker that dies mid-task
    # gets its message redelivered to another one (Redis: after the visibility timeout;
    # RabbitMQ: when the dead worker's connection closes).
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # On broker loss, stop the running late-ack tasks: their messages come back anyway,
    # and a commit interrupted mid-transaction is rolled back by PostgreSQL.
    worker_cancel_long_running_tasks_on_connection_loss=True,
    broker_connection_timeout=2,
    worker_prefetch_multiplier=1,
    task_default_queue=DEFAULT_QUEUE,
    task_routes={
        "workers.tasks.event_orders_commit": {"queue": PURCHASES_QUEUE},
    },
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    task_always_eager=settings.CELERY_TASK_ALWAYS_EAGER,
    worker_hijack_root_logger=False,
    worker_send_task_events=True,
    task_send_sent_event=False,
    timezone="UTC",
    **broker_options(settings.CELERY_BROKER_URL),
    beat_schedule={
        "gate-reconcile": {
            "task": "workers.tasks.gate_reconcile",
            "schedule": float(settings.GATE_RECONCILE_SECONDS),
        },
        "orders-requeue-stale": {
            "task": "workers.tasks.orders_requeue_stale",
            "schedule": float(settings.ORDER_REQUEUE_SECONDS),
        },
        "waiting-room-persist": {
            "task": "workers.room_tasks.waiting_room_persist",
            "schedule": float(settings.WAITING_ROOM_PERSIST_SECONDS),
            "options": {"expires": float(settings.WAITING_ROOM_PERSIST_SECONDS)},
        },
        "waitlist-tick": {
            "task": "workers.waitlist_tasks.waitlist_tick",
            "schedule": float(settings.WAITLIST_TICK_SECONDS),
            "options": {"expires": float(settings.WAITLIST_TICK_SECONDS)},
        },
        "top-events-refresh": {
            "task": "workers.tasks.top_events_refresh",
            "schedule": float(settings.TOP_EVENTS_REFRESH_SECONDS),
            # A refresh queued behind a slow one is pointless once the next is due.
            "options": {"expires": float(settings.TOP_EVENTS_REFRESH_SECONDS)},
        },
    },
)
# Keep database connections across tasks (Celery's Django fixup closes them around
# every task otherwise, which costs a connection handshake per order batch).
app.conf["CELERY_DB_REUSE_MAX"] = 1000
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)
app.autodiscover_tasks(["workers"], related_name="room_tasks", force=True)
app.autodiscover_tasks(["workers"], related_name="waitlist_tasks", force=True)

logger = logging.getLogger(__name__)


class PeriodicTaskChatter(logging.Filter):
    """Log at DEBUG what beat's periodic tasks would say at INFO every few seconds.

    Beat's "Sending due task", the worker's "Task ... received", "Task ... succeeded" and
    "Discarding revoked task" (a refresh that expired in the queue), and the task's own
    INFO lines (the task running when they are logged) are demoted, so that the INFO
    lines of a terminal are requests, accepts and commits. Warnings and errors keep
    their level.
    """

    def __init__(self, task_names: frozenset[str]):
        super().__init__()
        self.task_names = task_names

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or _task_name(record) not in self.task_names:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


# Celery's INFO lines that carry a task's name among their arguments, and where.
_NAME_ARGUMENT = {
    ("celery.beat", "Scheduler: Sending due task %s (%s)"): 1,
    ("celery.worker.request", "Discarding revoked task: %s[%s]"): 0,
}


def _task_name(record: logging.LogRecord) -> str | None:
    data = getattr(record, "data", None)  # celery.worker.strategy's and celery.app.trace's
    if isinstance(data, dict):
        return data.get("name")
    index = _NAME_ARGUMENT.get((record.name, record.msg))
    if index is not None:
        return record.args[index]
    return current_task.name if current_task else None


PERIODIC_TASKS = frozenset(entry["task"] for entry in app.conf.beat_schedule.values())
# Where beat logs a task's sending, the worker its receipt, expiry and success, and the
# periodic tasks their own lines.
CHATTER_LOGGERS = (
    "celery.beat",
    "celery.worker.strategy",
    "celery.worker.request",
    "celery.app.trace",
    "workers.tasks",
    "workers.room_tasks",
    "workers.waitlist_tasks",
)
_chatter = PeriodicTaskChatter(PERIODIC_TASKS)
for _name in CHATTER_LOGGERS:
    logging.getLogger(_name).addFilter(_chatter)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Announce this worker in Redis every WORKER_HEARTBEAT_SECONDS (core/ops.py reads it).

    /ops/queues/ and /metrics then know the live workers without a broadcast ping held
    inside the request. A timer of the worker's own, not Celery's event heartbeats, which
    `--without-heartbeat` turns off.
    """

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker):
        self._beat(worker.hostname)
        self.tref = worker.timer.call_repeatedly(
            settings.WORKER_HEARTBEAT_SECONDS, self._beat, (worker.hostname,)
        )

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        try:
            worker_forget(name=worker.hostname)
        except redis.RedisError:
            pass  # it drops out of the answer once its alive window has passed

    @staticmethod
    def _beat(name: str) -> None:
        try:
            worker_heartbeat(name=name)
        except redis.RedisError as exc:  # Redis down: the next beat tries again
            logger.warning("worker heartbeat not recorded", extra={"error": repr(exc)})


app.steps["worker"].add(WorkerHeartbeat)


@signals.task_prerun.connect
def _drop_broken_database_connections(**kwargs) -> None:
    """Do per task what Django does per request: drop a connection that failed or aged.

    With connections reused across tasks (CELERY_DB_REUSE_MAX), one terminated by the
    server would otherwise fail every later task, retries included.
    """
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        connection.close_if_unusable_or_obsolete()


@signals.worker_init.connect
def _serve_worker_metrics(**kwargs) -> None:
    """With WORKER_METRICS_PORT set, serve this worker's metrics (all pool processes).

    On one host `make run` shares PROMETHEUS_MULTIPROC_DIR with the API instead, and
    the API's /metrics already includes the workers' samples.
    """
    port = settings.WORKER_METRICS_PORT
    if not port:
        return
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    start_http_server(port, addr=settings.WORKER_METRICS_ADDR, registry=registry)


@signals.worker_process_shutdown.connect
def _forget_dead_process(pid=None, **kwargs) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
