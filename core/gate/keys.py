"""The gate's key names and its Lua scripts (the .lua files beside this module)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from redis.commands.core import Script

from core.redis_client import get_redis

_LUA_DIR = Path(__file__).resolve().parent
_SOURCES = {
    name: (_LUA_DIR / f"{name}.lua").read_text()
    for name in ("reserve", "release", "adjust", "load", "line", "waitlist")
}
# The reserve script checks the waiting room's admission in its own call: the room's
# library (room.lua, local functions only) comes first (core/waiting_room.py).
_SOURCES["reserve"] = (_LUA_DIR / "room.lua").read_text() + "\n" + _SOURCES["reserve"]
_registered: dict[str, Script] = {}


def gate_script(name: str) -> Script:
    """The Lua script `name`.lua, registered on the current client (re-registered when
    the client is replaced, e.g. after a change of REDIS_URL)."""
    client = get_redis()
    script = _registered.get(name)
    if script is None or script.registered_client is not client:
        script = _registered[name] = client.register_script(_SOURCES[name])
    return script


def gate_keys(event_id: int) -> tuple[str, str, str]:
    """The gate hash, the buyers hash, the in-flight zset."""
    base = f"gate:{{ev:{event_id}}}"
    return base, f"{base}:buyers", f"{base}:inflight"


def offers_key(event_id: int) -> str:
    """The event's waitlist offers: user id -> '<tickets>:<entry id>' (waitlist.lua)."""
    return f"gate:{{ev:{event_id}}}:offers"


def room_keys(event_id: int) -> list[str]:
    """The six keys of an event's waiting room, in room_keyset's order (room.lua)."""
    base = f"room:{{ev:{event_id}}}"
    return [base, *(f"{base}:{name}" for name in ("early", "late", "admits", "ranges", "bought"))]


def key_or_absent(key: str, event_id: int) -> str:
    """An optional key a script does not use, named in the event's slot (see reserve.lua)."""
    return key or f"gate:{{ev:{event_id}}}:-"


def idempotency_key(*, event_id: int, user_id: int, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"gate:{{ev:{event_id}}}:idem:{user_id}:{digest}"


def inflight_key(event_id: int) -> str:
    return f"gate:{{ev:{event_id}}}:inflight"


def rate_key(*, event_id: int, user_id: int, window: int) -> str:
    return f"gate:{{ev:{event_id}}}:rate:{user_id}:{window}"


def line_keys(event_id: int) -> tuple[str, str, str]:
    """The gate hash (which holds the line's counters), the served log, the batches."""
    base = f"gate:{{ev:{event_id}}}"
    return base, f"{base}:served", f"{base}:batches"


def drain_flag_key(event_id: int) -> str:
    return f"gate:{{ev:{event_id}}}:drain"


def new_operation_id(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex}"
