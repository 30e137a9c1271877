"""A RabbitMQ virtual host of the benchmark's own (127.0.0.1:5672, guest/guest)."""

from __future__ import annotations

import shutil
import subprocess
from contextlib import contextmanager

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"


@contextmanager
def rabbitmq_vhost(name: str):
    """Yield a broker URL on vhost `name`, created now and deleted (with its queues) after.

    Without rabbitmqctl on this machine (RabbitMQ elsewhere): the default vhost.
    """
    ctl = shutil.which("rabbitmqctl")
    made = (
        bool(ctl) and subprocess.run([ctl, "add_vhost", name], capture_output=True).returncode == 0
    )
    if made:
        subprocess.run(
            [ctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
    try:
        yield RABBITMQ + (name if made else "")
    finally:
        if made:
            subprocess.run([ctl, "delete_vhost", name], capture_output=True)
