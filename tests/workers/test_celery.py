"""The worker's log: beat's periodic tasks one level down, purchases' commits at INFO.

`make run` shows the worker and beat at INFO in one terminal; there a newcomer should
read requests, accepts and commits, not a line per periodic task every few seconds.
"""

import json
import logging
import time
from datetime import timedelta

import pytest
from celery.app.trace import LOG_RECEIVED
from django.utils import timezone

from core.gate.store import gate_remaining
from core.models import Order, TopEvent
from tests.factories import pending_order
from tests.live import BIN, LiveStack
from workers.celery import CHATTER_LOGGERS, PERIODIC_TASKS
from workers.room_tasks import waiting_room_persist
from workers.tasks import event_orders_commit, gate_reconcile, orders_requeue_stale
from workers.tasks import top_events_refresh as top_events_refresh_task
from workers.waitlist_tasks import waitlist_tick

# Tasks run through Celery's tracer (apply), whose Django fixup closes the connection
# around each task: no test transaction could survive that.
pytestmark = pytest.mark.django_db(transaction=True)

# Where beat logs a task's sending, the worker its receipt, expiry and success, and tasks
# their own lines.
TASK_LOGGERS = (*CHATTER_LOGGERS, "core.services.drain")  # and the commit's own line
PERIODIC = (
    gate_reconcile,
    orders_requeue_stale,
    top_events_refresh_task,
    waiting_room_persist,
    waitlist_tick,
)


@pytest.fixture
def logs_at(caplog):
    def set_level(level: int):
        for name in TASK_LOGGERS:
            caplog.set_level(level, logger=name)
        return caplog

    return set_level


def lines(caplog, level: int) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name in TASK_LOGGERS and record.levelno == level
    ]


def test_every_beat_task_counts_as_periodic():
    assert PERIODIC_TASKS == {task.name for task in PERIODIC}


def test_periodic_tasks_log_nothing_at_info(logs_at, event):
    caplog = logs_at(logging.INFO)

    for task in PERIODIC:
        task.apply().get()

    assert lines(caplog, logging.INFO) == []


def test_periodic_tasks_log_their_success_at_debug(logs_at, event):
    caplog = logs_at(logging.DEBUG)

    for task in PERIODIC:
        task.apply().get()

    debug = lines(caplog, logging.DEBUG)
    for task in PERIODIC:
        assert any(line.startswith(f"Task {task.name}[") and "succeeded" in line for line in debug)
    assert "gate reconciled" in debug  # the task's own line, one level down too


def test_commits_stay_at_info(logs_at, buyer, event):
    caplog = logs_at(logging.INFO)
    pending_order(user=buyer, event=event)

    event_orders_commit.apply(args=[event.pk]).get()

    info = lines(caplog, logging.INFO)
    assert "orders committed" in info
    assert any(line.startswith(f"Task {event_orders_commit.name}[") for line in info)


def test_warnings_of_periodic_tasks_keep_their_level(logs_at, buyer, event, redis_db):
    caplog = logs_at(logging.INFO)
    stale = pending_order(user=buyer, event=event)
    Order.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(minutes=5))

    assert orders_requeue_stale.apply().get() == [event.pk]

    assert lines(caplog, logging.WARNING) == ["stale orders requeued"]


@pytest.mark.parametrize("task, level", [(gate_reconcile, "DEBUG"), (event_orders_commit, "INFO")])
def test_a_received_line_is_demoted_for_periodic_tasks_only(logs_at, task, level):
    caplog = logs_at(logging.DEBUG)
    context = {"id": "1", "name": task.name, "args": "()", "kwargs": "{}", "eta": None}

    # As celery.worker.strategy logs each message a worker takes.
    logging.getLogger("celery.worker.strategy").info(LOG_RECEIVED, context, extra={"data": context})

    assert [record.levelname for record in caplog.records] == [level]


@pytest.mark.live
def test_make_run_shows_commits_at_info_and_no_periodic_task(tmp_path, buyer, make_event):
    idle, busy = make_event(), make_event()
    stale = pending_order(user=buyer, event=busy)  # a lost message: the requeue job's work
    Order.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    every_second = ("GATE_RECONCILE_SECONDS", "ORDER_REQUEUE_SECONDS", "TOP_EVENTS_REFRESH_SECONDS")
    live = LiveStack(
        tmp_path, env={"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"} | dict.fromkeys(every_second, "1")
    )
    celery = [str(BIN / "celery"), "-A", "workers"]

    def every_periodic_task_ran() -> bool:
        return (
            gate_remaining(event_id=idle.pk) is not None  # reconciled
            and TopEvent.objects.exists()  # refreshed
            and not Order.objects.filter(pk=stale.pk, status="pending").exists()  # requeued
        )

    try:  # as the Procfile starts them
        live.start("worker", [*celery, "worker", "--loglevel=INFO", "--concurrency=1"])
        live.start("beat", [*celery, "beat", "--loglevel=INFO", "-s", str(tmp_path / "schedule")])
        live.wait_until(every_periodic_task_ran, "every periodic task to have run")
        time.sleep(1.5)  # their success lines, and another round of each
    finally:
        live.stop_all()

    records = [
        json.loads(line)
        for line in (live.log("worker") + live.log("beat")).splitlines()
        if line.startswith("{")
    ]
    info = [record["message"] for record in records if record["level"] == "INFO"]
    assert "orders committed" in info
    assert [line for line in info if any(name in line for name in PERIODIC_TASKS)] == []
    assert "gate reconciled" not in info and "top events refreshed" not in info


@pytest.mark.parametrize(
    "task, level", [(top_events_refresh_task, "DEBUG"), (event_orders_commit, "INFO")]
)
def test_an_expired_message_is_demoted_for_periodic_tasks_only(logs_at, task, level):
    caplog = logs_at(logging.DEBUG)

    # As celery.worker.request logs a message that expired in the queue.
    logging.getLogger("celery.worker.request").info(
        "Discarding revoked task: %s[%s]", task.name, "1"
    )

    assert [record.levelname for record in caplog.records] == [level]
