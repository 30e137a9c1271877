"""Data for a load test, made before the swarm: buyers, an Admin, sale events, backlogs.

    python -m loadtests.prepare --buyers 200 --tickets 10000 --out /tmp/loadtest.json

uses DATABASE_URL / REDIS_URL (the same as the server under test) and writes the
credentials and the event id as JSON for `loadtests/locustfile.py`. No management
command: users go in with one bulk upsert and one password hash computed once (so the
run pays for PBKDF2 once, not per user), events through the product's own service, so
their Redis gate is built exactly as in production.
"""
from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta
from pathlib import Path

PASSWORD = "loadtest-password-7f3a"
BUYER_PREFIX = "loadtest-buyer-"
ADMIN_PREFIX = "loadtest-admin-"


def setup_django() -> None:
    """Configure Django from the environment (call once, before any other function)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    if not os.environ.get("DJANGO_SECRET_KEY"):
        # Only rows are written here (tokens come from /login/), so no key is needed: run as
        # `make run` does rather than refuse to start.
        os.environ.setdefault("DJANGO_DEBUG", "1")
    import django

    django.setup()


def users_prepare(*, prefix: str, count: int, role: str = "User", password: str = PASSWORD) -> list[str]:
    """Create (or reset the password and role of) `count` users named prefix00000...; return names."""
    from django.contrib.auth.hashers import make_password

    from core.models import User

    encoded = make_password(password)  # once for every user: they all share it
    names = [f"{prefix}{i:05d}" for i in range(count)]
    User.objects.bulk_create(
        [
            # bulk_create skips User.save(), which derives is_staff from the role.
            User(username=name, password=encoded, role=role, is_staff=role == User.Role.ADMIN)
            for name in names
        ],
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["username"],
        update_fields=["password", "role", "is_staff", "is_active"],
    )
    return names


def user_ids(names: list[str]) -> list[int]:
    from core.models import User

    by_name = dict(User.objects.filter(username__in=names).values_list("username", "id"))
    return [by_name[name] for name in names]


def event_prepare(
    *, total_tickets: int, name: str = "Load test sale", opens_in: float = 0.0,
    max_tickets_per_user: int | None = None,
) -> int:
    """Create an event 30 days ahead whose sale opens `opens_in` seconds from now; return its id.

    Goes through `core.services.events.event_create`, which also opens the Redis gate.
    """
    from django.utils import timezone

    from core.services.events import event_create

    now = timezone.now()
    event = event_create(
        name=name,
        venue="Load test hall",
        date=now + timedelta(days=30),
        total_tickets=total_tickets,
        sale_starts_at=now + timedelta(seconds=opens_in) if opens_in else None,
        max_tickets_per_user=max_tickets_per_user,
    )
    return event.pk


BACKLOG_SQL = """
INSERT INTO core_order (user_id, event_id, quantity, status, reason, created_at, updated_at)
SELECT (%(users)s::bigint[])[1 + (g %% cardinality(%(users)s::bigint[]))], %(event)s,
       1 + (g %% 4), 'pending', '', now(), now()
FROM generate_series(0, %(orders)s - 1) g
"""


def backlog_prepare(*, orders: int, buyer_ids: list[int], name: str = "Backlog") -> int:
    """Create an event with `orders` pending orders (1-4 tickets each, all of which fit).

    The orders go in with one set-based INSERT, as if the API had accepted them while no
    worker ran; the gate is then built from PostgreSQL (total - pending, per-buyer
    holdings), so Redis and PostgreSQL agree before the workers start. Returns the id.
    """
    from django.db import connection
    from django.utils import timezone

    from core.models import Event
    from core.services.gate import gate_ensure

    tickets = sum(1 + (g % 4) for g in range(orders))
    event = Event.objects.create(
        name=name, date=timezone.now() + timedelta(days=30), total_tickets=tickets
    )
    with connection.cursor() as cursor:
        cursor.execute(BACKLOG_SQL, {"users": buyer_ids, "event": event.pk, "orders": orders})
    gate_ensure(event_id=event.pk)
    return event.pk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=200)
    parser.add_argument("--admins", type=int, default=1)
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--max-per-user", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    setup_django()
    buyers = users_prepare(prefix=BUYER_PREFIX, count=args.buyers)
    admins = users_prepare(prefix=ADMIN_PREFIX, count=args.admins, role="Admin")
    event_id = event_prepare(total_tickets=args.tickets, max_tickets_per_user=args.max_per_user)
    args.out.write_text(
        json.dumps(
            {"event_id": event_id, "password": PASSWORD, "buyers": buyers, "admins": admins},
            indent=1,
        )
    )
    print(f"prepared {len(buyers)} buyers, {len(admins)} admin(s), event {event_id} "
          f"with {args.tickets} tickets -> {args.out}")


if __name__ == "__main__":
    main()
