"""KeyStone's isolation launcher: the small program the agent runs *instead of* a workload.

It applies a launch plan (computed by the agent, see :mod:`keystone_edge.isolation.spawn`)
to itself and then ``exec``s the workload, so every limit is in place before the first
instruction of the workload runs and no child can escape its cgroup::

    python -I -S -c "import sys;sys.path.append(DIR);import launcher;launcher.main()" \
        --plan HEX [--status-fd N] -- PROGRAM [ARG...]

(``DIR`` is this file's directory: importing it, rather than running it as a script,
reuses its cached bytecode. ``python -m keystone_edge.isolation`` is the same program,
for humans.)

Start-up time is the budget (the launcher adds < 15 ms to every start), so this file
imports only modules compiled into the interpreter or cheap to load (``os``, ``sys``,
``marshal``; ``ctypes`` and ``resource`` when used); it runs with ``-S`` (no site-packages)
and never imports the rest of KeyStone. The plan arrives as ``marshal`` data in hex:
the agent and the launcher are the same interpreter, and ``json`` alone would cost 5 ms.

Order (each step needs the privileges the next ones drop):

1. cgroups: create the component's cgroup in every hierarchy, write its limits, join it
2. files: create/chown/chmod ``permissions.files`` and the work directory
3. rlimits, nice, I/O priority
4. namespaces: ``unshare`` (pid, net, mount); mount: read-only system view, writable
   paths, private ``/tmp``; net: loopback up. With a PID namespace the launcher forks:
   it stays as a relay (forwarding signals, reporting the exit), the child becomes PID 1
   (mounts ``/proc``, reaps orphans) and forks the workload's process.
5. AppArmor: ``exec <profile>`` to ``/proc/self/attr/apparmor/exec``
6. bounding set; seccomp here instead of step 9 when ``no_new_privileges`` is off (the
   filter then needs CAP_SYS_ADMIN, which step 7 drops; runc does the same)
7. setgroups/setgid/setuid (with PR_SET_KEEPCAPS when capabilities are kept), then the
   kept capabilities (permitted, effective, inheritable; ambient for non-root users)
8. PR_SET_NO_NEW_PRIVS
9. seccomp filter, then ``execvp``

Failures: one JSON line per problem on the status fd (``--status-fd``, close-on-exec, so
the agent reads EOF at the exec) and, for errors, on stderr. In ``best_effort`` mode a
failing control is a warning and the launch goes on; identity changes never are. Exit
codes: :data:`EXIT_ISOLATION_FAILED` (125) when isolation could not be set up,
:data:`EXIT_CANNOT_EXECUTE` (126) and :data:`EXIT_NOT_FOUND` (127) as shells use them.
"""

# pathlib and contextlib would cost start-up time (they are not preloaded with -S): this
# file uses os and try/except on purpose.
# ruff: noqa: PTH101, PTH102, PTH103, PTH106, PTH109, PTH110, PTH112, PTH120, PTH123, SIM105

from __future__ import annotations

import marshal
import os
import sys

# ``typing`` costs milliseconds at start-up; the annotations are only for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final, NoReturn

__all__ = [
    "EXIT_CANNOT_EXECUTE",
    "EXIT_ISOLATION_FAILED",
    "EXIT_NOT_FOUND",
    "PLAN_VERSION",
    "main",
]

PLAN_VERSION: Final = 1
EXIT_ISOLATION_FAILED: Final = 125
EXIT_CANNOT_EXECUTE: Final = 126
EXIT_NOT_FOUND: Final = 127

# linux/prctl.h, linux/capability.h, linux/sched.h, linux/mount.h, linux/seccomp.h
_PR_SET_PDEATHSIG: Final = 1
_PR_SET_KEEPCAPS: Final = 8
_PR_SET_SECCOMP: Final = 22
_PR_CAPBSET_DROP: Final = 24
_PR_SET_NO_NEW_PRIVS: Final = 38
_PR_CAP_AMBIENT: Final = 47
_PR_CAP_AMBIENT_RAISE: Final = 2
_PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
_CAP_V3: Final = 0x20080522
_CAP_KILL: Final = 5
_SECCOMP_MODE_FILTER: Final = 2
_SECCOMP_SET_MODE_FILTER: Final = 1
_SECCOMP_FILTER_FLAG_SPEC_ALLOW: Final = 4
CLONE_NEWNS: Final = 0x00020000
CLONE_NEWPID: Final = 0x20000000
CLONE_NEWNET: Final = 0x40000000
_MS_RDONLY: Final = 1
_MS_NOSUID: Final = 2
_MS_NODEV: Final = 4
_MS_NOEXEC: Final = 8
_MS_REMOUNT: Final = 32
_MS_NOATIME: Final = 1024
_MS_NODIRATIME: Final = 2048
_MS_BIND: Final = 4096
_MS_REC: Final = 16384
_MS_PRIVATE: Final = 1 << 18
_MS_RELATIME: Final = 1 << 21
_MS_STRICTATIME: Final = 1 << 24
_MOUNT_FLAGS: Final = {
    "nosuid": _MS_NOSUID,
    "nodev": _MS_NODEV,
    "noexec": _MS_NOEXEC,
    "noatime": _MS_NOATIME,
    "nodiratime": _MS_NODIRATIME,
    "relatime": _MS_RELATIME,
    "strictatime": _MS_STRICTATIME,
}
_SIOCGIFFLAGS: Final = 0x8913
_SIOCSIFFLAGS: Final = 0x8914
_IFF_UP: Final = 1
_SIGPIPE: Final = 13
_SIGXFSZ: Final = 25
# Signals the PID-namespace relay and init pass on to the workload.
_FORWARDED: Final = (1, 2, 3, 10, 12, 14, 15, 28)  # HUP INT QUIT USR1 USR2 ALRM TERM WINCH


class _Abort(Exception):  # noqa: N818 - internal control flow, never escapes main()
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _json(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch in {'"', "\\"}:
            out.append("\\" + ch)
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class _Libc:
    """The few libc entry points Python 3.11's ``os`` lacks, through ctypes."""

    def __init__(self) -> None:
        import ctypes

        self.ct = ctypes
        self.lib = ctypes.CDLL(None, use_errno=True)

    def _check(self, result: int, what: str) -> int:
        if result == -1:
            err = self.ct.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return result

    def prctl(self, option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
        ul = self.ct.c_ulong
        return self._check(
            self.lib.prctl(self.ct.c_int(option), ul(a2), ul(a3), ul(a4), ul(a5)),
            f"prctl({option})",
        )

    def syscall(self, number: int, *args: int, what: str) -> int:
        cl = self.ct.c_long
        return self._check(self.lib.syscall(cl(number), *(cl(a) for a in args)), what)

    def unshare(self, flags: int) -> None:
        self._check(self.lib.unshare(self.ct.c_int(flags)), "unshare")

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        def enc(s: str | None) -> bytes | None:
            return None if s is None else s.encode()

        self._check(
            self.lib.mount(
                enc(source), enc(target), enc(fstype), self.ct.c_ulong(flags), enc(data)
            ),
            f"mount {target}",
        )

    def capget(self) -> tuple[int, int, int]:
        header = self.ct.create_string_buffer(_CAP_V3.to_bytes(4, sys.byteorder) + bytes(4), 8)
        data = self.ct.create_string_buffer(24)
        self._check(self.lib.capget(header, data), "capget")
        w = [int.from_bytes(data.raw[i : i + 4], sys.byteorder) for i in range(0, 24, 4)]
        return w[0] | w[3] << 32, w[1] | w[4] << 32, w[2] | w[5] << 32

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        header = self.ct.create_string_buffer(_CAP_V3.to_bytes(4, sys.byteorder) + bytes(4), 8)
        words = b"".join(
            (v >> shift & 0xFFFFFFFF).to_bytes(4, sys.byteorder)
            for shift in (0, 32)
            for v in (effective, permitted, inheritable)
        )
        data = self.ct.create_string_buffer(words, 24)
        self._check(self.lib.capset(header, data), "capset")

    def default_signal(self, signum: int) -> None:
        # Python ignores SIGPIPE and SIGXFSZ, and "ignored" survives exec(2); the workload
        # must start with the default dispositions (subprocess's restore_signals).
        self.lib.signal(self.ct.c_int(signum), self.ct.c_void_p(0))

    def loopback_up(self) -> None:
        fd = self._check(self.lib.socket(2, 2, 0), "socket")  # AF_INET, SOCK_DGRAM
        try:
            ifreq = self.ct.create_string_buffer(b"lo".ljust(16, b"\0") + bytes(24), 40)
            self._check(self.lib.ioctl(fd, self.ct.c_ulong(_SIOCGIFFLAGS), ifreq), "ioctl")
            flags = int.from_bytes(ifreq.raw[16:18], sys.byteorder) | _IFF_UP
            self.ct.memmove(self.ct.addressof(ifreq) + 16, flags.to_bytes(2, sys.byteorder), 2)
            self._check(self.lib.ioctl(fd, self.ct.c_ulong(_SIOCSIFFLAGS), ifreq), "ioctl")
        finally:
            os.close(fd)

    def seccomp(self, program: bytes, syscall_nr: int) -> None:
        ct = self.ct
        filt = ct.create_string_buffer(program, len(program))
        ptr = ct.sizeof(ct.c_void_p)
        # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
        fprog = ct.create_string_buffer(
            (len(program) // 8).to_bytes(2, sys.byteorder)
            + bytes(ptr - 2)
            + ct.addressof(filt).to_bytes(ptr, sys.byteorder),
            2 * ptr,
        )
        addr = ct.addressof(fprog)
        if syscall_nr >= 0:
            # seccomp(2) with SPEC_ALLOW: without it, kernels before 5.16 also switch on the
            # costly speculative-store-bypass mitigation for every filtered process.
            for flags in (_SECCOMP_FILTER_FLAG_SPEC_ALLOW, 0):
                result = self.lib.syscall(
                    ct.c_long(syscall_nr),
                    ct.c_long(_SECCOMP_SET_MODE_FILTER),
                    ct.c_long(flags),
                    ct.c_void_p(addr),
                )
                if result == 0:
                    return
                if ct.get_errno() not in (22, 38):  # EINVAL: flag unknown; ENOSYS
                    break
        self._check(
            self.lib.prctl(
                ct.c_int(_PR_SET_SECCOMP),
                ct.c_ulong(_SECCOMP_MODE_FILTER),
                ct.c_void_p(addr),
                ct.c_ulong(0),
                ct.c_ulong(0),
            ),
            "prctl(PR_SET_SECCOMP)",
        )


class _Launch:
    def __init__(self, plan: dict[str, Any], status_fd: int) -> None:
        self.plan = plan
        self.strict: bool = plan["strict"]
        self.status_fd = status_fd
        self._libc: _Libc | None = None

    @property
    def libc(self) -> _Libc:
        if self._libc is None:
            self._libc = _Libc()
        return self._libc

    # -- reporting -------------------------------------------------------------------------

    def report(self, level: str, step: str, control: str, message: str) -> None:
        line = (
            f'{{"keystone_launcher":1,"level":"{level}","step":{_json(step)},'
            f'"control":{_json(control)},"message":{_json(message)}}}\n'
        ).encode()
        if self.status_fd >= 0:
            _write_all(self.status_fd, line)
        if level == "error" or self.status_fd < 0:
            _write_all(2, line)

    def fatal(
        self, step: str, control: str, message: str, code: int = EXIT_ISOLATION_FAILED
    ) -> NoReturn:
        self.report("error", step, control, message)
        raise _Abort(code)

    def gap(self, step: str, control: str, message: str) -> None:
        """A control could not be applied: fatal in strict mode, a warning otherwise."""
        if self.strict:
            self.fatal(step, control, message)
        self.report("warning", step, control, message)

    # -- steps -----------------------------------------------------------------------------

    def cgroups(self) -> None:
        dirs: list[dict[str, Any]] = self.plan["cgroup"]
        for d in dirs:
            self._prepare_cgroup(d)
        pid = str(os.getpid()).encode()
        for d in dirs:
            try:
                _write_file(d["path"] + "/cgroup.procs", pid)
            except OSError as exc:
                self.gap("cgroup", "resources", f"cannot join cgroup {d['path']}: {exc.strerror}")

    def _prepare_cgroup(self, d: dict[str, Any]) -> None:
        path: str = d["path"]
        try:
            for attempt in range(3):
                try:
                    os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                    for control_file, value in d["enable"]:
                        _write_file(control_file, value.encode())
                    _fresh_cgroup(path)
                    break
                except FileNotFoundError:
                    # The agent removes a parent (keystone/) when its last component
                    # stops; it may vanish between makedirs and mkdir.
                    if attempt == 2:
                        raise
        except _Stale as stale:
            self.gap("cgroup", "resources", str(stale))
        except OSError as exc:
            where = exc.filename or path
            self.gap("cgroup", "resources", f"cannot create cgroup {where}: {exc.strerror}")
            return
        for control, files, value, optional in d["writes"]:
            target = next((f for f in files if os.path.exists(path + "/" + f)), None)
            if target is None:
                if not optional:
                    self.gap(
                        "cgroup",
                        control,
                        f"{path} has no {' or '.join(files)} (controller missing)",
                    )
                continue
            try:
                _write_file(path + "/" + target, value.encode())
            except OSError as exc:
                self.gap(
                    "cgroup", control, f"cannot write {value} to {path}/{target}: {exc.strerror}"
                )

    def files(self) -> None:
        for path, create, mode, uid, gid in self.plan["files"]:
            try:
                _prepare_path(path, create, mode, uid, gid)
            except OSError as exc:
                self.gap("files", "permissions.files", f"{path}: {exc.strerror or exc}")

    def limits(self) -> None:
        if self.plan["rlimits"]:
            import resource

            for number, soft, hard, control in self.plan["rlimits"]:
                try:
                    resource.setrlimit(number, (soft, hard))
                except (OSError, ValueError) as exc:
                    self.gap("rlimits", control, f"cannot set the limit to {soft}: {exc}")
        nice = self.plan["nice"]
        if nice is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            except OSError as exc:
                self.gap("nice", "resources.nice", f"cannot set nice {nice}: {exc.strerror}")
        ioprio = self.plan["ioprio"]
        if ioprio is not None:
            number, value = ioprio
            try:
                self.libc.syscall(number, 1, 0, value, what="ioprio_set")  # IOPRIO_WHO_PROCESS
            except OSError as exc:
                self.gap("nice", "resources.nice", f"cannot set the I/O priority: {exc}")

    def namespaces(self) -> bool:
        """Enter the planned namespaces; True when a PID namespace needs a fork."""
        ns: dict[str, Any] = self.plan["ns"]
        flags: int = ns["flags"]
        if not flags:
            return False
        try:
            self.libc.unshare(flags)
        except OSError as exc:
            self.gap("namespaces", "namespaces", f"cannot create namespaces: {exc}")
            return False
        if ns["mount"]:
            try:
                self._mount_view(ns["writable"])
            except OSError as exc:
                self.gap("namespaces", "namespaces.mount", f"cannot set up the mounts: {exc}")
        if ns["net"]:
            try:
                self.libc.loopback_up()
            except OSError as exc:
                self.gap("namespaces", "namespaces.net", f"cannot bring up loopback: {exc}")
        return bool(flags & CLONE_NEWPID)

    def _mount_view(self, writable: list[str]) -> None:
        libc = self.libc
        # Nothing we do here may leak back into the host's mount namespace.
        libc.mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)
        binds: list[str] = []
        for path in writable:
            if os.path.exists(path):
                libc.mount(path, path, None, _MS_BIND | _MS_REC, None)
                binds.append(path.rstrip("/") or "/")
        keep = ["/proc", "/dev", "/tmp", *binds]
        for target, options in _mounts():
            if "ro" in options or any(target == k or target.startswith(k + "/") for k in keep):
                continue
            flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
            for opt in options:
                flags |= _MOUNT_FLAGS.get(opt, 0)
            try:
                libc.mount(None, target, None, flags, None)
            except OSError as exc:
                # A mount hidden under another one cannot be reached by its path; what is
                # on top of it is remounted in its own turn.
                if exc.errno not in (2, 13, 22):  # ENOENT, EACCES, EINVAL
                    raise
        # Writable paths under /tmp would vanish under the private /tmp: keep a handle on
        # each and bind it back from /proc/self/fd once the tmpfs is in place.
        under_tmp = [p for p in binds if p.startswith("/tmp/")]
        handles = [os.open(p, os.O_PATH | os.O_CLOEXEC) for p in under_tmp]
        try:
            libc.mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777")
            for path, fd in zip(under_tmp, handles, strict=True):
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.makedirs(path, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
                libc.mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC, None)
        finally:
            for fd in handles:
                os.close(fd)
        # The working directory still points into the mounts that were just covered.
        try:
            os.chdir(os.getcwd())
        except OSError:
            os.chdir("/")

    def apparmor(self) -> None:
        spec = self.plan["apparmor"]
        if spec is None:
            return
        profile: str = spec
        data = f"exec {profile}".encode()
        for attr in ("/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"):
            try:
                _write_file(attr, data)
                return
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.gap(
                    "apparmor",
                    "security.apparmor_profile",
                    f"cannot switch to AppArmor profile {profile!r}: {exc.strerror}",
                )
                return
        self.gap("apparmor", "security.apparmor_profile", "AppArmor is not available")

    def privileges(self) -> None:
        """Bounding set, early seccomp, identity, kept capabilities, no_new_privs, seccomp."""
        caps: dict[str, Any] = self.plan["caps"]
        keep: int = caps["keep"]
        identity = self.plan["identity"]
        seccomp = self.plan["seccomp"]
        libc = self.libc
        for signum in (_SIGPIPE, _SIGXFSZ):
            libc.default_signal(signum)
        if caps["manage"]:
            if caps["bounding"]:
                for cap in range(caps["last"] + 1):
                    if not keep >> cap & 1:
                        try:
                            libc.prctl(_PR_CAPBSET_DROP, cap)
                        except OSError as exc:
                            self.gap("capabilities", "security.capabilities", f"{exc}")
                            break
            if caps["ambient_supported"]:
                try:
                    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
                except OSError as exc:
                    self.gap("capabilities", "security.capabilities", f"{exc}")
        if seccomp is not None and seccomp[2]:
            self._seccomp(seccomp)
        target_uid = os.geteuid()
        if identity is not None:
            uid, gid, groups = identity
            target_uid = uid
            ambient = bool(keep) and uid != 0
            try:
                if ambient:
                    libc.prctl(_PR_SET_KEEPCAPS, 1)
                os.setgroups(groups)
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
            except OSError as exc:
                # Never downgraded: running as the agent's user is not "a bit less isolated".
                self.fatal(
                    "identity", "security.run_as", f"cannot switch to uid {uid} gid {gid}: {exc}"
                )
        if caps["manage"]:
            try:
                _, permitted, _ = libc.capget()
                kept = keep & permitted
                if kept or target_uid == 0 or permitted:
                    libc.capset(kept, kept, kept)
                if identity is not None and kept and target_uid != 0:
                    libc.prctl(_PR_SET_KEEPCAPS, 0)
                if target_uid != 0 and caps["ambient_supported"]:
                    for cap in range(64):
                        if kept >> cap & 1:
                            libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, cap)
            except OSError as exc:
                self.gap("capabilities", "security.capabilities", f"{exc}")
        if self.plan["nnp"]:
            try:
                libc.prctl(_PR_SET_NO_NEW_PRIVS, 1)
            except OSError as exc:
                self.gap("no_new_privileges", "security.no_new_privileges", f"{exc}")
        if seccomp is not None and not seccomp[2]:
            self._seccomp(seccomp)

    def _seccomp(self, seccomp: list[Any]) -> None:
        program, number, _ = seccomp
        try:
            self.libc.seccomp(program, number)
        except OSError as exc:
            self.gap("seccomp", "security.seccomp_profile", f"cannot install the filter: {exc}")

    def exec(self, argv: list[str]) -> NoReturn:
        try:
            _execvp(argv)
        except FileNotFoundError:
            self.fatal("exec", "lifecycle.run", f"{argv[0]}: command not found", EXIT_NOT_FOUND)
        except OSError as exc:
            self.fatal(
                "exec",
                "lifecycle.run",
                f"cannot execute {argv[0]}: {exc.strerror}",
                EXIT_CANNOT_EXECUTE,
            )

    # -- PID namespace ---------------------------------------------------------------------

    def fork_into_pid_namespace(self) -> None:
        """Become the relay; return only in the workload's process (PID 2 of the namespace)."""
        import signal

        forwarded = {signal.Signals(s) for s in _FORWARDED}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, forwarded)
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        child = os.fork()
        if child == 0:
            os.close(report_r)
            self._init(report_w, forwarded, old_mask)
            return
        os.close(report_w)
        if self.status_fd >= 0:
            os.close(self.status_fd)
            self.status_fd = -1
        _relay(child, report_r, forwarded, old_mask, self.libc)

    def _init(self, report_w: int, forwarded: set[Any], old_mask: set[Any]) -> None:
        import signal

        libc = self.libc
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        try:
            # The relay may have died before PDEATHSIG was armed: then nobody reads.
            os.write(report_w, b"S")
        except BrokenPipeError:
            os._exit(EXIT_ISOLATION_FAILED)
        # The runner signals the relay's process group; the workload gets each signal once,
        # through the relay and this init, never a second copy from the group.
        os.setpgid(0, 0)
        if self.plan["ns"]["proc"]:
            try:
                libc.mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
            except OSError as exc:
                self.gap("namespaces", "namespaces.pid", f"cannot mount /proc: {exc}")
        workload = os.fork()
        if workload == 0:
            os.close(report_w)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            return
        if self.status_fd >= 0:
            os.close(self.status_fd)

        def forward(signum: int, _frame: object) -> None:
            try:
                os.kill(workload, signum)
            except ProcessLookupError:
                pass

        for s in forwarded:
            signal.signal(s, forward)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        try:
            # PID 1 of the namespace keeps only what forwarding needs.
            keep = 1 << _CAP_KILL
            libc.capset(keep, keep, 0)
            libc.prctl(_PR_SET_NO_NEW_PRIVS, 1)
        except OSError:
            pass
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                os._exit(EXIT_ISOLATION_FAILED)
            if pid == workload:
                break
        try:
            os.write(report_w, b"X" + str(status).encode())
        except OSError:
            pass
        os._exit(_exit_code(status))


class _Stale(Exception):  # noqa: N818 - internal
    pass


def _relay(
    child: int, report_r: int, forwarded: set[Any], old_mask: set[Any], libc: _Libc
) -> NoReturn:
    import signal

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for s in forwarded:
        signal.signal(s, forward)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    try:
        libc.capset(0, 0, 0)  # the relay needs no privilege to signal its own child
    except OSError:
        pass
    _, status = os.waitpid(child, 0)
    report = b""
    while chunk := os.read(report_r, 256):
        report += chunk
    _, _, final = report.partition(b"X")
    if final:
        status = int(final)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        # Die the way the workload died, so the agent sees "killed by signal N" (an OOM
        # kill is SIGKILL) - but without a core dump of the relay.
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.Signals(sig)})
        os.kill(os.getpid(), sig)
    os._exit(_exit_code(status))


def _exit_code(status: int) -> int:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _execvp(argv: list[str]) -> NoReturn:
    """``os.execvp`` without its lazy imports: after setuid the standard library may be
    unreadable (a venv under /root), so nothing may be imported any more."""
    name = argv[0]
    if "/" in name:
        os.execv(name, argv)  # noqa: S606 - exec *is* the launcher's job
    denied: OSError | None = None
    for directory in (os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin").split(":"):
        try:
            os.execv((directory or ".") + "/" + name, argv)  # noqa: S606
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError as exc:
            denied = exc
    if denied is not None:
        raise denied
    raise FileNotFoundError(2, "command not found", name)


# -- file helpers --------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _fresh_cgroup(path: str) -> None:
    """Create the cgroup; an empty leftover is recreated so limits and counters reset."""
    try:
        os.mkdir(path)
        return
    except FileExistsError:
        pass
    with open(path + "/cgroup.procs", "rb") as f:
        left = f.read().split()
    if left:
        raise _Stale(
            f"cgroup {path} still holds processes from an earlier run "
            f"({', '.join(p.decode() for p in left[:5])})"
        )
    try:
        os.rmdir(path)
        os.mkdir(path)
    except OSError:
        pass  # still there (busy, or not a real cgroup fs): reuse it


def _prepare_path(path: str, create: str, mode: int, uid: int, gid: int) -> None:
    if os.path.realpath(path) != os.path.normpath(path):
        # Root chowning a path a component can redirect would hand it any file.
        raise OSError(f"refusing to prepare {path}: it goes through a symbolic link")
    if not os.path.lexists(path):
        parent = os.path.dirname(path)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        if create == "dir":
            os.mkdir(path, 0o700)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    if uid != -1 or gid != -1:
        os.chown(path, uid, gid, follow_symlinks=False)
    if mode >= 0:
        os.chmod(path, mode)


def _mounts() -> list[tuple[str, list[str]]]:
    """(mount point, per-mount options) from /proc/self/mountinfo, in mount order."""
    with open("/proc/self/mountinfo", "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 5:
            out.append((_unescape(fields[4]), fields[5].split(",")))
    return out


def _unescape(field: str) -> str:
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


# -- entry point ---------------------------------------------------------------------------


def _usage(message: str) -> NoReturn:
    _write_all(
        2,
        f"keystone launcher: {message}\n"
        "usage: launcher.py --plan HEX [--status-fd N] -- PROGRAM [ARG...]\n".encode(),
    )
    os._exit(EXIT_ISOLATION_FAILED)


def _parse(args: list[str]) -> tuple[dict[str, Any], int, list[str]]:
    plan_hex: str | None = None
    status_fd = -1
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg in ("--plan", "--status-fd") and i + 1 < len(args):
            if arg == "--plan":
                plan_hex = args[i + 1]
            else:
                try:
                    status_fd = int(args[i + 1])
                except ValueError:
                    _usage(f"--status-fd needs a number, got {args[i + 1]!r}")
            i += 2
            continue
        _usage(f"unexpected argument {arg!r}")
    argv = args[i + 1 :]
    if plan_hex is None:
        _usage("--plan is required")
    if not argv:
        _usage("no program to run after --")
    try:
        # The plan comes from the agent that spawned us, never from a component.
        plan = marshal.loads(bytes.fromhex(plan_hex))  # noqa: S302
    except (ValueError, EOFError, TypeError) as exc:
        _usage(f"unreadable plan: {exc}")
    if not isinstance(plan, dict) or plan.get("v") != PLAN_VERSION:
        _usage(f"plan version mismatch (this launcher reads version {PLAN_VERSION})")
    return plan, status_fd, argv


def run(plan: dict[str, Any], status_fd: int, argv: list[str]) -> NoReturn:
    """Apply ``plan`` to this process and exec ``argv``; never returns."""
    if status_fd >= 0:
        try:
            os.set_inheritable(status_fd, False)  # noqa: FBT003 - positional-only
        except OSError:
            status_fd = -1
    launch = _Launch(plan, status_fd)
    try:
        launch.cgroups()
        launch.files()
        launch.limits()
        if launch.namespaces():
            launch.fork_into_pid_namespace()
        launch.apparmor()
        launch.privileges()
        launch.exec(argv)
    except _Abort as abort:
        os._exit(abort.code)
    except Exception as exc:  # noqa: BLE001 - a launcher bug must still be reported as one line
        launch.report("error", "launcher", "", f"internal error: {type(exc).__name__}: {exc}")
        os._exit(EXIT_ISOLATION_FAILED)


def main(args: list[str] | None = None) -> NoReturn:
    plan, status_fd, argv = _parse(sys.argv[1:] if args is None else args)
    run(plan, status_fd, argv)


if __name__ == "__main__":
    main()
