"""core/gate/room.lua is a library another script can start with: the gate's reserve script
will call room_admission_of with the room's keys after its own seven."""

import pytest

from core.gate.keys import gate_keys
from core.waiting_room import RoomAnswer, RoomStatus, room_keys, room_script

pytestmark = pytest.mark.django_db

RESERVE_LIKE = """
local room = room_keyset(KEYS, 8, KEYS[1])
local now = tonumber(ARGV[2])
local a = room_admission_of(room, ARGV[1], now)
if a.status == 'admitted' then
  room_bought(room, a.r, a.number, now)
  return {'ok', a.number}
end
if a.status == 'closed' or a.status == 'missing' then return {a.status, 0} end
a.recent = room_recent(room, now)
return {'not_admitted', 0, unpack(room_reply(a))}
"""


def reserve_like(event, user, now):
    gate = gate_keys(event.pk)[0]
    seven = [gate, *(f"{gate}:k{i}" for i in range(2, 8))]
    return room_script(RESERVE_LIKE)(
        keys=[*seven, *room_keys(event.pk)], args=[user.pk, f"{now:.6f}"]
    )


def test_a_script_embedding_the_library_checks_admission_in_its_own_call(
    room_on, make_buyers, join, t0, settings
):
    settings.WAITING_ROOM_MIN_CAPACITY = 1
    event = room_on(rate=None)
    first, second = make_buyers(2)
    join(first, t0 + 1)
    join(second, t0 + 1)

    status, value, *reply = reserve_like(event, second, t0 + 2)
    assert status == "not_admitted"
    answer = RoomAnswer.parse(reply, now=t0 + 2)
    assert answer.status is RoomStatus.WAITING and answer.position == 1

    assert reserve_like(event, first, t0 + 2) == ["ok", 1]  # bought: the next gets in
    assert reserve_like(event, second, t0 + 3) == ["ok", 2]


def test_an_event_without_a_room_is_closed_to_the_library(make_event, make_buyers, redis_db):
    event, buyer = make_event(), make_buyers(1)[0]
    assert reserve_like(event, buyer, 0)[0] == "missing"  # rebuild, then ask again
    redis_db.hset(f"room:{{ev:{event.pk}}}", "on", 0)  # as the rebuild leaves it
    redis_db.hset(gate_keys(event.pk)[0], mapping={"remaining": 5, "starts": 0})
    assert reserve_like(event, buyer, 0)[0] == "closed"
