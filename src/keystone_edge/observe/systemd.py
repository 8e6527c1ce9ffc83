"""systemd's notify protocol (sd_notify(3)), without libsystemd.

``READY=1`` once the agent serves its API and has re-adopted its components,
``STOPPING=1`` when it begins a graceful stop. A no-op when ``NOTIFY_SOCKET`` is unset
(not started by systemd with ``Type=notify``).
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["notify"]

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to systemd; returns whether it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        # Abstract namespace socket: the leading '@' stands for a NUL byte.
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", os.environ["NOTIFY_SOCKET"], exc)
        return False
    return True
