"""A NAIVE purchase design, for the benchmark's baseline only (never part of the product).

The purchase is committed inside the request under `select_for_update` on the event row:
no Redis gate, no queue. `loadtests.bench` serves it from a second gunicorn with
`DJANGO_SETTINGS_MODULE=loadtests.naive.settings`, whose urls are the product's plus
`POST /naive/events/<id>/purchase/`.
"""
