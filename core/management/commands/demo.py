"""`manage.py demo`: an Admin, a buyer and an event on sale, and curl lines to paste.

Idempotent: a second run finds the same accounts (their password reset to the one
printed) and the same event, so the printed lines work whatever ran before.
"""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from core.models import Event, User
from core.services.events import event_create

# Public on purpose (printed, and the README's example): refused when debug is off.
PASSWORD = "correct-horse-battery"
ADMIN, BUYER = "demo-admin", "demo-buyer"
EVENT_NAME = "Demo concert"
EVENT_TICKETS = 1000

LOGIN = (
    "curl -s -XPOST $API/login/ -H 'Content-Type: application/json' "
    '-d \'{"username":"%s","password":"%s"}\' '
    "| python3 -c 'import json,sys;print(json.load(sys.stdin)[\"access\"])'"
)


class Command(BaseCommand):
    help = "Create a demo Admin, buyer and event on sale (idempotent); print curl lines."

    def add_arguments(self, parser):
        parser.add_argument(
            "--allow-without-debug",
            action="store_true",
            help="run even with DJANGO_DEBUG off (the demo password is public)",
        )
        parser.add_argument(
            "--api", default="http://127.0.0.1:8000", help="base URL used in the curl lines"
        )

    def handle(self, *args, allow_without_debug=False, api="http://127.0.0.1:8000", **options):
        if not settings.DEBUG and not allow_without_debug:
            raise CommandError(
                "The demo accounts have a public password: run with DJANGO_DEBUG=1 "
                "(as `make demo` does), or pass --allow-without-debug on a throwaway system."
            )
        admin = _account(ADMIN, User.Role.ADMIN)
        buyer = _account(BUYER, User.Role.USER)
        event = _event_on_sale()
        self.stdout.write(_instructions(api, admin, buyer, event))


def _account(username: str, role: str) -> User:
    user = User.objects.filter(username__iexact=username).first() or User(username=username)
    user.role = role
    user.is_active = True
    user.set_password(PASSWORD)
    user.save()
    return user


def _event_on_sale() -> Event:
    """The demo event still ahead with tickets left, or a new one a month from now."""
    event = (
        Event.objects.filter(name=EVENT_NAME, date__gt=timezone.now() + timedelta(days=1))
        .order_by("-date")
        .first()
    )
    if event is not None and event.tickets_sold < event.total_tickets:
        return event
    return event_create(
        name=EVENT_NAME,
        venue="Main hall",
        description="Created by `manage.py demo`.",
        date=timezone.now() + timedelta(days=30),
        total_tickets=EVENT_TICKETS,
    )


def _instructions(api: str, admin: User, buyer: User, event: Event) -> str:
    idempotency = "$(python3 -c 'import uuid;print(uuid.uuid4())')"
    return "\n".join(
        [
            "Demo data ready (run it again any time: nothing is duplicated).",
            f"  Admin  {admin.username} / {PASSWORD}   (also for {api}/admin/)",
            f"  Buyer  {buyer.username} / {PASSWORD}",
            f'  Event  {event.pk} "{event.name}", {event.total_tickets} tickets, on sale now',
            f"  Page   {api}/buyer/?event={event.pk}   (the reference buyer page: log in as"
            f" {buyer.username})",
            "",
            "# With `make run` going in another terminal, paste these lines into a shell:",
            f"API=${{API:-{api}}}",
            "TOKEN=$(" + LOGIN % (buyer.username, PASSWORD) + ")",
            f"ORDER=$(curl -s -XPOST $API/events/{event.pk}/purchase/ "
            "-H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
            f'-H "Idempotency-Key: {idempotency}" '
            "-d '{\"quantity\":2}' "
            "| python3 -c 'import json,sys;print(json.load(sys.stdin)[\"id\"])')",
            "sleep 1  # the workers commit the order; poll until it is final",
            'curl -s $API/orders/$ORDER/ -H "Authorization: Bearer $TOKEN"; echo',
            "ADMIN_TOKEN=$(" + LOGIN % (admin.username, PASSWORD) + ")",
            'curl -s $API/ops/queues/ -H "Authorization: Bearer $ADMIN_TOKEN"; echo',
            "",
        ]
    )
