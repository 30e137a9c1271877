"""OWASP API2 (broken authentication): every admin change that ends a user's sessions.

Deactivating, demoting, re-passwording or deleting a user through the Django admin
voids the tokens they hold, and keeps them void after Redis loses its data: the record
is in PostgreSQL, written in the admin's own transaction.
"""

import time

import pytest
from django.test import Client
from django.utils import timezone

from core.models import User, UserTombstone
from tests.conftest import token_for

pytestmark = [pytest.mark.security, pytest.mark.django_db]

PASSWORD = "correct-horse-battery"


@pytest.fixture
def staff(make_user) -> Client:
    superuser = make_user(role=User.Role.ADMIN, is_superuser=True)
    client = Client()
    client.force_login(superuser)
    return client


def change_form(user: User, **changes) -> dict:
    joined = timezone.localtime(user.date_joined)
    data = {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": "",
        "is_active": "on",
        "role": user.role,
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def get_with(client: Client, token: str):
    return client.get("/orders/", HTTP_AUTHORIZATION=f"Bearer {token}")


def assert_revoked(token: str) -> None:
    response = get_with(Client(), token)
    assert response.status_code == 401, response.content
    assert response.json()["code"] == "token_revoked"


def login(username: str, password: str = PASSWORD):
    return Client().post(
        "/login/", {"username": username, "password": password}, content_type="application/json"
    )


def refresh(token: str):
    return Client().post("/token/refresh/", {"refresh": token}, content_type="application/json")


@pytest.mark.parametrize(
    "changes",
    [{"is_active": None}, {"role": User.Role.ADMIN}],
    ids=["deactivated", "role-changed"],
)
def test_an_admin_change_revokes_the_users_tokens_even_after_redis_is_flushed(
    staff, buyer, redis_db, changes
):
    tokens = login(buyer.username).json()
    assert get_with(Client(), tokens["access"]).status_code == 200

    response = staff.post(f"/admin/core/user/{buyer.pk}/change/", change_form(buyer, **changes))

    assert response.status_code == 302, response.content[:2000]
    buyer.refresh_from_db()
    assert buyer.tokens_valid_after is not None
    assert_revoked(tokens["access"])
    redis_db.flushdb()
    assert_revoked(tokens["access"])
    refused = refresh(tokens["refresh"])
    assert refused.status_code == 401
    assert refused.json()["code"] in {"no_active_account", "token_revoked"}


def test_an_admin_edit_that_changes_nothing_of_the_kind_revokes_nothing(staff, buyer):
    token = token_for(buyer)

    response = staff.post(
        f"/admin/core/user/{buyer.pk}/change/", change_form(buyer, first_name="Ann")
    )

    assert response.status_code == 302
    buyer.refresh_from_db()
    assert buyer.first_name == "Ann" and buyer.tokens_valid_after is None
    assert get_with(Client(), token).status_code == 200


def test_a_password_set_by_an_admin_ends_every_session_of_the_user(staff, buyer, redis_db):
    tokens = login(buyer.username).json()
    new_password = PASSWORD[::-1]
    form = dict(password1=new_password, password2=new_password, usable_password="true")

    response = staff.post(f"/admin/core/user/{buyer.pk}/password/", form)

    assert response.status_code == 302, response.content[:2000]
    redis_db.flushdb()
    assert_revoked(tokens["access"])
    refused = refresh(tokens["refresh"])
    assert (refused.status_code, refused.json()["code"]) == (401, "token_revoked")
    assert login(buyer.username, new_password).status_code == 200


def test_a_user_deleted_by_an_admin_keeps_their_tokens_void_after_redis_is_flushed(
    staff, buyer, redis_db
):
    tokens = login(buyer.username).json()
    user_id = buyer.pk

    response = staff.post(f"/admin/core/user/{user_id}/delete/", {"post": "yes"})

    assert response.status_code == 302, response.content[:2000]
    assert not User.objects.filter(pk=user_id).exists()
    assert UserTombstone.objects.filter(user_id=user_id).exists()
    redis_db.flushdb()
    assert_revoked(tokens["access"])
    refused = refresh(tokens["refresh"])
    assert (refused.status_code, refused.json()["code"]) == (401, "no_active_account")


def test_users_deleted_in_bulk_by_an_admin_keep_their_tokens_void(staff, make_user, redis_db):
    victims = [make_user() for _ in range(3)]
    tokens = [token_for(user) for user in victims]

    response = staff.post(
        "/admin/core/user/",
        {"action": "delete_selected", "_selected_action": [u.pk for u in victims], "post": "yes"},
    )

    assert response.status_code == 302, response.content[:2000]
    assert not User.objects.filter(pk__in=[u.pk for u in victims]).exists()
    redis_db.flushdb()
    for token in tokens:
        assert_revoked(token)


def test_a_reactivated_user_needs_a_new_login(staff, make_user):
    user = make_user()
    tokens = login(user.username).json()
    staff.post(f"/admin/core/user/{user.pk}/change/", change_form(user, is_active=None))
    user.refresh_from_db()

    staff.post(f"/admin/core/user/{user.pk}/change/", change_form(user))

    user.refresh_from_db()
    assert user.is_active
    assert_revoked(tokens["access"])
    refused = refresh(tokens["refresh"])
    assert (refused.status_code, refused.json()["code"]) == (401, "token_revoked")
    # Tokens issued after the revocation's second are good.
    while timezone.now() < user.tokens_valid_after:
        time.sleep(0.05)
    assert login(user.username).status_code == 200
