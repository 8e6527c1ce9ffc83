"""Installing the peers the bench compares against, when they are missing.

Rules: the bench installs only when it runs as root (and ``--no-install`` was not given);
otherwise a missing peer is skipped with the reason. Everything it installs stays out of
the way of the machine:

- supervisord goes into its own virtualenv, ``bench/.peers/venv``, from PyPI;
- s6 comes from Debian (``apt-get install --no-install-recommends s6``): the package only
  ships binaries and libraries, no maintainer scripts;
- runit's binaries are *extracted* from the Debian package into ``bench/.peers/runit``
  (``apt-get download`` + ``dpkg-deb -x``) rather than installed: installing ``runit``
  runs maintainer scripts that create ``/etc/service``, enable a ``default-syslog``
  service, add system users and hook an LSB snippet into every init script, none of which
  a benchmark has any business doing to a machine. ``runsvdir`` and ``runsv`` need nothing
  but libc.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["InstallError", "Installer"]


class InstallError(RuntimeError):
    """A peer could not be installed; the message says what failed."""


def _run(argv: Sequence[str], *, cwd: Path | None = None) -> str:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise InstallError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise InstallError(f"`{' '.join(argv)}` exited with {done.returncode}: {' | '.join(tail)}")
    return done.stdout


@dataclass
class Installer:
    peers_dir: Path
    allowed: bool
    refusal: str = ""  # why installs are not allowed, for skip reasons
    log: Callable[[str], None] = print
    _apt_updated: bool = field(default=False, init=False)

    @classmethod
    def for_this_process(cls, peers_dir: Path, *, no_install: bool) -> Installer:
        if no_install:
            return cls(peers_dir, allowed=False, refusal="--no-install was given")
        if os.geteuid() != 0:
            return cls(peers_dir, allowed=False, refusal="not running as root")
        return cls(peers_dir, allowed=True)

    def _check(self, what: str) -> None:
        if not self.allowed:
            raise InstallError(
                f"{what} is not installed and the bench will not install it: {self.refusal}"
            )

    def _apt_update(self) -> None:
        if not self._apt_updated:
            self.log("bench: apt-get update")
            _run(["apt-get", "update", "-qq"])
            self._apt_updated = True

    def apt_install(self, packages: Sequence[str]) -> None:
        self._check(" ".join(packages))
        argv = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
        self.log(f"bench: {' '.join(argv)}")
        try:
            _run(argv)
        except InstallError:
            self._apt_update()  # an empty or stale package list is the usual cause
            _run(argv)

    def apt_extract(self, package: str, dest: Path) -> str:
        """Unpack ``package``'s files (no maintainer scripts) under ``dest``; its version."""
        self._check(package)
        debs = self.peers_dir / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        self.log(f"bench: apt-get download {package} && dpkg-deb -x into {dest}")
        try:
            _run(["apt-get", "download", package], cwd=debs)
        except InstallError:
            self._apt_update()
            _run(["apt-get", "download", package], cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise InstallError(f"apt-get download {package} left no .deb in {debs}")
        deb = found[-1]
        version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
        dest.mkdir(parents=True, exist_ok=True)
        _run(["dpkg-deb", "-x", str(deb), str(dest)])
        (dest / "VERSION").write_text(f"{package} {version}\n")
        return version

    def venv_pip(self, venv: Path, requirement: str) -> None:
        self._check(requirement)
        if not (venv / "bin" / "python").exists():
            self.log(f"bench: creating {venv}")
            _run([sys.executable, "-m", "venv", str(venv)])
        self.log(f"bench: pip install {requirement} into {venv}")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", requirement])
