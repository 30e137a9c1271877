"""The open-files limit of the benchmark's processes (one socket per load-generator client).

A module of its own, without imports of the harness or of gevent, so that both the
orchestrator (before it starts the servers) and the load generator can call it.
"""

from __future__ import annotations

import resource


def raise_open_files_limit(wanted: int = 16_384) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards `wanted` (at most the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
