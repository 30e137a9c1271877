"""The gate: a fast, atomic, rebuildable copy in Redis of each event's availability.

PostgreSQL is the authority. The gate answers "may this buyer have these tickets?" in
one Lua call so that refusals never reach the database or the broker's queue, and gives
each accept its number in the event's buyers' line. Each event's keys share the hash tag
``{ev:<id>}``, so every script touches one Redis Cluster slot.

Modules, in the order a purchase meets them:
  reserve.py  the accept: the request, the Lua reply parsed into a typed `GateReply`,
              the place in line, release of a reservation
  line.py     the buyers' line: positions and waits for polls, commit batches' counts
  store.py    writes from PostgreSQL (build, reconcile) and event changes
  keys.py     key names and the Lua scripts (reserve.lua, release.lua, adjust.lua,
              load.lua, line.lua: beside it; reserve.lua is registered after the
              waiting room's library, room.lua, and checks the buyer's admission)
The waiting room's scripts (room.lua, room_*.lua) live here too, one place for the Lua
of an event's slot; their Python side is core/waiting_room.py.

Per event:
  ``gate:{ev:N}``           hash: remaining, starts, ends, limit (0 = none), seq, and the
                            buyers' line: line (its name), opened, arrived, served, trusted
  ``gate:{ev:N}:buyers``    hash: user id -> tickets held (reserved or sold)
  ``gate:{ev:N}:inflight``  zset: operations between their Redis and PostgreSQL halves
  ``gate:{ev:N}:idem:...``  idempotency record of one purchase request
  ``gate:{ev:N}:rate:U:W``  purchase requests of buyer U in rate window W (the throttle)
  ``gate:{ev:N}:served``    list: the last commit batches, "<epoch s>:<orders>:<seconds>"
  ``gate:{ev:N}:batches``   hash: commit batch id -> when it began, while it runs
  ``gate:{ev:N}:drain``     flag: a drain of the event is queued or running
                            (core/services/drain.py)
  ``room:{ev:N}...``        the event's waiting room ({on = 0} without one; room.lua)
"""
