"""How much API CPU one sold-out refusal costs on this host now, with and without an Idempotency-Key.

    python -m loadtests.refusal_cost [--requests 400]

One client sends purchases of a sold-out event one after another to one API worker
(production settings, loadtests.run's database and Redis DB) and reads that worker's CPU
time (psutil). A figure per request that needs no load: compare it with the benchmark's
flood (API cores / requests per second) to tell a slower host from a slower load test.
"""

from __future__ import annotations

import argparse
import uuid

import psutil
import requests

from loadtests import run
from loadtests.stack import stack_prepare, stack_teardown


def cost_per_refusal(session, url: str, token: str, worker: psutil.Process, *, count: int,
                     with_key: bool) -> float:  # fmt: skip
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
    stack = stack_prepare(run.DATABASE, run.REDIS_DB, fast_hashers=False)
    try:
        from loadtests import prepare

        base_url = stack.start_api(workers=1)
        prepared = prepare.credentials_prepare(buyers=1, tickets=1, token_seconds=600)
        token = prepared["tokens"][prepared["buyers"][0]]
        url = f"{base_url}/events/{prepared['event_id']}/purchase/"
        session = requests.Session()
        auth = {"Authorization": f"Bearer {token}"}
        session.post(url, json={"quantity": 1}, headers=auth, timeout=10)  # the one ticket
        worker = stack.children("api")[0]
        cost_per_refusal(session, url, token, worker, count=args.requests // 4, with_key=False)
        for with_key in (False, True, False, True):
            ms = cost_per_refusal(
                session, url, token, worker, count=args.requests, with_key=with_key
            )
            key = "with" if with_key else "without"
            print(f"{key} Idempotency-Key: {ms} ms of API CPU per refusal", flush=True)
    finally:
        stack_teardown(stack, run.DATABASE)


if __name__ == "__main__":
    main()
