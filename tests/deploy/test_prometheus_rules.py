"""Alert rules: valid for Prometheus, unit-tested with promtool, and about real metrics."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed: `apt-get install prometheus` (Debian) to run "
    "the alert-rule tests; .ci/run installs it",
)

# Every metric the rules read, and where it comes from.
RULE_METRICS = {
    "orders_oldest_pending_seconds",  # api/metrics.py, read at scrape time
    "gate_disagreements",  # idem
    "queue_depth",  # idem
    "workers_alive",  # idem
    "event_waiting_room_waiting",  # idem, per event with a waiting room
    "event_waiting_room_admitting",  # idem
    "event_waiting_room_serving",  # idem
    "http_request_duration_seconds_count",  # core/metrics.py REQUEST_LATENCY
}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def rules() -> dict[str, dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


@needs_promtool
def test_promtool_accepts_the_rules():
    checked = promtool("check", "rules", "alerts.yml")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


@needs_promtool
def test_every_alert_passes_its_promtool_unit_tests():
    tested = promtool("test", "rules", "alerts_test.yml")

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@needs_promtool
def test_promtool_accepts_the_compose_scrape_config():
    checked = promtool("check", "config", "prometheus.yml")

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_has_a_unit_test_that_expects_it_to_fire():
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }

    assert fired == set(rules())


def test_the_rules_read_metrics_the_api_serves(client, db):
    exprs = " ".join(rule["expr"] for rule in rules().values())
    served = client.get("/metrics").content.decode()

    for metric in RULE_METRICS:
        assert re.search(rf"\b{metric}\b", exprs), metric
        family = metric.removesuffix("_count")  # a histogram's series
        assert re.search(rf"^# TYPE {family} ", served, re.M), metric


def test_thresholds_follow_the_settings_they_name():
    pending, gate = rules()["OrdersPendingTooLong"], rules()["GateDisagreesWithPostgres"]

    assert pending["expr"].endswith(f"> {settings.ORDER_PENDING_RETRY_SECONDS}")
    assert _seconds(gate["for"]) >= 2 * settings.GATE_RECONCILE_SECONDS


def _seconds(duration: str) -> int:
    value, unit = int(duration[:-1]), duration[-1]
    return value * {"s": 1, "m": 60, "h": 3600}[unit]
