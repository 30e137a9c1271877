"""Schemathesis against the OpenAPI schema the app serves, for every operation and role.

The schema is loaded in-process from the WSGI application (`/schema/`). Every operation
in it is called as an anonymous caller, with a forged token, as a User and as an Admin,
with cases from Schemathesis's coverage phase (boundaries and type mutations, all of
them, deterministic) and from a bounded, derandomized fuzzing phase (valid and invalid
data, 25 per operation and role). Each answer must be no server error, a documented
status code with a documented content type, and a body that conforms to the schema.

Nothing in the schema is excluded. What the schema does not list, and so is not fuzzed:
`/schema/` and `/docs/` themselves (`SERVE_INCLUDE_SCHEMA` is off; they take no input),
`/admin/` (Django's HTML admin, behind its own session login and CSRF) and `/metrics`
(Prometheus text, not JSON; its token check is in tests/api/test_monitoring.py).
"""

import jwt
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.wsgi import application
from tests.conftest import token_for
from tests.factories import confirmed_order

pytestmark = [pytest.mark.security, pytest.mark.django_db]

CONFIG = schemathesis.Config.from_dict(
    {
        # Stateful testing follows links the schema does not declare; the three phases
        # below call each operation on its own.
        "phases": {"stateful": {"enabled": False}},
        "generation": {"mode": "all", "deterministic": True},
    }
)
schema = schemathesis.openapi.from_wsgi("/schema/?format=json", application, config=CONFIG)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# "bad token": a well-formed token signed with another key (every operation must still
# answer as documented, e.g. 401 where a token is read at all).
ROLES = ["anonymous", "bad token", "User", "Admin"]


@pytest.fixture(params=ROLES)
def role(request) -> str:
    return request.param


@pytest.fixture
def in_process_requests():
    """Serve requests inside the test's transaction, as Django's test client does.

    Django closes "old" connections when a request starts and finishes; inside a test's
    transaction that would drop the connection holding the test's data.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(role, make_user, make_event):
    """The caller's credentials and objects that exist: an event on sale, an order on it."""
    buyer, admin = make_user(role="User"), make_user(role="Admin")
    event = make_event(total_tickets=1000, max_tickets_per_user=50)
    order = confirmed_order(user=buyer, event=event, quantity=2)
    tokens = {
        "anonymous": None,
        "bad token": jwt.encode(
            {"user_id": str(buyer.pk), "role": "Admin", "token_type": "access"}, "x" * 32
        ),
        "User": token_for(buyer),
        "Admin": token_for(admin),
    }
    headers = {"Authorization": f"Bearer {tokens[role]}"} if tokens[role] else {}
    return {"headers": headers, "ids": {"event_id": event.pk, "order_id": order.pk}}


def aim_at_existing_objects(case, ids: dict[str, int]) -> None:
    """Point about half of the cases at objects that exist, so handlers run past the lookup.

    Generated ids almost never exist; an even generated integer is swapped for a real id
    (deterministic, so a failure replays). Strings and other mutations are kept as they are.
    """
    for name, value in (case.path_parameters or {}).items():
        if (
            name in ids
            and isinstance(value, int)
            and not isinstance(value, bool)
            and value % 2 == 0
        ):
            case.path_parameters[name] = ids[name]


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    # No shrinking: a failing case is reported as generated, which keeps a red run short.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_as_documented_and_never_with_a_server_error(
    case, world, in_process_requests
):
    aim_at_existing_objects(case, world["ids"])

    case.call_and_validate(headers=world["headers"], checks=CHECKS)
