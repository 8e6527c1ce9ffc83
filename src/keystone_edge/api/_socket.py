"""The API's Unix socket: created here, never more open than asked.

Rules:

- A leftover socket from an agent that died is removed; a socket someone still listens
  on, or a path that is not a socket at all, is left alone and reported
  (:class:`AgentConfigError` naming ``api.socket``), so a second agent cannot steal the
  first one's API and a typo in the config cannot delete a file.
- The socket inode is ``fchmod``-ed to 0600 *before* ``bind``: Linux gives the new file
  the inode's mode (minus the umask), so it is born private. (Changing the process umask
  instead would race with the agent's worker threads creating files.) Then it gets the
  configured group and mode; only after that does the server ``listen``, so nobody can
  connect while the permissions are being set.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import socket
import stat
from pathlib import Path

from keystone_edge.errors import AgentConfigError

__all__ = ["bind_unix_socket"]


def bind_unix_socket(path: Path, *, mode: int = 0o660, group: str | None = None) -> socket.socket:
    """A Unix stream socket bound at ``path`` with ``mode`` and ``group``, not yet listening.

    Raises :class:`AgentConfigError` when the path is taken by a live agent or by
    something that is not a socket, when the group does not exist, or when the path
    cannot be bound.
    """
    gid = -1
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise AgentConfigError(f"no group named {group!r}", key="api.socket_group") from None
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), 0o600)
        sock.bind(str(path))
        os.chown(path, -1, gid)
        path.chmod(mode)
    except OSError as exc:
        sock.close()
        raise AgentConfigError(
            f"cannot create the API socket at {path}: {exc.strerror or exc}", key="api.socket"
        ) from exc
    return sock


def _remove_stale_socket(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise AgentConfigError(
            f"{path} exists and is not a socket; remove it or choose another api.socket",
            key="api.socket",
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise AgentConfigError(
                f"cannot check the existing socket {path}: {exc.strerror}", key="api.socket"
            ) from exc
    else:
        raise AgentConfigError(
            f"another process is already serving on {path}; is another agent running?",
            key="api.socket",
        )
    finally:
        probe.close()
    # Nobody listens: a leftover of an agent that did not exit cleanly.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
