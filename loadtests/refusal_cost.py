"""How much API CPU one sold-out refusal costs on this host now, with and without an Idempotency-Key.

    python -m loadtests.refusal_cost [--requests 400]

One client sends purchases of a sold-out event one after another to one API worker
(production settings, loadtests.run's database and Redis DB) and reads that worker's CPU
time (psutil). A figure per request that needs no load: compare it with the benchmark's
flood (API cores / requests per second) to tell a slower host from a slower load test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from pathlib import Path

import psutil
import redis
import requests

from loadtests import run
from loadtests.processes import ProcessGroup, free_port


def cost_per_refusal(
    session: requests.Session,
    url: str,
    token: str,
    worker: psutil.Process,
    *,
    count: int,
    with_key: bool,
) -> float:
    """Milliseconds of the worker's CPU per refusal, over `count` sequential purchases."""

    def cpu() -> float:
        times = worker.cpu_times()
        return times.user + times.system

    before = cpu()
    for _ in range(count):
        headers = {"Authorization": f"Bearer {token}"}
        if with_key:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        response = session.post(url, json={"quantity": 1}, headers=headers, timeout=10)
        if response.status_code != 409 or response.json().get("code") != "sold_out":
            raise RuntimeError(
                f"expected sold_out, got {response.status_code} {response.text[:200]}"
            )
    return round((cpu() - before) / count * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="refusals per measurement")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="refusal-cost-"))
    (work / "metrics").mkdir()
    os.environ.update(run.stack_env(work / "metrics"))
    stack = ProcessGroup(dict(os.environ), work)
    try:
        run.database_recreate()
        redis.Redis.from_url(run.REDIS_URL).flushdb()  # this DB number only
        from loadtests import prepare

        prepare.setup_django()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        base_url = stack.start_api_server("api", port=free_port(), workers=1)
        prepared = prepare.credentials_prepare(buyers=1, tickets=1, token_seconds=600)
        token = prepared["tokens"][prepared["buyers"][0]]
        url = f"{base_url}/events/{prepared['event_id']}/purchase/"
        session = requests.Session()
        session.post(
            url, json={"quantity": 1}, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        worker = stack.children("api")[0]
        cost_per_refusal(
            session, url, token, worker, count=args.requests // 4, with_key=False
        )  # warm-up
        for with_key in (False, True, False, True):
            ms = cost_per_refusal(
                session, url, token, worker, count=args.requests, with_key=with_key
            )
            print(
                f"{'with' if with_key else 'without'} Idempotency-Key: {ms} ms of API CPU per refusal",
                flush=True,
            )
    finally:
        stack.stop_all()
        from django.db import connections

        connections.close_all()
        run.database_drop()
        redis.Redis.from_url(run.REDIS_URL).flushdb()


if __name__ == "__main__":
    main()
