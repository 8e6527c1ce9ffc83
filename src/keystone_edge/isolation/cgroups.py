"""Per-component control groups on cgroup v2, v1 and hybrid hosts.

Rules this module enforces:

- The layout is detected once from ``/proc/self/mountinfo`` and ``/proc/self/cgroup``:
  ``v2`` (one unified hierarchy with controllers), ``v1`` (one hierarchy per controller),
  ``hybrid`` (v1 controllers plus a cgroup2 mount, usually ``/sys/fs/cgroup/unified``,
  that KeyStone uses only to track and kill processes) or ``none``.
- Component cgroups live at ``<agent's own cgroup>/<parent>/<component>`` in every
  hierarchy KeyStone uses (``parent`` defaults to ``keystone``), so an agent that is itself
  confined (a systemd service, a container) keeps its components inside its own limits.
  A ``parent`` starting with ``/`` is taken from the hierarchy's root instead.
- Planning is pure: :meth:`CgroupManager.plan` turns limits into the directories to create
  and the files to write, in order; the launcher performs them before it execs the
  workload, so no child can escape. Limits a host cannot enforce come back as
  :class:`Unavailable`, for the policy to refuse (strict) or report (best effort).
- v1 writes respect the kernel's ordering rules (``memory.memsw.limit_in_bytes`` must
  stay >= ``memory.limit_in_bytes``; the CFS period before the quota).
- After the workload exits, :func:`oom_kills` tells whether the OOM killer struck and
  :func:`remove` kills stragglers (``cgroup.kill`` on v2/hybrid, freeze-kill-thaw with
  the v1 freezer, else kill until empty) and removes the directories (and the parents
  its removal left empty). :func:`reclaim` does the same at agent start for whatever a
  previous agent left, and :func:`prime_migration` takes the cost of a cgroup migration
  out of the launcher's path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final, Literal

import msgspec

__all__ = [
    "CgroupDir",
    "CgroupLayout",
    "CgroupLimits",
    "CgroupManager",
    "CgroupPlan",
    "CgroupWrite",
    "Hierarchy",
    "Unavailable",
    "detect_layout",
    "oom_kills",
    "pids_max_hits",
    "prime_migration",
    "procs",
    "reclaim",
    "remove",
]

LayoutKind = Literal["v2", "v1", "hybrid", "none"]

# v1 controllers KeyStone joins: the four it limits, accounting, and the freezer it uses
# to kill stragglers atomically.
_V1_USED: Final = ("cpu", "cpuacct", "memory", "pids", "blkio", "freezer")
_V1_OTHER: Final = ("cpuset", "devices", "net_cls", "net_prio", "perf_event", "hugetlb", "rdma")
_V1_KNOWN: Final = frozenset((*_V1_USED, *_V1_OTHER, "misc"))
# Where delegate() moves the agent on cgroup v2.
AGENT_LEAF: Final = "keystone-agent"
# Linux rejects a CFS quota below 1 ms.
_CFS_PERIOD_US: Final = 100_000
_CFS_MIN_QUOTA_US: Final = 1_000


class Hierarchy(msgspec.Struct, frozen=True):
    version: int  # 1 or 2
    mount: str  # where the hierarchy is mounted
    controllers: tuple[str, ...]  # v1: bound controllers; v2: enabled at the agent's cgroup
    own: str  # the agent's own cgroup, relative to the mount ("" for its root)


class CgroupLayout(msgspec.Struct, frozen=True):
    kind: LayoutKind
    hierarchies: tuple[Hierarchy, ...] = ()

    @property
    def unified(self) -> Hierarchy | None:
        return next((h for h in self.hierarchies if h.version == 2), None)

    def v1(self, controller: str) -> Hierarchy | None:
        return next(
            (h for h in self.hierarchies if h.version == 1 and controller in h.controllers), None
        )

    def controllers(self) -> set[str]:
        """Controllers available for limits (v1 ``blkio`` is reported as ``io``)."""
        found: set[str] = set()
        for h in self.hierarchies:
            if h.version == 2 and self.kind == "v2":
                found.update(h.controllers)
            elif h.version == 1:
                found.update("io" if c == "blkio" else c for c in h.controllers)
        return found


class CgroupLimits(msgspec.Struct, frozen=True, omit_defaults=True):
    cpu_quota: float | None = None  # percent of one CPU
    memory_max: int | None = None  # bytes
    memory_text: str | None = None  # as the recipe wrote it, for messages
    pids_max: int | None = None
    io_weight: int | None = None  # 1..10000, cgroup v2 scale

    def requested(self) -> list[tuple[str, str]]:
        """``(controller, recipe key)`` for every limit that is set."""
        out: list[tuple[str, str]] = []
        if self.cpu_quota is not None:
            out.append(("cpu", "resources.cpu_quota"))
        if self.memory_max is not None:
            out.append(("memory", "resources.memory_limit"))
        if self.pids_max is not None:
            out.append(("pids", "resources.pids_limit"))
        if self.io_weight is not None:
            out.append(("io", "resources.io_weight"))
        return out


class CgroupWrite(msgspec.Struct, frozen=True, omit_defaults=True):
    control: str  # the recipe key this write enforces
    files: tuple[str, ...]  # candidates inside the cgroup directory; the first present wins
    value: str
    optional: bool = False  # absent files are fine (e.g. memsw without swap accounting)


class CgroupDir(msgspec.Struct, frozen=True, omit_defaults=True):
    version: int
    path: str  # absolute directory of the component's cgroup
    # v2: (cgroup.subtree_control file, "+cpu +memory ...") for each ancestor, top-down.
    enable: tuple[tuple[str, str], ...] = ()
    writes: tuple[CgroupWrite, ...] = ()


class CgroupPlan(msgspec.Struct, frozen=True, omit_defaults=True):
    relpath: str  # "keystone/com.example.hello"
    dirs: tuple[CgroupDir, ...]
    limits: CgroupLimits = CgroupLimits()

    def dir_for(self, filename: str) -> CgroupDir | None:
        """The directory whose controller owns ``filename`` (e.g. ``memory.events``)."""
        for d in self.dirs:
            if Path(d.path, filename).exists():
                return d
        return None


class Unavailable(msgspec.Struct, frozen=True):
    control: str
    reason: str


# -- detection -----------------------------------------------------------------------------


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _own_paths(cgroup_file: Path) -> dict[str, str]:
    """``/proc/self/cgroup`` -> {controller or "" (v2): path}."""
    own: dict[str, str] = {}
    try:
        text = cgroup_file.read_text()
    except OSError:
        return own
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            own[""] = path
        for c in controllers.split(","):
            if c:
                own[c] = path
    return own


def _relative(own: str, mount_root: str) -> str | None:
    """The agent's cgroup as seen below a mount whose root is ``mount_root``."""
    if mount_root == "/":
        return own.rstrip("/")
    if own == mount_root or own.startswith(mount_root.rstrip("/") + "/"):
        return own[len(mount_root.rstrip("/")) :].rstrip("/")
    return None


def detect_layout(
    *,
    mountinfo: Path = Path("/proc/self/mountinfo"),
    cgroup: Path = Path("/proc/self/cgroup"),
) -> CgroupLayout:
    """Detect the cgroup layout the calling process lives in."""
    own = _own_paths(cgroup)
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return CgroupLayout(kind="none")
    v1: dict[tuple[str, ...], Hierarchy] = {}
    v2: Hierarchy | None = None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split(" ")
        tail = right.split(" ")
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, super_opts = tail[0], tail[2]
        root, mount = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup2":
            rel = _relative(own.get("", "/"), root)
            if rel is None or (v2 is not None and v2.mount.startswith("/sys/fs/cgroup")):
                continue
            try:
                ctrl = Path(mount + rel, "cgroup.controllers").read_text().split()
            except OSError:
                ctrl = []
            v2 = Hierarchy(version=2, mount=mount, controllers=tuple(ctrl), own=rel)
        elif fstype == "cgroup":
            ctrls = tuple(sorted(o for o in super_opts.split(",") if o in _V1_KNOWN))
            if not ctrls or ctrls in v1:
                continue
            rel = _relative(own.get(ctrls[0], "/"), root)
            if rel is None:
                continue
            v1[ctrls] = Hierarchy(version=1, mount=mount, controllers=ctrls, own=rel)
    if v1:
        kind: LayoutKind = "hybrid" if v2 is not None else "v1"
    elif v2 is not None:
        kind = "v2"
    else:
        kind = "none"
    hierarchies = tuple(sorted(v1.values(), key=lambda h: h.mount))
    if v2 is not None:
        hierarchies += (v2,)
    return CgroupLayout(kind=kind, hierarchies=hierarchies)


# -- planning ------------------------------------------------------------------------------


def _v1_blkio_weight(io_weight: int) -> int:
    # crun's blkio -> io.weight conversion (1 + (w - 10) * 9999 / 990), inverted.
    return max(10, min(1000, round(10 + (io_weight - 1) * 990 / 9999)))


class CgroupManager:
    """Plans component cgroups for one layout and cleans them up."""

    def __init__(self, layout: CgroupLayout, *, parent: str = "keystone") -> None:
        if not parent.strip("/") or ".." in Path(parent).parts:
            raise ValueError(f"invalid cgroup parent {parent!r}")
        self.layout = layout
        self.parent = parent

    def __repr__(self) -> str:
        return f"CgroupManager({self.layout.kind}, parent={self.parent!r})"

    def owner(self, h: Hierarchy) -> str:
        """The directory the parent hangs from: the agent's own cgroup, or the root."""
        if self.parent.startswith("/"):
            return h.mount
        own = h.own
        if own.endswith("/" + AGENT_LEAF):
            # The agent moved itself into a leaf (see delegate()); its components still
            # belong beside it, under the delegated cgroup.
            own = own[: -len(AGENT_LEAF) - 1]
        return h.mount + own

    def base(self, h: Hierarchy) -> str:
        """The directory holding component cgroups in hierarchy ``h``."""
        return self.owner(h) + "/" + self.parent.strip("/")

    def _used(self) -> Iterator[Hierarchy]:
        for h in self.layout.hierarchies:
            if h.version == 1 and not set(h.controllers) & set(_V1_USED):
                continue
            if os.access(self.owner(h), os.W_OK):
                yield h

    def plan(
        self, component: str, limits: CgroupLimits, *, extra_tasks: int = 0
    ) -> tuple[CgroupPlan | None, list[Unavailable]]:
        """What to create and write for ``component``; plus limits this host cannot enforce.

        ``extra_tasks`` is added to ``pids_max`` for helper processes the launcher keeps
        in the cgroup (the PID-namespace relay and init).
        """
        if "/" in component or component in {"", ".", ".."}:
            raise ValueError(f"invalid component name for a cgroup: {component!r}")
        relpath = f"{self.parent.strip('/')}/{component}"
        used = list(self._used())
        dirs: list[CgroupDir] = []
        enforced: set[str] = set()
        for h in used:
            path = f"{self.base(h)}/{component}"
            if h.version == 2:
                d, got = self._plan_v2(h, path, limits, extra_tasks)
            else:
                d, got = self._plan_v1(h, path, limits, extra_tasks)
            dirs.append(d)
            enforced |= got
        missing = [
            Unavailable(control=key, reason=self._why_missing(ctrl, used))
            for ctrl, key in limits.requested()
            if ctrl not in enforced
        ]
        if not dirs:
            return None, missing
        return CgroupPlan(relpath=relpath, dirs=tuple(dirs), limits=limits), missing

    def _why_missing(self, controller: str, used: list[Hierarchy]) -> str:
        if self.layout.kind == "none":
            return "cgroups are not mounted on this host"
        if not used:
            return (
                f"no writable cgroup hierarchy (the agent runs as uid {os.geteuid()}; "
                "cgroups need root or a delegated subtree)"
            )
        if self.layout.kind == "v2":
            return f"the {controller} controller is not available in the agent's cgroup v2 subtree"
        name = "blkio" if controller == "io" else controller
        return f"no {name} cgroup v1 controller is mounted"

    def _plan_v2(
        self, h: Hierarchy, path: str, limits: CgroupLimits, extra_tasks: int
    ) -> tuple[CgroupDir, set[str]]:
        if self.layout.kind != "v2":
            # Hybrid: the unified hierarchy only tracks and kills; controllers are on v1.
            return CgroupDir(version=2, path=path), set()
        wanted = [c for c, _ in limits.requested() if c in h.controllers]
        enable: list[tuple[str, str]] = []
        if wanted:
            value = " ".join(f"+{c}" for c in wanted)
            d = self.owner(h)
            enable.append((f"{d}/cgroup.subtree_control", value))
            for part in self.parent.strip("/").split("/"):
                d = f"{d}/{part}"
                enable.append((f"{d}/cgroup.subtree_control", value))
        writes: list[CgroupWrite] = []
        if limits.cpu_quota is not None and "cpu" in wanted:
            quota = max(_CFS_MIN_QUOTA_US, round(limits.cpu_quota / 100 * _CFS_PERIOD_US))
            writes.append(
                CgroupWrite("resources.cpu_quota", ("cpu.max",), f"{quota} {_CFS_PERIOD_US}")
            )
        if limits.memory_max is not None and "memory" in wanted:
            writes.append(
                CgroupWrite("resources.memory_limit", ("memory.max",), str(limits.memory_max))
            )
            # No swap beyond the limit: otherwise "64Mi" silently means 64Mi + swap.
            writes.append(
                CgroupWrite("resources.memory_limit", ("memory.swap.max",), "0", optional=True)
            )
        if limits.pids_max is not None and "pids" in wanted:
            writes.append(
                CgroupWrite(
                    "resources.pids_limit", ("pids.max",), str(limits.pids_max + extra_tasks)
                )
            )
        if limits.io_weight is not None and "io" in wanted:
            writes.append(
                CgroupWrite(
                    "resources.io_weight",
                    ("io.weight", "io.bfq.weight"),
                    f"default {limits.io_weight}",
                )
            )
        return CgroupDir(version=2, path=path, enable=tuple(enable), writes=tuple(writes)), set(
            wanted
        )

    def _plan_v1(
        self, h: Hierarchy, path: str, limits: CgroupLimits, extra_tasks: int
    ) -> tuple[CgroupDir, set[str]]:
        writes: list[CgroupWrite] = []
        got: set[str] = set()
        ctrls = set(h.controllers)
        if limits.cpu_quota is not None and "cpu" in ctrls:
            quota = max(_CFS_MIN_QUOTA_US, round(limits.cpu_quota / 100 * _CFS_PERIOD_US))
            writes.append(
                CgroupWrite("resources.cpu_quota", ("cpu.cfs_period_us",), str(_CFS_PERIOD_US))
            )
            writes.append(CgroupWrite("resources.cpu_quota", ("cpu.cfs_quota_us",), str(quota)))
            got.add("cpu")
        if limits.memory_max is not None and "memory" in ctrls:
            key = "resources.memory_limit"
            memsw = ("memory.memsw.limit_in_bytes",)
            # memsw >= limit at every step: lift memsw, set the limit, then pin memsw to it.
            writes.append(CgroupWrite(key, memsw, "-1", optional=True))
            writes.append(CgroupWrite(key, ("memory.limit_in_bytes",), str(limits.memory_max)))
            writes.append(CgroupWrite(key, memsw, str(limits.memory_max), optional=True))
            got.add("memory")
        if limits.pids_max is not None and "pids" in ctrls:
            writes.append(
                CgroupWrite(
                    "resources.pids_limit", ("pids.max",), str(limits.pids_max + extra_tasks)
                )
            )
            got.add("pids")
        if limits.io_weight is not None and "blkio" in ctrls:
            writes.append(
                CgroupWrite(
                    "resources.io_weight",
                    ("blkio.weight", "blkio.bfq.weight"),
                    str(_v1_blkio_weight(limits.io_weight)),
                )
            )
            got.add("io")
        return CgroupDir(version=1, path=path, writes=tuple(writes)), got

    # -- housekeeping ----------------------------------------------------------------------

    def component_dirs(self) -> dict[str, list[str]]:
        """Existing component cgroups under the parent: {component: [directories]}."""
        found: dict[str, list[str]] = {}
        for h in self._used():
            base = Path(self.base(h))
            try:
                children = [p for p in base.iterdir() if p.is_dir()]
            except OSError:
                continue
            for child in children:
                found.setdefault(child.name, []).append(str(child))
        return found

    def sweep(self, *, timeout: float = 5.0) -> list[str]:
        """Kill and remove every component cgroup left behind (call at agent start)."""
        removed: list[str] = []
        for name, paths in sorted(self.component_dirs().items()):
            stale = CgroupPlan(
                relpath=f"{self.parent.strip('/')}/{name}",
                dirs=tuple(CgroupDir(version=2 if _is_v2(p) else 1, path=p) for p in paths),
            )
            remove(stale, timeout=timeout)
            removed.append(name)
        return removed

    def prune(self) -> None:
        """Remove the parent directories (``keystone/``) where they hold no component."""
        for h in self._used():
            with contextlib.suppress(OSError):
                Path(self.base(h)).rmdir()

    def delegate(self) -> str | None:
        """cgroup v2: move the agent out of its own cgroup so that cgroup can have children
        with controllers (the "no internal processes" rule); returns what it did, if anything.

        The agent goes to ``<own>/keystone-agent``; components then live beside it. Call once
        at start, before planning; a no-op on v1/hybrid and when the agent's cgroup is the
        root or already has no other processes.
        """
        h = self.layout.unified
        if self.layout.kind != "v2" or h is None or self.parent.startswith("/"):
            return None
        if not h.own or h.own.endswith("/" + AGENT_LEAF):
            return None
        leaf = Path(h.mount + h.own) / AGENT_LEAF
        try:
            leaf.mkdir(exist_ok=True)
            (leaf / "cgroup.procs").write_text(str(os.getpid()))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot move the agent into {leaf}: {exc.strerror}") from exc
        return f"moved the agent into {leaf}"


def reclaim(parent: str = "keystone") -> list[str]:
    """At agent start: on cgroup v2 move the agent out of its own cgroup (see
    :meth:`CgroupManager.delegate`), then kill and remove every component cgroup under
    ``parent`` that a previous agent left behind. Returns what it did, for the log.

    Blocking; an error moving the agent is reported in the notes, not raised.
    """
    notes: list[str] = []
    manager = CgroupManager(detect_layout(), parent=parent)
    unified = manager.layout.unified
    # Only where there is something to delegate and the right to do it (an agent without
    # root on a host whose cgroups were not delegated to it has nothing to sweep either).
    if unified is not None and os.access(manager.owner(unified), os.W_OK):
        try:
            moved = manager.delegate()
        except OSError as exc:
            notes.append(f"cgroup delegation failed: {exc.strerror or exc}")
        else:
            if moved:
                notes.append(moved)
                manager = CgroupManager(detect_layout(), parent=parent)  # our cgroup moved
    swept = manager.sweep()
    if swept:
        notes.append(f"removed cgroups left by a previous agent: {', '.join(swept)}")
    manager.prune()
    return notes


def _own_procs_file() -> str | None:
    """``cgroup.procs`` of the cgroup the agent itself is in now (read afresh: moving the
    agent back into a cgroup it has left would be anything but a no-op)."""
    for h in detect_layout().hierarchies:
        path = f"{h.mount}{h.own}/cgroup.procs"
        if os.access(path, os.W_OK):
            return path
    return None


def prime_migration() -> None:
    """Pay for the next cgroup migration now, while the launcher's interpreter starts.

    Joining a cgroup takes the kernel's global ``cgroup_threadgroup_rwsem`` for writing,
    which waits for an RCU grace period when no migration happened lately: 8-12 ms on an
    idle host (the launcher pays it writing ``cgroup.procs``), nothing right after another
    migration. Writing the agent's own PID into the cgroup it already is in changes
    nothing but takes that lock; done in a worker thread alongside the launcher's start
    (about as long), the launcher's own join finds it fast. Best effort: errors are ignored.
    """
    path = _own_procs_file()
    if path is None:
        return
    with contextlib.suppress(OSError):
        Path(path).write_text(str(os.getpid()))


def _is_v2(path: str) -> bool:
    return Path(path, "cgroup.kill").exists() or Path(path, "cgroup.events").exists()


# -- after the workload stops ---------------------------------------------------------------


def procs(plan: CgroupPlan) -> set[int]:
    """PIDs still in the component's cgroups (all hierarchies)."""
    found: set[int] = set()
    for d in plan.dirs:
        try:
            text = Path(d.path, "cgroup.procs").read_text()
        except OSError:
            continue
        found.update(int(x) for x in text.split())
    return found


def _field(text: str, name: str) -> int | None:
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return None


def oom_kills(plan: CgroupPlan) -> int:
    """How many processes the OOM killer killed in the component's memory cgroup.

    v2: ``memory.events`` ``oom_kill``; v1: ``memory.oom_control`` ``oom_kill`` (Linux
    4.13+). v1 kernels older than that only say ``under_oom``, which reads as 1.
    """
    for d in plan.dirs:
        for name in ("memory.events", "memory.oom_control"):
            try:
                text = Path(d.path, name).read_text()
            except OSError:
                continue
            count = _field(text, "oom_kill")
            if count is not None:
                return count
            return 1 if _field(text, "under_oom") else 0
    return 0


def pids_max_hits(plan: CgroupPlan) -> int:
    """How often a fork failed because the component reached its pids limit."""
    for d in plan.dirs:
        try:
            text = Path(d.path, "pids.events").read_text()
        except OSError:
            continue
        return _field(text, "max") or 0
    return 0


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
    except OSError:
        return False
    return True


def _kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove(plan: CgroupPlan, *, timeout: float = 5.0) -> list[int]:
    """Kill whatever is left in the component's cgroups and remove them.

    Returns the PIDs still present when ``timeout`` ran out (empty on success); blocking,
    so call it from a worker thread in the agent.
    """
    deadline = time.monotonic() + timeout
    killed = False
    for d in plan.dirs:
        if d.version == 2 and _write(Path(d.path, "cgroup.kill"), "1"):
            killed = True
    if not killed:
        freezer = next((d for d in plan.dirs if Path(d.path, "freezer.state").exists()), None)
        if freezer is not None and _write(Path(freezer.path, "freezer.state"), "FROZEN"):
            # Frozen tasks cannot fork, so one pass kills them all (runc does the same).
            _kill_all(procs(plan))
            _write(Path(freezer.path, "freezer.state"), "THAWED")
    delay = 0.001
    while True:
        left = procs(plan)
        if not left:
            break
        if time.monotonic() >= deadline:
            return sorted(left)
        _kill_all(left)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    for d in plan.dirs:
        while True:
            try:
                Path(d.path).rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                # EBUSY until the kernel has finished tearing the last task down.
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    return sorted(procs(plan))
                time.sleep(delay)
    _prune_parents(plan)
    return []


def _prune_parents(plan: CgroupPlan) -> None:
    """Remove the parent directories (``keystone/...``) the last component leaves empty.

    The launcher recreates them (and retries when one vanishes under it); a parent that
    still has children refuses with EBUSY, which ends the walk.
    """
    depth = plan.relpath.count("/")
    for d in plan.dirs:
        parent = Path(d.path)
        for _ in range(depth):
            parent = parent.parent
            try:
                parent.rmdir()
            except OSError:
                break
