"""Native processes: spawn in their own process group, watch via pidfd, stop without orphans.

Rules:

- Processes are spawned with the :mod:`subprocess` options only (``process_group=0``,
  ``user``, ``group``, ``extra_groups``), never ``preexec_fn``, which is unsafe in a
  threaded process. stdin is ``/dev/null``; stdout and stderr go through pipes straight
  into the component's :class:`~keystone_edge.runners.logfile.RotatingLog` from the event
  loop's callbacks: no task and no thread per child.
- Exits are observed through the child watcher. On Python 3.11 the agent calls
  :func:`install_child_watcher` once, so that a pidfd (not a thread per child, not
  polling) tells the loop that a child exited. From 3.12 on asyncio does that itself.
- The process group *is* the workload. When the leader exits, for whatever reason, every
  process left in its group is SIGKILLed at once, so nothing is orphaned and a restart
  never finds the old children still holding a port. (Processes that leave the group with
  ``setsid`` escape this; cgroups will close that gap.)
- Stop = SIGTERM to the group, up to ``grace`` seconds for the leader to exit, then
  SIGKILL to the group; each step is logged on ``keystone_edge.runners.process``.
- A script that outlives its timeout has its whole group SIGKILLed and is reported as
  "timed out after 5m". A cancelled script is killed too, never left behind.
- ``run_as`` is ``user`` or ``user:group``; the supplementary groups are the user's
  (``os.getgrouplist``) and HOME, USER and LOGNAME describe that user. An agent that is
  not root can only run components as itself, and says so.
- A spec with an :class:`~keystone_edge.isolation.IsolationPolicy` runs through the
  isolation launcher (unless :func:`~keystone_edge.isolation.needs_launcher` says it would
  change nothing): the launcher joins the cgroups, applies the limits, namespaces,
  identity, capabilities and seccomp filter, then execs the workload. The launcher
  switches identity itself, so it is spawned without ``user``/``group``. The runner reads
  its status pipe until EOF (the exec): an error there is a failed start
  (:class:`~keystone_edge.errors.ComponentError` with the launcher's message, exit code
  125, 126 or 127), warnings go to :attr:`Process.warnings`.
- After an isolated process exits, the exit is reported only once the OOM and pids
  counters are read and the cgroup is removed (in a worker thread), so a restart never
  meets the previous run's cgroup, and an OOM kill reads "killed by the OOM killer
  (memory_limit 64Mi)" instead of "killed by signal 9".
"""

from __future__ import annotations

import asyncio
import functools
import grp
import logging
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from keystone_edge.errors import ComponentError
from keystone_edge.runners.base import ExitStatus, LaunchSpec, ScriptResult, ScriptSpec
from keystone_edge.units import Duration

if TYPE_CHECKING:
    from keystone_edge.isolation import IsolationPolicy, LaunchStatus

__all__ = [
    "Identity",
    "Process",
    "ProcessRunner",
    "install_child_watcher",
    "resolve_run_as",
]

log = logging.getLogger(__name__)

# After the leader exits (and its group is killed) the pipes normally hit EOF within
# microseconds; this bounds the wait when a process escaped the group and still holds them.
_DRAIN_GRACE = 1.0
# The launcher reaches the workload's exec in ~10 ms; one that has not after this long is
# stuck (a cgroup write that blocks, a hung NFS work dir) and is killed.
_LAUNCH_TIMEOUT = 30.0


def install_child_watcher() -> bool:
    """Make asyncio observe child exits through pidfds; True when pidfds are in use.

    Call it once at start-up, from the main thread, before or inside the event loop. On
    Python 3.11 the default watcher spends a thread per child; ``PidfdChildWatcher`` adds
    the child's pidfd to the loop's selector instead. Python 3.12+ chooses pidfds by
    itself when the kernel has them (Linux 5.3+). Idempotent.
    """
    if not _pidfd_available():
        return False
    if sys.version_info >= (3, 12):
        return True
    current = asyncio.get_child_watcher()
    if not isinstance(current, asyncio.PidfdChildWatcher):
        current = asyncio.PidfdChildWatcher()
        asyncio.set_child_watcher(current)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        pass  # asyncio.run() attaches the watcher to its loop (main thread)
    else:
        current.attach_loop(loop)
    return True


def _pidfd_available() -> bool:
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False  # old kernel, or a sandbox that forbids it
    return True


@dataclass(frozen=True)
class Identity:
    """Who a component runs as, resolved from ``run_as``."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def resolve_run_as(
    user: str | None,
    group: str | None = None,
    *,
    euid: int | None = None,
    egid: int | None = None,
) -> Identity | None:
    """Resolve ``run_as`` names; ``None`` means "keep the agent's identity".

    Raises :class:`ComponentError` for an unknown user or group, and when an agent that is
    not root is asked to become someone else. ``euid``/``egid`` default to the agent's.
    """
    if not user:
        return None
    run_as = f"{user}:{group}" if group else user
    euid = os.geteuid() if euid is None else euid
    egid = os.getegid() if egid is None else egid
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ComponentError(f"run_as {run_as}: no such user {user!r}") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ComponentError(f"run_as {run_as}: no such group {group!r}") from None
    if euid != 0:
        if entry.pw_uid == euid and (not group or gid == egid):
            return None  # already that user: nothing to switch
        raise ComponentError(
            f"run_as {run_as} requires the agent to run as root; the agent runs as uid {euid}"
        )
    groups = tuple(os.getgrouplist(entry.pw_name, gid))
    return Identity(entry.pw_name, entry.pw_uid, gid, groups, entry.pw_dir)


class _Sink(Protocol):
    def feed(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class _Tail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()

    def feed(self, data: bytes) -> None:
        self._data += data
        if len(self._data) > 2 * self._limit:
            del self._data[: -self._limit]

    def close(self) -> None:
        pass

    def text(self) -> str:
        return bytes(self._data[-self._limit :]).decode("utf-8", "replace")


class _ChildProtocol(asyncio.SubprocessProtocol):
    """Loop callbacks for one child: output into sinks, exit into a future.

    With an isolation ``policy`` the exit is only reported once :meth:`launched` has
    delivered the launcher's status and the cleanup (OOM counter, cgroup removal) has run
    in a worker thread: whoever waits for the exit may start the next run at once.
    """

    def __init__(
        self, name: str, sinks: dict[int, list[_Sink]], policy: IsolationPolicy | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._name = name
        self._sinks = sinks
        self._policy = policy
        self.transport: asyncio.SubprocessTransport | None = None
        self.exited: asyncio.Future[ExitStatus] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()  # exited and pipes closed
        self._status: asyncio.Future[LaunchStatus] | None = (
            loop.create_future() if policy is not None else None
        )
        self._close_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        for sink in self._sinks.get(fd, ()):
            sink.feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:  # noqa: ARG002
        for sink in self._sinks.get(fd, ()):
            sink.close()

    def launched(self, status: LaunchStatus) -> None:
        """The launcher's status pipe reached EOF (call exactly once, isolated runs only)."""
        assert self._status is not None
        self._status.set_result(status)

    def process_exited(self) -> None:
        assert self.transport is not None
        pid = self.transport.get_pid()
        returncode = self.transport.get_returncode()
        assert returncode is not None
        # The leader is gone: whatever it left in its group goes with it, before anyone
        # waiting on the exit (a restart, a stop) gets to run. The group id cannot have
        # been reused: Linux keeps a pid allocated while it is still some group's id.
        if _signal_group(pid, signal.SIGKILL):
            log.info("%s: killed the processes PID %d left in its group", self._name, pid)
        if self._status is None:
            self.exited.set_result(ExitStatus.from_returncode(returncode))
        else:
            self._status.add_done_callback(functools.partial(self._clean_up, returncode))
        if not self.finished.done():
            self._close_timer = self._loop.call_later(_DRAIN_GRACE, self._finish)

    def _clean_up(self, returncode: int, status: asyncio.Future[LaunchStatus]) -> None:
        assert self._policy is not None
        policy, name = self._policy, self._name
        future = self._loop.run_in_executor(
            None, _isolated_exit, name, policy, returncode, status.result()
        )
        future.add_done_callback(functools.partial(self._cleaned, returncode))

    def _cleaned(self, returncode: int, future: asyncio.Future[ExitStatus]) -> None:
        try:
            result = future.result()
        except Exception:  # the exit itself must still be reported
            log.exception("%s: cleaning up after the exit failed", self._name)
            result = ExitStatus.from_returncode(returncode)
        self.exited.set_result(result)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
        self._finish()

    def _finish(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self.transport is not None:
            self.transport.close()  # frees the pipes; the process is already gone
        for sinks in self._sinks.values():
            for sink in sinks:
                sink.close()
        if not self.finished.done():
            self.finished.set_result(None)


def _isolated_exit(
    name: str, policy: IsolationPolicy, returncode: int, status: LaunchStatus
) -> ExitStatus:
    """What an isolated run's exit means; removes its cgroups (blocking: a worker thread)."""
    from keystone_edge.isolation import finish

    report = finish(policy, returncode, status)
    if report.leftover_pids:
        log.warning(
            "%s: processes %s survived the removal of its cgroup",
            name,
            ", ".join(map(str, report.leftover_pids)),
        )
    plain = ExitStatus.from_returncode(returncode)
    detail: str | None = None
    if report.reason in ("oom_killed", "isolation_failed", "exec_failed"):
        detail = report.message
    elif report.pids_limit_hits and not plain.ok and policy.cgroup is not None:
        limit = policy.cgroup.limits.pids_max
        times = "once" if report.pids_limit_hits == 1 else f"{report.pids_limit_hits} times"
        detail = f"{plain.describe()} (forks refused {times}: pids_limit {limit} reached)"
    return ExitStatus(
        code=plain.code,
        signal=plain.signal,
        detail=detail,
        oom_killed=report.reason == "oom_killed",
        pids_limit_hits=report.pids_limit_hits,
    )


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not allowed to signal process group %d", pgid)
        return False
    return True


class Process:
    """A running workload: the leader of its own process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        protocol: _ChildProtocol,
        *,
        warnings: tuple[str, ...] = (),
    ) -> None:
        assert protocol.transport is not None
        self.name = name
        self.argv = tuple(argv)
        self._protocol = protocol
        self._pid = protocol.transport.get_pid()
        self._warnings = warnings

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        exited = self._protocol.exited
        return exited.result().returncode if exited.done() else None

    @property
    def warnings(self) -> tuple[str, ...]:
        return self._warnings

    async def wait(self) -> ExitStatus:
        exited = self._protocol.exited
        if not exited.done():
            # Shielded: a waiter that times out must not cancel the exit for everyone else.
            await asyncio.shield(exited)
        return exited.result()

    async def stop(self, grace: float) -> ExitStatus:
        if self.returncode is None:
            log.info("%s: sending SIGTERM to process group %d", self.name, self._pid)
            _signal_group(self._pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    return await self.wait()
            except TimeoutError:
                log.warning(
                    "%s: process group %d still running %s after SIGTERM; sending SIGKILL",
                    self.name,
                    self._pid,
                    Duration(grace).text,
                )
                _signal_group(self._pid, signal.SIGKILL)
        return await self.wait()

    def kill(self) -> None:
        if self.returncode is None:
            _signal_group(self._pid, signal.SIGKILL)

    async def drained(self) -> None:
        """Wait until the output pipes are closed (bounded by a short grace)."""
        await asyncio.shield(self._protocol.finished)

    def __repr__(self) -> str:
        exited = self._protocol.exited
        if not exited.done():
            return f"<Process {self.name!r}: running with PID {self._pid}>"
        return f"<Process {self.name!r}: PID {self._pid} {exited.result().describe()}>"


class ProcessRunner:
    """The default :class:`~keystone_edge.runners.base.Runner`: native processes."""

    def __init__(self, *, output_tail_bytes: int = 4096, euid: int | None = None) -> None:
        self._tail_bytes = output_tail_bytes
        self._euid = euid  # for tests: pretend the agent runs as this uid

    def __repr__(self) -> str:
        return "ProcessRunner()"

    async def run_script(self, spec: ScriptSpec) -> ScriptResult:
        identity = self._identity(spec.name, spec.user, spec.group, spec.isolation)
        tail = _Tail(self._tail_bytes)
        sinks: list[_Sink] = [tail]
        if spec.log is not None:
            sinks.append(spec.log.stream(spec.label))
        started = time.monotonic()
        process = await self._spawn(
            spec.name,
            ["/bin/sh", "-c", spec.script],
            cwd=spec.cwd,
            env=dict(spec.env),
            identity=identity,
            policy=spec.isolation,
            sinks={1: sinks},
            merge_stderr=True,
        )
        timed_out = False
        try:
            async with asyncio.timeout(spec.timeout):
                status = await process.wait()
        except TimeoutError:
            timed_out = True
            log.warning(
                "%s: %s timed out after %s; killing its process group %d",
                spec.name,
                spec.label if spec.label.endswith("script") else f"{spec.label} script",
                Duration(spec.timeout).text,
                process.pid,
            )
            process.kill()
            status = await process.wait()
        except BaseException:
            # Cancelled: never leave a script running behind our back. SIGKILL takes effect
            # at once, so reaping it before the cancellation goes on costs nothing.
            process.kill()
            await process.wait()
            raise
        await process.drained()
        return ScriptResult(
            status=status,
            output=tail.text(),
            timed_out=timed_out,
            timeout=spec.timeout,
            duration=time.monotonic() - started,
        )

    async def start(self, spec: LaunchSpec) -> Process:
        identity = self._identity(spec.name, spec.user, spec.group, spec.isolation)
        sinks: dict[int, list[_Sink]] = {}
        if spec.log is not None:
            sinks = {1: [spec.log.stream("out")], 2: [spec.log.stream("err")]}
        return await self._spawn(
            spec.name,
            spec.argv,
            cwd=spec.cwd,
            env=dict(spec.env),
            identity=identity,
            policy=spec.isolation,
            sinks=sinks,
            merge_stderr=False,
        )

    def _identity(
        self, name: str, user: str | None, group: str | None, policy: IsolationPolicy | None
    ) -> Identity | None:
        if policy is None:
            return resolve_run_as(user, group, euid=self._euid)
        if user is not None or group is not None:
            raise ComponentError(
                f"{name}: run_as is decided by the isolation policy; the spec must not "
                f"also name a user or group (got {user}:{group})",
                component=name,
            )
        return None

    async def _spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        identity: Identity | None,
        policy: IsolationPolicy | None,
        sinks: dict[int, list[_Sink]],
        merge_stderr: bool,
    ) -> Process:
        if not argv:
            raise ComponentError(f"{name}: nothing to run (empty command)", component=name)
        # Controls the agent already knew it could not enforce (best effort).
        warnings = tuple(f"{w.control}: {w.message}" for w in policy.warnings) if policy else ()
        if policy is not None:
            from keystone_edge.isolation import needs_launcher

            if not needs_launcher(policy):
                policy = None  # nothing to enforce: the plain, fast path
        options: dict[str, Any] = {}
        command = list(argv)
        status_r = status_w = -1
        if policy is not None:
            from keystone_edge.isolation import wrap_argv

            status_r, status_w = os.pipe2(os.O_CLOEXEC)
            command = wrap_argv(policy, argv, status_fd=status_w)
            options["pass_fds"] = (status_w,)
            who = policy.identity
            if who is not None:
                env.update(HOME=who.home, USER=who.user, LOGNAME=who.user)
        elif identity is not None:
            options.update(
                user=identity.uid, group=identity.gid, extra_groups=list(identity.groups)
            )
            env.update(HOME=identity.home, USER=identity.user, LOGNAME=identity.user)
        stdout = subprocess.PIPE if sinks.get(1) else subprocess.DEVNULL
        if merge_stderr:
            stderr = subprocess.STDOUT if sinks.get(1) else subprocess.DEVNULL
        else:
            stderr = subprocess.PIPE if sinks.get(2) else subprocess.DEVNULL
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.subprocess_exec(
                lambda: _ChildProtocol(name, sinks, policy),
                *command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                env=env,
                process_group=0,
                **options,
            )
        except (OSError, ValueError) as exc:
            if status_r >= 0:
                os.close(status_r)
            if isinstance(exc, ValueError):  # e.g. a NUL byte in an argument or the environment
                message = f"{name}: cannot start {argv[0]}: {exc}"
            else:
                where = f": {exc.filename}" if exc.filename else ""
                message = f"{name}: cannot start {argv[0]}: {exc.strerror or exc}{where}"
            raise ComponentError(message, component=name) from exc
        finally:
            if status_w >= 0:
                os.close(status_w)  # the launcher holds the only write end now
        if policy is None:
            process = Process(name, argv, protocol, warnings=warnings)
        else:
            primed = None
            if policy.cgroup is not None:
                from keystone_edge.isolation.cgroups import prime_migration

                # Overlaps the kernel's wait before a cgroup migration with the launcher's
                # interpreter start-up (see prime_migration): ~10 ms less per start.
                primed = loop.run_in_executor(None, prime_migration)
            try:
                process = await self._launched(name, argv, protocol, status_r, warnings)
            finally:
                if primed is not None:
                    await primed
        log.debug("%s: started %s", name, process)
        return process

    async def _launched(
        self,
        name: str,
        argv: Sequence[str],
        protocol: _ChildProtocol,
        status_r: int,
        warnings: tuple[str, ...],
    ) -> Process:
        """Wait for the launcher to exec the workload; a failure becomes a ComponentError."""
        from keystone_edge.isolation import LaunchMessage, LaunchStatus, read_status

        assert protocol.transport is not None
        pid = protocol.transport.get_pid()
        status = LaunchStatus()
        try:
            async with asyncio.timeout(_LAUNCH_TIMEOUT):
                status = await read_status(status_r)
        except TimeoutError:
            _signal_group(pid, signal.SIGKILL)
            limit = Duration(_LAUNCH_TIMEOUT).text
            message = f"the launcher did not reach the exec within {limit}"
            status = LaunchStatus(messages=(LaunchMessage("error", "launcher", "", message),))
        except BaseException:
            _signal_group(pid, signal.SIGKILL)  # cancelled: no half-isolated process is left
            raise
        finally:
            protocol.launched(status)  # the exit's cleanup waits for this
        warnings += tuple(f"{m.control}: {m.message}" for m in status.warnings)
        process = Process(name, argv, protocol, warnings=warnings)
        if status.error is not None:
            ended = await process.wait()
            raise ComponentError(
                f"{name}: {ended.detail or status.error.message}",
                component=name,
                exit_code=ended.code,
                signal=ended.signal,
            )
        return process
