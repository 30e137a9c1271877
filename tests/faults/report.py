"""Writes docs/reliability.md from the figures the fault suite measured."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "reliability.md"

FAULTS = {
    "worker_sigkill": "A worker's pool processes killed with SIGKILL inside the commit transaction",
    "redis_restart": "Redis restarted empty mid-sale (gate keys and queued messages gone)",
    "pg_terminate": "PostgreSQL connections terminated (`pg_terminate_backend`) repeatedly mid-sale",
    "pg_unreachable": "PostgreSQL unreachable for the API for 2 s mid-sale",
    "broker_unreachable": "The broker unreachable for the API and workers for 4 s as the sale opens",
    "duplicate_delivery": "Every commit task delivered twice or more, two workers committing the same orders",
    "two_beats": "Two beat processes scheduling every periodic task",
    "waitlist_worker_sigkill": "A worker SIGKILLed (then restarted) while committing the order that takes a waitlist offer",
    "waitlist_redis_restart": "Redis restarted empty with waitlist offers out; the gate rebuilt by the next purchase",
    "waitlist_redis_restart_reconcile": "Redis restarted empty with waitlist offers out; the gate rebuilt by reconciliation",
    "waitlist_broker_unreachable": "The broker unreachable when a waitlist-offered buyer buys (503), then back: the offer must be kept",
}

PROMISES = """\
## What the system promises

- **Delivery is at least once, processing exactly once.** An accepted order (202) is a
  row in PostgreSQL before the answer leaves. Commit tasks are acknowledged late and
  requeued when a worker process dies (`task_acks_late`, `task_reject_on_worker_lost`,
  a 60 s visibility timeout); beat re-queues any order still pending after
  `ORDER_PENDING_RETRY_SECONDS` (30 s), which covers messages lost with Redis. Committing
  skips orders that are already final and a ticket is unique per order, so duplicates are
  no-ops.
- **Nothing is oversold.** Stock is decided by PostgreSQL under the event-row lock, and a
  check constraint backs it. The Redis gate can only be wrong towards refusing too much
  (fixed by reconciliation) or letting a few extra requests through to be rejected by
  the worker with a reason.
- **A 503 means nothing was bought**: the reservation is given back and, if the order
  row exists, it is marked rejected; if even that cannot be written, the order is left
  to the requeue job and the client gets its 202. One narrow case remains: when the
  database connection breaks *during* the order insert, nobody can know whether it
  committed. The API answers 503 `database_unavailable` saying so, keeps the
  reservation (the gate errs towards refusing) and lets reconciliation settle it; if the
  insert had landed, the order is confirmed later. A retry with the same
  `Idempotency-Key` returns that order, which is what the key is for. The column
  "without a 202" counts these.
- **Redis and PostgreSQL agree once the queue is drained**: a lost gate is rebuilt from
  PostgreSQL on the next purchase, and beat reconciles every gate (every
  `GATE_RECONCILE_SECONDS`, 15 s) only when no operation is in flight.

## What an operator must do after each fault

| Fault | Operator action |
|---|---|
| Worker killed | Nothing: its messages are redelivered, the pool replaces the process. |
| Redis lost or restarted | Nothing: gates are rebuilt, stale orders re-queued within `ORDER_PENDING_RETRY_SECONDS`, and token revocations rebuilt from PostgreSQL (`User.tokens_valid_after`) by the first request that misses them; {revoked_token} |
| PostgreSQL connections killed or unreachable | Nothing: purchases answer 503 (`database_unavailable`) meanwhile, tasks retry with backoff. |
| Broker unreachable | Nothing: purchases that must queue a commit answer 503 (`queue_unavailable`) at once meanwhile (the publisher retries once, it does not wait); orders accepted just before are drained or re-queued. |
| Duplicate deliveries | Nothing. |
| Two beats | Nothing; still, run one (each periodic job is single-flight through a lock). |
"""


def _revoked_token(row: dict | None) -> str:
    """Say what a revoked token got after the restart, as the fault suite measured it."""
    answers = (row or {}).get("revoked_token_answers")
    if not answers:
        return "the check of a revoked token has not run yet."
    counts = ", ".join(f"{code} {n}" for code, n in sorted(answers.items()))
    return (
        "a token revoked before the restart was sent right after it and again once the "
        f"processes' copies had expired: {counts}."
    )


def write(rows: dict[str, dict]) -> None:
    """Merge `rows` into the stored results and regenerate the document."""
    data_file = DOC.with_suffix(".json")
    stored = json.loads(data_file.read_text()) if data_file.exists() else {}
    stored.update(rows)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    data_file.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
    lines = [
        "# Reliability under faults",
        "",
        "Produced by the fault suite itself (`pytest -m faults`, written by",
        "`tests/faults/report.py`); do not edit the table by hand. Each row is a live flash sale",
        "(the API server with 2 workers, a Celery worker with 2 processes, beat, hundreds of",
        "concurrent purchase requests from 40 buyers) with the fault injected mid-sale, then",
        "drained and checked: nothing oversold; sum of confirmed quantities = `tickets_sold` =",
        "sum of ticket quantities; no accepted order left pending; the gate equal to",
        "PostgreSQL's figure. *Recovered* is the time from the end of the fault until every",
        "order was final and the gate agreed.",
        "",
        "| Fault | Sent | Accepted (202) | Confirmed orders | of which without a 202 | Sold / stock | Oversold | Lost | Recovered | Answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, title in FAULTS.items():
        row = stored.get(key)
        if not row:
            lines.append(f"| {title} | not run | | | | | | | | |")
            continue
        answers = ", ".join(f"{code} {n}" for code, n in sorted(row["answers"].items()))
        lines.append(
            f"| {title} | {row['sent']} | {row['accepted']} | {row['confirmed']} | "
            f"{row.get('confirmed_without_202', 0)} | "
            f"{row['tickets_sold']} / {row['total']} | {row['oversold']} | {row['lost']} | "
            f"{row['recover_seconds']} s | {answers} |"
        )
    lines += ["", f"Last run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.", ""]
    lines.append(PROMISES.replace("{revoked_token}", _revoked_token(stored.get("redis_restart"))))
    DOC.write_text("\n".join(lines))
