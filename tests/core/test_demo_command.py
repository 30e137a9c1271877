"""`manage.py demo`: the newcomer's path of the README, proven by pasting its output."""

import io
import json
import os
import shutil
import subprocess

import pytest
from django.core.management import CommandError, call_command

from core.gate.store import gate_remaining
from core.models import Event, Order, User
from tests.live import LiveStack

MARKER = "# With `make run` going"


def run_demo(settings, *args) -> str:
    settings.DEBUG = True
    out = io.StringIO()
    call_command("demo", *args, stdout=out)
    return out.getvalue()


def shell_lines(output: str) -> str:
    return output[output.index(MARKER) :]


@pytest.mark.django_db
def test_demo_creates_an_admin_a_buyer_and_an_event_on_sale(settings):
    output = run_demo(settings)

    admin, buyer = User.objects.get(username="demo-admin"), User.objects.get(username="demo-buyer")
    assert admin.role == User.Role.ADMIN and admin.check_password("correct-horse-battery")
    assert buyer.role == User.Role.USER and buyer.check_password("correct-horse-battery")
    event = Event.objects.get(name="Demo concert")
    assert gate_remaining(event_id=event.pk) == event.total_tickets  # the gate is open
    assert f"/events/{event.pk}/purchase/" in output
    assert f"/buyer/?event={event.pk}" in output  # the reference buyer page for its event


@pytest.mark.django_db
def test_demo_run_twice_duplicates_nothing_and_resets_the_passwords(settings):
    run_demo(settings)
    User.objects.filter(username="demo-buyer").update(password="!")  # changed meanwhile

    run_demo(settings)

    assert User.objects.filter(username__startswith="demo-").count() == 2
    assert Event.objects.filter(name="Demo concert").count() == 1
    assert User.objects.get(username="demo-buyer").check_password("correct-horse-battery")


@pytest.mark.django_db
def test_demo_refuses_to_run_with_debug_off(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="DJANGO_DEBUG=1"):
        call_command("demo", stdout=io.StringIO())

    assert not User.objects.filter(username__startswith="demo-").exists()


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_the_printed_lines_buy_tickets_when_pasted_into_a_shell(settings, tmp_path):
    script = shell_lines(run_demo(settings))
    live = LiveStack(tmp_path)
    try:
        live.start_api(workers=1)
        live.start_worker(concurrency=1)
        pasted = subprocess.run(
            ["bash", "-euo", "pipefail"],
            input=script,
            env={**os.environ, "API": live.base_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert pasted.returncode == 0, pasted.stderr
        order = Order.objects.get(user__username="demo-buyer")
        live.wait_until(
            lambda: Order.objects.get(pk=order.pk).status != Order.Status.PENDING, "the commit"
        )
    finally:
        live.stop_all()
    printed_order, ops = (json.loads(line) for line in pasted.stdout.splitlines() if line)
    assert printed_order["id"] == order.pk and printed_order["quantity"] == 2
    assert printed_order["status"] in {"pending", "confirmed"}
    assert Order.objects.get(pk=order.pk).status == Order.Status.CONFIRMED
    assert ops["workers"]
