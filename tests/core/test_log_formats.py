"""Logs: JSON lines in production, readable lines with the same fields under debug."""

import json
import os
import subprocess
import sys

import pytest

from core.log_formats import ConsoleFormatter

# What the purchase path logs (core/services/purchases.py), in a fresh process.
LOG_ONE_LINE = (
    "import django, logging; django.setup(); "
    "logging.getLogger('core.services.purchases').info("
    "'order accepted', extra={'order_id': 17, 'event_id': 3})"
)


def log_line(**env) -> str:
    result = subprocess.run(
        [sys.executable, "-c", LOG_ONE_LINE],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "core.settings",
            "LOG_LEVEL": "INFO",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_production_logs_one_json_object_per_line():
    record = json.loads(log_line(DJANGO_DEBUG="0", LOG_FORMAT=""))

    assert record["message"] == "order accepted"
    assert record["level"] == "INFO"
    assert record["logger"] == "core.services.purchases"
    assert (record["order_id"], record["event_id"]) == (17, 3)


def test_debug_logs_a_readable_line_with_the_same_fields():
    line = log_line(DJANGO_DEBUG="1", LOG_FORMAT="")

    assert not line.startswith("{")
    assert "INFO" in line and "core.services.purchases: order accepted" in line
    assert line.endswith("order_id=17 event_id=3")


def test_log_format_can_be_chosen_against_the_debug_default():
    assert log_line(DJANGO_DEBUG="1", LOG_FORMAT="json").startswith("{")


def test_an_unknown_log_format_is_refused():
    with pytest.raises(subprocess.CalledProcessError) as failure:
        log_line(DJANGO_DEBUG="1", LOG_FORMAT="xml")

    assert "LOG_FORMAT must be" in failure.value.stderr


def test_console_lines_quote_values_with_spaces_and_keep_tracebacks():
    import logging

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.makeLogRecord(
            {
                "name": "workers.tasks",
                "levelname": "ERROR",
                "msg": "commit failed",
                "exc_info": sys.exc_info(),
                "error": "two words",
                "order_ids": [1, 2],
            }
        )
    text = ConsoleFormatter().format(record)

    first, *trace = text.splitlines()
    assert first.endswith("workers.tasks: commit failed  error='two words' order_ids=[1, 2]")
    assert trace[-1] == "ValueError: boom"
