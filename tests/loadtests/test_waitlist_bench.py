"""The waitlist benchmark (loadtests/waitlist_bench.py): its order rule computed apart from the
product, and a tiny run end to end whose returned tickets all reach the waitlisted buyers."""

import json
import os
import subprocess
import sys

import pytest

from loadtests.waitlist_figures import offers_expected
from tests.live import ROOT


def test_a_return_goes_to_the_first_waiting_entry_whose_quantity_fits():
    # Join order: 2 tickets, 1, 3, 1. A return of 1 passes the head (2) for the 1 behind it;
    # the next return of 2 goes to the head, which kept its place.
    rounds, left = offers_expected([2, 1, 3, 1], [1, 2])

    assert rounds == [[1], [0]]
    assert left == 0


def test_a_return_is_shared_down_the_line_and_what_fits_nobody_waits_for_the_next():
    # 3 tickets: the head (2) takes two, the next entry that fits (1, fourth) takes the
    # third. Then 1 ticket with only 3s waiting stays in the pool and joins the next return.
    rounds, left = offers_expected([2, 3, 3, 1], [3, 1, 2])

    assert rounds == [[0, 3], [], [1]]
    assert left == 0


def test_tickets_no_entry_can_take_are_left_over():
    rounds, left = offers_expected([4], [1, 2])

    assert rounds == [[], []]
    assert left == 3


@pytest.mark.live
def test_a_tiny_run_offers_every_return_in_order_and_the_flood_takes_none(redis_db, tmp_path):
    number = redis_db.connection_pool.connection_kwargs["db"]
    database = os.environ.get("TEST_DATABASE_NAME", "test_ticketing") + "_wlbench"
    size = ["--waitlisted", "10", "--holders", "8", "--returns", "3", "--flood-seconds", "3"]
    size += ["--pairs", "1", "--concurrency", "4", "--drain-timeout", "30"]
    command = [sys.executable, "-m", "loadtests.waitlist_bench", *size, "--database", database]
    command += ["--redis-db", str(number), "--out", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}

    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "waitlist.json").read_text())
    (pair,) = results["runs"]
    waitlist, plain = pair["waitlist"], pair["plain"]
    wl = waitlist["waitlisted"]
    assert wl["offers"] > 0 and wl["offers_out_of_order"] == 0
    assert wl["tickets_reached"] + wl["tickets_left_expected"] == waitlist["tickets_returned"]
    assert wl["offers_expired"] == 0
    assert waitlist["flood_took_tickets"] == 0
    assert plain["flood_took_tickets"] > 0  # without a waitlist the fastest refresher wins
    assert waitlist["flood"]["by_outcome"]["sold_out_waitlist_open"]["count"] > 0
    assert waitlist["invariants"]["ok"] and plain["invariants"]["ok"]
    verdicts = {goal["key"]: goal["verdict"] for goal in results["goals"]}
    assert verdicts["waitlist_order"] == verdicts["waitlist_flood_took"] == "PASS"
    assert verdicts["waitlist_invariants"] == "PASS"
    assert "## Goals" in (tmp_path / "waitlist.md").read_text()
