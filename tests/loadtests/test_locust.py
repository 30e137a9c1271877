"""The Locust load test: its prepared tokens are login's, and tiny runs end with 0 failures."""
import csv
import time
from pathlib import Path

import jwt
import pytest

from core.models import Event, User
from loadtests import prepare
from loadtests.processes import BIN, ROOT
from tests.invariants import assert_invariants, wait_until_no_pending
from tests.live import LiveStack

LOCUST_SECONDS = 25  # upper bound of each run; a tiny sale ends in a few seconds


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_prepared_tokens_carry_the_claims_login_issues(client, make_user):
    buyer = make_user(role=User.Role.USER)
    admin = make_user(role=User.Role.ADMIN)
    login = client.post("/login/", {"username": buyer.username, "password": "correct-horse-battery"},
                        content_type="application/json").json()["access"]

    tokens = prepare.tokens_mint(names=[buyer.username, admin.username], lifetime_seconds=3600)

    minted, issued = claims(tokens[buyer.username]), claims(login)
    assert set(minted) == set(issued)
    for claim in ("token_type", "user_id", "role", "username"):
        assert minted[claim] == issued[claim]
    assert claims(tokens[admin.username])["role"] == User.Role.ADMIN
    assert abs(minted["exp"] - (time.time() + 3600)) < 60
    assert client.get("/orders/", HTTP_AUTHORIZATION=f"Bearer {tokens[buyer.username]}").status_code == 200


def test_tokens_are_not_minted_for_unknown_users(db):
    with pytest.raises(LookupError):
        prepare.tokens_mint(names=["nobody-by-that-name"], lifetime_seconds=60)


def locust(live: LiveStack, tmp_path: Path, *options: str) -> tuple[int, dict[str, dict], str]:
    """Run the locustfile headless against `live`; return exit status, stats rows by name, output."""
    process = live.start("locust", [
        str(BIN / "locust"), "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless", "--host", live.base_url,
        "--csv", str(tmp_path / "locust"), "--only-summary", "--max-seconds", str(LOCUST_SECONDS), *options,
    ])
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
        live, tmp_path, "--shape", "flash", "-u", "6", "--processes", "2", "--tickets", "60", "--buyers", "12",
        "--flood-seconds", "1", "--samples-dir", str(tmp_path / "samples"), "--run-time", f"{LOCUST_SECONDS}s",
    )

    assert code == 0, output
    assert rows["Aggregated"]["Failure Count"] == "0", output
    assert "/login/" not in rows  # the prepared tokens, no password checks
    assert int(rows["purchase accepted"]["Request Count"]) > 0
    assert int(rows["purchase sold_out"]["Request Count"]) > 0  # the flood after the sale
    assert int(rows["/orders/[id]/"]["Request Count"]) >= int(rows["purchase accepted"]["Request Count"])
    assert len(list((tmp_path / "samples").glob("samples-*.csv"))) == 2  # one per worker process
    assert "load generator (locust processes)" in output
    event = Event.objects.get()
    wait_until_no_pending(event.pk)
    assert assert_invariants(event.pk)["tickets_sold"] == 60


@pytest.mark.live
def test_the_ramp_with_logins_runs_every_user_class_without_failures(live, tmp_path):
    code, rows, output = locust(
        live, tmp_path, "--login", "-u", "6", "-r", "6", "--run-time", "4s", "--tickets", "1000", "--buyers", "6",
    )

    assert code == 0, output
    assert rows["Aggregated"]["Failure Count"] == "0", output
    assert int(rows["/login/"]["Request Count"]) == 6  # each user once
    assert "/ops/queues/" in rows or "/orders/?event" in rows  # the Admin
    assert "/events/[id]/" in rows or "/events/" in rows  # a browser
    assert int(rows["purchase accepted"]["Request Count"]) > 0
