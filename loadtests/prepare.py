"""Data for a load test, made before the swarm: buyers, an Admin, sale events, backlogs.

    python -m loadtests.prepare --buyers 200 --tickets 10000 --out /tmp/loadtest.json

uses DATABASE_URL / REDIS_URL (the same as the server under test) and writes the
credentials, the event id and an access token per user (minted as /login/ issues them,
valid for --token-seconds) as JSON for `loadtests/locustfile.py`. Users go in with one
bulk upsert and one password hash computed once; events through the product's own
service, so their Redis gate is built exactly as in production. The server accepts the
tokens only if it signs with the same key: run this with its DJANGO_SECRET_KEY (without
one, this runs as `make run` does: debug on, the development key).
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
    """Configure Django from the environment. Only rows are written here, so without a
    secret key this runs as `make run` does (debug on, the development key)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    if not os.environ.get("DJANGO_SECRET_KEY"):
        os.environ.setdefault("DJANGO_DEBUG", "1")
    import django

    django.setup()


def users_prepare(
    *, prefix: str, count: int, role: str = "User", password: str = PASSWORD
) -> list[str]:
    """Create (or reset the password and role of) `count` users named prefix00000...; return names."""
    from django.contrib.auth.hashers import make_password

    from core.models import User

    encoded = make_password(password)  # once for every user: they all share it
    names = [f"{prefix}{i:05d}" for i in range(count)]
    staff = role == User.Role.ADMIN  # bulk_create skips User.save(), which derives is_staff
    User.objects.bulk_create(
        [User(username=name, password=encoded, role=role, is_staff=staff) for name in names],
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
    *,
    total_tickets: int,
    name: str = "Load test sale",
    opens_in: float = 0.0,
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


def tokens_mint(*, names: list[str], lifetime_seconds: float) -> dict[str, str]:
    """Return an access token per username, with the claims /login/ puts in one.

    The claims come from `api.serializers.role_claims`, as at login; the lifetime is the
    run's rather than JWT_ACCESS_LIFETIME_SECONDS, so no token expires mid-run. No
    outstanding-token rows are written: access tokens are never blacklisted.
    """
    from rest_framework_simplejwt.tokens import AccessToken

    from api.serializers import role_claims
    from core.models import User

    tokens = {}
    for user in User.objects.filter(username__in=names):
        token = AccessToken.for_user(user)
        role_claims(token, user)
        token.set_exp(lifetime=timedelta(seconds=lifetime_seconds))
        tokens[user.username] = str(token)
    missing = set(names) - set(tokens)
    if missing:
        raise LookupError(f"no such users: {sorted(missing)[:5]}")
    return tokens


def credentials_prepare(*, buyers: int, admins: int = 1, tickets: int,
                        max_per_user: int | None = None, token_seconds: float | None = 3600.0) -> dict:  # fmt: skip
    """Users, an event on sale now and (unless token_seconds is None) their tokens, as one dict."""
    buyer_names = users_prepare(prefix=BUYER_PREFIX, count=buyers)
    admin_names = users_prepare(prefix=ADMIN_PREFIX, count=admins, role="Admin")
    event_id = event_prepare(total_tickets=tickets, max_tickets_per_user=max_per_user)
    names = buyer_names + admin_names
    tokens = tokens_mint(names=names, lifetime_seconds=token_seconds) if token_seconds else {}
    return {"event_id": event_id, "tickets": tickets, "password": PASSWORD,
            "buyers": buyer_names, "admins": admin_names, "tokens": tokens}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("--buyers", 200), ("--admins", 1), ("--tickets", 10_000)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--max-per-user", type=int, default=None)
    parser.add_argument(
        "--token-seconds", type=float, default=3600.0,
        help="lifetime of the minted access tokens; 0: mint none (users log in)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    setup_django()
    prepared = credentials_prepare(
        buyers=args.buyers, admins=args.admins, tickets=args.tickets,
        max_per_user=args.max_per_user, token_seconds=args.token_seconds or None,
    )  # fmt: skip
    args.out.write_text(json.dumps(prepared, indent=1))
    print(
        f"prepared {len(prepared['buyers'])} buyers, {len(prepared['admins'])} admin(s), "
        f"{len(prepared['tokens'])} tokens, event {prepared['event_id']} "
        f"with {args.tickets} tickets -> {args.out}"
    )


if __name__ == "__main__":
    main()
