"""The Locust load test: its prepared tokens are login's, and tiny runs end with 0 failures."""

import csv
import json
import re
import time
from pathlib import Path

import jwt
import numpy as np
import pytest

from core.models import Event, User
from loadtests import prepare, run
from loadtests.analysis import Samples, sale_figures
from tests.invariants import assert_invariants, wait_until_no_pending
from tests.live import BIN, ROOT, LiveStack

LOCUST_SECONDS = 25  # upper bound of each run; a tiny sale ends in a few seconds


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_prepared_tokens_carry_the_claims_login_issues(client, make_user):
    buyer = make_user(role=User.Role.USER)
    admin = make_user(role=User.Role.ADMIN)
    login = client.post(
        "/login/",
        {"username": buyer.username, "password": "correct-horse-battery"},
        content_type="application/json",
    ).json()["access"]

    tokens = prepare.tokens_mint(names=[buyer.username, admin.username], lifetime_seconds=3600)

    minted, issued = claims(tokens[buyer.username]), claims(login)
    assert set(minted) == set(issued)
    for claim in ("token_type", "user_id", "role", "username"):
        assert minted[claim] == issued[claim]
    assert claims(tokens[admin.username])["role"] == User.Role.ADMIN
    assert abs(minted["exp"] - (time.time() + 3600)) < 60
    assert (
        client.get("/orders/", HTTP_AUTHORIZATION=f"Bearer {tokens[buyer.username]}").status_code
        == 200
    )


def test_tokens_are_not_minted_for_unknown_users(db):
    with pytest.raises(LookupError):
        prepare.tokens_mint(names=["nobody-by-that-name"], lifetime_seconds=60)


def locust(live: LiveStack, tmp_path: Path, *options: str) -> tuple[int, dict[str, dict], str]:
    """Run the locustfile headless against `live`; return exit status, stats rows by name, output."""
    process = live.start(
        "locust",
        [
            str(BIN / "locust"),
            "-f",
            str(ROOT / "loadtests" / "locustfile.py"),
            "--headless",
            "--host",
            live.base_url,
            "--csv",
            str(tmp_path / "locust"),
            "--only-summary",
            "--max-seconds",
            str(LOCUST_SECONDS),
            *options,
        ],
    )
    code = process.wait(timeout=LOCUST_SECONDS + 60)
    with open(tmp_path / "locust_stats.csv", newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    return code, rows, live.log("locust")


@pytest.fixture
def live(transactional_db, tmp_path):
    stack = LiveStack(tmp_path)
    stack.start_api(workers=2)
    stack.start_worker(concurrency=2)
    yield stack
    stack.stop_all()


@pytest.mark.live
def test_a_flash_sale_with_prepared_tokens_sells_out_without_failures(live, tmp_path):
    code, rows, output = locust(
        live,
        tmp_path,
        "--shape",
        "flash",
        "-u",
        "6",
        "--processes",
        "2",
        "--tickets",
        "60",
        "--buyers",
        "12",
        "--flood-seconds",
        "1",
        "--samples-dir",
        str(tmp_path / "samples"),
        "--run-time",
        f"{LOCUST_SECONDS}s",
    )

    assert code == 0, output
    assert rows["Aggregated"]["Failure Count"] == "0", output
    assert "/login/" not in rows  # the prepared tokens, no password checks
    assert int(rows["purchase accepted"]["Request Count"]) > 0
    assert int(rows["purchase sold_out"]["Request Count"]) > 0  # the flood after the sale
    assert int(rows["/orders/[id]/"]["Request Count"]) >= int(
        rows["purchase accepted"]["Request Count"]
    )
    assert len(list((tmp_path / "samples").glob("samples-*.csv"))) == 2  # one per worker process
    assert "load generator (locust processes)" in output
    event = Event.objects.get()
    wait_until_no_pending(event.pk)
    assert assert_invariants(event.pk)["tickets_sold"] == 60


@pytest.mark.live
def test_the_ramp_with_logins_runs_every_user_class_without_failures(live, tmp_path):
    code, rows, output = locust(
        live,
        tmp_path,
        "--login",
        "-u",
        "6",
        "-r",
        "6",
        "--run-time",
        "8s",
        "--tickets",
        "1000",
        "--buyers",
        "6",
    )

    assert code == 0, output
    assert rows["Aggregated"]["Failure Count"] == "0", output
    assert int(rows["/login/"]["Request Count"]) == 6  # each user once
    # Every class ran (an Admin's /ops/queues/ may still be in flight when the run stops).
    spawned = re.search(r"All users spawned: (\{.*?\})", output)
    assert spawned, output
    counts = json.loads(spawned.group(1))
    assert counts["Admin"] == 1 and counts["Browser"] >= 1 and counts["Buyer"] >= 1, counts
    assert int(rows["purchase accepted"]["Request Count"]) > 0


def samples_of(rows: list[tuple]) -> Samples:
    """Samples as the locustfile writes them: (start, latency s, kind, outcome, qty, order id)."""
    columns = list(zip(*rows, strict=True))
    return Samples(
        t=np.array(columns[0], dtype=float),
        latency=np.array(columns[1], dtype=float),
        kind=np.array(columns[2]),
        outcome=np.array(columns[3]),
        qty=np.array(columns[4], dtype=int),
        order_id=np.array(columns[5], dtype=np.int64),
    )


def test_the_sale_window_runs_from_the_first_purchase_to_the_first_sold_out():
    sale = [(100.0 + i * 0.1, 0.05, "buy", "accepted", 2, i + 1) for i in range(20)]  # 20 in 2 s
    polls = [(101.0 + i * 0.1, 0.02, "poll", "confirmed", 0, i + 1) for i in range(20)]
    flood = [
        (102.0 + i * 0.01, 0.013, "buy", "sold_out", 1, 0) for i in range(300)
    ]  # 3 s of refusals

    figures = sale_figures(samples_of(sale + polls + flood), lambda start, stop: {"api": 1.0})

    assert figures["sale_window_s"] == pytest.approx(2.013)  # to the end of the first sold_out
    # Every purchase started in the window counts, refusals too (as in the benchmark).
    assert figures["purchase_rps_in_sale_window"] == pytest.approx(22 / 2.013, abs=0.1)
    assert figures["orders_won"] == 20
    assert figures["polls_by_outcome"]["confirmed"]["count"] == 20
    assert figures["sold_out"] is True
    # The flood is measured from a second after sold out, when the last polls are done.
    assert figures["flood"]["count"] == 198
    assert figures["flood"]["rps"] == pytest.approx(198 / 1.99, abs=0.5)


def test_a_run_stopped_at_sold_out_reports_no_flood():
    rows = [(100.0, 0.05, "buy", "accepted", 2, 1), (100.5, 0.05, "buy", "sold_out", 1, 0)]

    figures = sale_figures(samples_of(rows), lambda start, stop: {})

    assert figures["sold_out"] is True
    assert "flood" not in figures


def test_the_comparison_puts_each_figure_beside_the_benchmarks():
    figures = {
        "purchase_rps_in_sale_window": 75.5,
        "all_rps_in_sale_window": 150.0,
        "cpu_cores_in_sale_window": {"api": 1.0, "other": 0.5},
    }

    rows = {row["figure"]: row for row in run.bench_comparison(figures)}

    bench = json.loads(run.BENCH_RESULTS.read_text())["summary"]["sale"]
    purchases = rows["purchases/s in the sale window"]
    assert purchases["benchmark"] == bench["purchase_rps_in_sale_window"]
    assert purchases["ratio"] == round(75.5 / bench["purchase_rps_in_sale_window"], 2)
    assert rows["requests/s per API core (sale)"]["locust"] == 150.0
    assert rows["other work on the machine, cores (sale)"]["ratio"] is None
