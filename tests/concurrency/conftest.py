import pytest

from core.models import User
from tests.live import LiveStack, token

# Beat in live tests reconciles and requeues every second instead of every 10-30 s.
FAST_BEAT = {
    "GATE_RECONCILE_SECONDS": "1",
    "ORDER_REQUEUE_SECONDS": "1",
    "ORDER_PENDING_RETRY_SECONDS": "2",
}


@pytest.fixture
def make_stack(transactional_db, tmp_path):
    """Start a live API server (2 workers) and a Celery worker (2 processes), maybe beat."""
    stacks = []

    def make(*, beat: bool = False, env: dict | None = None) -> LiveStack:
        live = LiveStack(tmp_path, env={**FAST_BEAT, **(env or {})})
        stacks.append(live)
        live.start_api(workers=2)
        live.start_worker(concurrency=2)
        if beat:
            live.start_beat()
        return live

    yield make
    for live in stacks:
        live.stop_all()


@pytest.fixture
def stack(make_stack) -> LiveStack:
    return make_stack()


@pytest.fixture
def stack_with_beat(make_stack) -> LiveStack:
    return make_stack(beat=True)


@pytest.fixture
def buyers(make_user):
    return [make_user(role=User.Role.USER) for _ in range(40)]


def login_all(live: LiveStack, users) -> list[str]:
    return [token(live.base_url, u.username, "correct-horse-battery") for u in users]


@pytest.fixture
def buyers_tokens(buyers, stack):
    """Forty buyers, each logged in once through the live API."""
    return login_all(stack, buyers)
