"""The isolation policy of one component run: what the launcher must enforce.

:func:`policy_for` turns a recipe's ``security``, ``resources`` and ``permissions``
sections, plus the agent's settings (mode, cgroup parent, namespaces, work directory),
into an :class:`IsolationPolicy` resolved for *this* host: user and group names become
ids, capability names become the kept set, the seccomp profile is loaded, cgroup limits
become the files to write. The policy is a msgspec Struct, so the agent can store it,
show it and send it over the API as JSON.

Rules this module enforces:

- ``strict`` mode refuses to start a component when the host cannot enforce a control the
  recipe asks for (no cgroup controller, no seccomp, no AppArmor, not root): one
  :class:`IsolationError` lists every gap. ``best_effort`` mode drops those controls and
  records each as an :class:`IsolationWarning` for events and ``doctor``.
- Mistakes are never downgraded to warnings, whatever the mode: an unknown capability,
  a bad seccomp profile (:class:`~keystone_edge.errors.RecipeError`), or a ``run_as`` user
  that does not exist (:class:`IsolationError`). Running as root because a user is
  missing would be the opposite of what the recipe asked.
- ``permissions.files`` paths are absolute or relative to the work directory; a missing
  path ending in ``/`` is created as a directory, any other missing path as an empty
  file. Without an explicit ``owner`` they are given to the ``run_as`` user.
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

import msgspec

from keystone_edge.errors import AgentConfigError, KeyStoneError, RecipeError
from keystone_edge.isolation import caps as _caps
from keystone_edge.isolation.cgroups import CgroupLimits, CgroupManager, CgroupPlan
from keystone_edge.isolation.host import HostFacts, apparmor_profiles, probe_host
from keystone_edge.isolation.seccomp import SeccompProfile, compile_filter, resolve
from keystone_edge.recipe.model import Recipe

__all__ = [
    "FilePrep",
    "Identity",
    "IsolationError",
    "IsolationPolicy",
    "IsolationWarning",
    "Mode",
    "Namespaces",
    "Rlimit",
    "policy_for",
]

Mode = Literal["strict", "best_effort"]
NamespaceName = Literal["pid", "net", "mount"]

# ioprio_set(2): the best-effort class, with the level the kernel would derive from nice.
IOPRIO_CLASS_BE = 2


class IsolationError(KeyStoneError):
    """Isolation a component needs cannot be set up on this host (or its user is missing)."""

    code = "isolation_failed"

    def __init__(
        self,
        message: str,
        *,
        component: str | None = None,
        control: str | None = None,
        step: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.component = component
        self.control = control
        self.step = step


class IsolationWarning(msgspec.Struct, frozen=True):
    control: str  # the recipe key (or agent setting) that is not enforced
    message: str


class Identity(msgspec.Struct, frozen=True):
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


class Rlimit(msgspec.Struct, frozen=True):
    name: Literal["nofile"]
    soft: int
    hard: int


class Namespaces(msgspec.Struct, frozen=True, omit_defaults=True):
    pid: bool = False  # private PID namespace: the workload sees only its own processes
    net: bool = False  # private network namespace: loopback only, no network
    mount: bool = False  # read-only system, private /tmp, writable paths below
    writable: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return self.pid or self.net or self.mount


class FilePrep(msgspec.Struct, frozen=True, omit_defaults=True):
    path: str
    create: Literal["dir", "file"] | None = None
    mode: int | None = None
    uid: int = -1  # -1: leave as is
    gid: int = -1


class IsolationPolicy(msgspec.Struct, frozen=True, omit_defaults=True):
    component: str
    mode: Mode
    arch: str | None = None  # the host's seccomp architecture
    privileged: bool = False  # install scripts with require_privilege: limits only
    identity: Identity | None = None
    capabilities: tuple[str, ...] = ()  # the kept set; everything else is dropped
    drop_bounding: bool = True  # also drop the rest from the bounding set (needs SETPCAP)
    no_new_privileges: bool = True
    seccomp: SeccompProfile | None = None
    apparmor_profile: str | None = None
    rlimits: tuple[Rlimit, ...] = ()
    nice: int | None = None
    ioprio: tuple[int, int] | None = None  # (class, level)
    cgroup: CgroupPlan | None = None
    namespaces: Namespaces = Namespaces()
    files: tuple[FilePrep, ...] = ()
    warnings: tuple[IsolationWarning, ...] = ()

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> IsolationPolicy:
        return msgspec.json.decode(data, type=cls)


class _Gaps:
    """Collects controls the host cannot enforce: errors in strict mode, warnings otherwise."""

    def __init__(self, component: str, mode: Mode) -> None:
        self.component = component
        self.mode = mode
        self.items: list[IsolationWarning] = []

    def add(self, control: str, message: str) -> None:
        self.items.append(IsolationWarning(control=control, message=message))

    def check(self) -> tuple[IsolationWarning, ...]:
        if self.items and self.mode == "strict":
            lines = "; ".join(f"{w.control}: {w.message}" for w in self.items)
            raise IsolationError(
                f"{self.component}: isolation cannot be enforced on this host: {lines}",
                component=self.component,
                control=self.items[0].control,
                hint="fix the host (see `keystonectl doctor`), or set the agent's isolation "
                "mode to best_effort to run with these controls skipped",
            )
        return tuple(self.items)


def _recipe_error(recipe: Recipe, key: str, message: str) -> RecipeError:
    return RecipeError(f"{recipe.name}: {message}", key=key)


def _split_owner(spec: str) -> tuple[str, str | None]:
    user, sep, group = spec.partition(":")
    return user, (group if sep else None)


def _lookup_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        return None


def _lookup_group(name: str) -> int | None:
    try:
        return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _create_user(user: str, group: str | None, component: str) -> None:
    """Create a system user (and group) with no login and no home."""
    import shutil

    useradd = shutil.which("useradd")
    if useradd is None:
        raise IsolationError(
            f"{component}: cannot create user {user!r}: useradd is not installed",
            component=component,
            control="security.run_as",
        )
    cmd = [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    if group is not None and group != user:
        if _lookup_group(group) is None:
            groupadd = shutil.which("groupadd") or "groupadd"
            _run_admin([groupadd, "--system", group], component)
        cmd += ["--gid", group]
    else:
        cmd += ["--user-group"]
    _run_admin([*cmd, user], component)


def _run_admin(cmd: list[str], component: str) -> None:
    import subprocess

    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        raise IsolationError(
            f"{component}: {' '.join(cmd)} failed: {detail.strip()}",
            component=component,
            control="security.run_as",
        ) from exc


def _identity(
    recipe: Recipe, component: str, host: HostFacts, gaps: _Gaps, *, create_user: bool
) -> Identity | None:
    spec = recipe.security.run_as
    if spec is None:
        return None
    user, group = _split_owner(spec)
    entry = _lookup_user(user)
    if entry is None and create_user and not user.isdigit():
        _create_user(user, group, component)
        entry = _lookup_user(user)
    if entry is None:
        raise IsolationError(
            f"{component}: security.run_as: user {user!r} does not exist on this device",
            component=component,
            control="security.run_as",
            hint="create the user, or set create_user = true in the agent configuration",
        )
    gid = entry.pw_gid
    if group is not None:
        found = _lookup_group(group)
        if found is None:
            raise IsolationError(
                f"{component}: security.run_as: group {group!r} does not exist on this device",
                component=component,
                control="security.run_as",
            )
        gid = found
    if entry.pw_uid == host.euid and gid == os.getegid():
        return None
    if not host.root:
        gaps.add(
            "security.run_as",
            f"the agent runs as uid {host.euid} and cannot switch to {spec}; "
            "the component runs as the agent's user",
        )
        return None
    groups = sorted({gid, *os.getgrouplist(entry.pw_name, gid)})
    return Identity(
        user=entry.pw_name, uid=entry.pw_uid, gid=gid, groups=tuple(groups), home=entry.pw_dir
    )


def _capabilities(recipe: Recipe, host: HostFacts, gaps: _Gaps) -> tuple[tuple[str, ...], bool]:
    try:
        kept = sorted({_caps.normalise(n) for n in recipe.security.capabilities})
    except ValueError as exc:
        raise _recipe_error(recipe, "security.capabilities", str(exc)) from exc
    setpcap = host.root or bool(host.caps_effective >> _caps.CAPABILITIES["CAP_SETPCAP"] & 1)
    if not host.root:
        missing = [c for c in kept if not host.caps_effective >> _caps.CAPABILITIES[c] & 1]
        if missing:
            gaps.add(
                "security.capabilities",
                f"the agent does not hold {', '.join(missing)} and cannot grant it",
            )
            kept = [c for c in kept if c not in missing]
    if not setpcap and recipe.security.no_new_privileges is False:
        gaps.add(
            "security.capabilities",
            "the agent lacks CAP_SETPCAP, so the bounding set is not reduced "
            "(setuid and file-capability programs could regain capabilities)",
        )
    return tuple(kept), setpcap


def _seccomp(
    recipe: Recipe, host: HostFacts, kept: Sequence[str], gaps: _Gaps
) -> SeccompProfile | None:
    spec = recipe.security.seccomp_profile or "default"
    if spec == "unconfined":
        return None
    if host.arch is None:
        gaps.add("security.seccomp_profile", f"seccomp filters are not supported on {host.machine}")
        return None
    try:
        profile = resolve(spec, native=host.arch, capabilities=kept, kernel=host.kernel)
        if profile is not None:
            compile_filter(profile, host.arch)
    except ValueError as exc:
        raise _recipe_error(recipe, "security.seccomp_profile", str(exc)) from exc
    if not host.seccomp:
        gaps.add("security.seccomp_profile", "the kernel has no seccomp support")
        return None
    return profile


def _apparmor(recipe: Recipe, host: HostFacts, gaps: _Gaps) -> str | None:
    profile = recipe.security.apparmor_profile
    if profile is None or profile == "unconfined":
        return None
    if not host.apparmor:
        gaps.add(
            "security.apparmor_profile",
            f"AppArmor is not enabled on this host; profile {profile!r} is not applied",
        )
        return None
    loaded = apparmor_profiles()
    if loaded is not None and profile not in loaded:
        gaps.add(
            "security.apparmor_profile",
            f"AppArmor profile {profile!r} is not loaded (load it with apparmor_parser -r)",
        )
        return None
    return profile


def _rlimits(recipe: Recipe, host: HostFacts, gaps: _Gaps) -> tuple[Rlimit, ...]:
    n = recipe.resources.open_files
    if n is None:
        return ()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if not host.root and hard != resource.RLIM_INFINITY and n > hard:
        gaps.add(
            "resources.open_files",
            f"the agent's own hard limit is {hard} open files and it cannot raise it to {n}",
        )
        n = hard
    return (Rlimit(name="nofile", soft=n, hard=n),)


def _nice(
    recipe: Recipe, host: HostFacts, gaps: _Gaps
) -> tuple[int | None, tuple[int, int] | None]:
    nice = recipe.resources.nice
    if nice is None:
        return None, None
    if nice < os.getpriority(os.PRIO_PROCESS, 0) and not host.root:
        gaps.add("resources.nice", f"only root can raise priority (nice {nice})")
        return None, None
    return nice, (IOPRIO_CLASS_BE, (nice + 20) // 5)


def _cgroup(
    recipe: Recipe,
    component: str,
    host: HostFacts,
    gaps: _Gaps,
    *,
    cgroup_root: str,
    extra_tasks: int,
) -> CgroupPlan | None:
    res = recipe.resources
    limits = CgroupLimits(
        cpu_quota=res.cpu_quota,
        memory_max=None if res.memory_limit is None else int(res.memory_limit),
        memory_text=None if res.memory_limit is None else str(res.memory_limit),
        pids_max=res.pids_limit,
        io_weight=res.io_weight,
    )
    plan, missing = CgroupManager(host.cgroup, parent=cgroup_root).plan(
        component, limits, extra_tasks=extra_tasks
    )
    for gap in missing:
        gaps.add(gap.control, gap.reason)
    return plan


def _path(recipe: Recipe, raw: str, work_dir: str | None, key: str) -> str:
    p = PurePosixPath(raw)
    if not p.is_absolute():
        if work_dir is None:
            raise _recipe_error(recipe, key, f"relative path {raw!r} needs a work directory")
        p = PurePosixPath(work_dir) / p
    if ".." in p.parts:
        raise _recipe_error(recipe, key, f"path {raw!r} must not contain '..'")
    return str(p)


def _files(
    recipe: Recipe,
    identity: Identity | None,
    host: HostFacts,
    gaps: _Gaps,
    work_dir: str | None,
) -> tuple[FilePrep, ...]:
    preps: list[FilePrep] = []
    if work_dir is not None and identity is not None:
        preps.append(
            FilePrep(path=work_dir, create="dir", mode=0o750, uid=identity.uid, gid=identity.gid)
        )
    for index, entry in enumerate(recipe.permissions.files):
        key = f"permissions.files[{index}]"
        path = _path(recipe, entry.path, work_dir, f"{key}.path")
        uid, gid = (identity.uid, identity.gid) if identity is not None else (-1, -1)
        if entry.owner is not None:
            user, group = _split_owner(entry.owner)
            found = _lookup_user(user)
            if found is None:
                raise _recipe_error(recipe, f"{key}.owner", f"user {user!r} does not exist")
            uid, gid = found.pw_uid, found.pw_gid
            if group is not None:
                g = _lookup_group(group)
                if g is None:
                    raise _recipe_error(recipe, f"{key}.owner", f"group {group!r} does not exist")
                gid = g
        if not host.root and (uid not in {-1, host.euid} or gid not in {-1, os.getegid()}):
            gaps.add(f"{key}.owner", f"the agent is not root and cannot chown {path}")
            uid, gid = -1, -1
        mode = int(entry.mode, 8) if entry.mode is not None else None
        create: Literal["dir", "file"] = "dir" if entry.path.endswith("/") else "file"
        preps.append(
            FilePrep(path=path.rstrip("/") or "/", create=create, mode=mode, uid=uid, gid=gid)
        )
    return tuple(preps)


def _devices(recipe: Recipe, identity: Identity | None, gaps: _Gaps) -> tuple[int, ...]:
    """Groups that grant the component access to its devices (added to its groups)."""
    extra: list[int] = []
    for index, device in enumerate(recipe.permissions.devices):
        key = f"permissions.devices[{index}]"
        try:
            st = Path(device).stat()
        except OSError as exc:
            gaps.add(key, f"device {device} is not present: {exc.strerror}")
            continue
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise _recipe_error(recipe, key, f"{device} is not a device node")
        if identity is None:
            continue  # the component runs as the agent's user, which can open it or not
        if st.st_uid == identity.uid or st.st_gid in identity.groups:
            continue
        if st.st_gid == 0:
            gaps.add(
                key,
                f"{device} belongs to group root; give it a dedicated group (a udev rule) so "
                "access can be granted through that group",
            )
            continue
        if st.st_mode & 0o060 == 0:
            gaps.add(key, f"{device}'s group {st.st_gid} has no read/write permission")
        extra.append(st.st_gid)
    return tuple(extra)


def _namespaces(
    requested: Iterable[NamespaceName],
    host: HostFacts,
    gaps: _Gaps,
    writable: Sequence[str],
) -> Namespaces:
    wanted: set[str] = set(requested)
    unknown = wanted - {"pid", "net", "mount"}
    if unknown:
        raise AgentConfigError(
            f"unknown namespaces {sorted(unknown)} (known: pid, net, mount)", key="namespaces"
        )
    if wanted and not host.root:
        for name in sorted(wanted):
            gaps.add(f"namespaces.{name}", "private namespaces need root")
        return Namespaces()
    return Namespaces(
        pid="pid" in wanted,
        net="net" in wanted,
        mount="mount" in wanted,
        writable=tuple(dict.fromkeys(writable)) if "mount" in wanted else (),
    )


def asks_for_isolation(recipe: Recipe, namespaces: Iterable[NamespaceName] = ()) -> bool:
    """Whether a recipe asks for any control at all.

    A recipe that sets nothing in ``security``, ``resources`` or ``permissions`` (and gets
    no namespaces from the agent config) asks for nothing; unless ``[isolation]
    isolate_all`` is set, the agent then runs it without the launcher: a plain exec,
    ~20 ms faster per start than going through the launcher's interpreter (and tracked
    by its process group only, not by a cgroup).
    """
    sec, res, perm = recipe.security, recipe.resources, recipe.permissions
    return bool(
        sec.run_as is not None
        or sec.capabilities
        or sec.seccomp_profile is not None
        or sec.apparmor_profile is not None
        or sec.no_new_privileges is not None
        or any(getattr(res, field) is not None for field in res.__struct_fields__)
        or perm.files
        or perm.devices
        or tuple(namespaces)
    )


def policy_for(
    recipe: Recipe,
    *,
    component: str | None = None,
    cgroup_root: str = "keystone",
    mode: Mode = "best_effort",
    namespaces: Iterable[NamespaceName] = (),
    work_dir: str | None = None,
    writable_paths: Sequence[str] = (),
    privileged: bool = False,
    create_user: bool = False,
    host: HostFacts | None = None,
) -> IsolationPolicy:
    """Resolve what the launcher must enforce for one run of ``recipe`` on this host.

    Unset ``security.seccomp_profile`` means ``default`` and unset ``no_new_privileges``
    means on: whoever gets a policy gets least privilege by default.

    ``privileged`` is for install scripts with ``require_privilege``: they keep the
    agent's identity and capabilities and get no seccomp, AppArmor or namespaces, but
    still run inside the component's cgroup with its limits.
    """
    host = host or probe_host()
    name = component or recipe.name
    gaps = _Gaps(name, mode)
    sec = recipe.security
    ns_names = () if privileged else tuple(namespaces)
    extra_tasks = 2 if "pid" in ns_names else 0
    cgroup = _cgroup(recipe, name, host, gaps, cgroup_root=cgroup_root, extra_tasks=extra_tasks)
    rlimits = _rlimits(recipe, host, gaps)
    nice, ioprio = _nice(recipe, host, gaps)
    if privileged:
        return IsolationPolicy(
            component=name,
            mode=mode,
            arch=host.arch,
            privileged=True,
            capabilities=tuple(_caps.names_of(host.caps_effective)),
            drop_bounding=False,
            no_new_privileges=False,
            rlimits=rlimits,
            nice=nice,
            ioprio=ioprio,
            cgroup=cgroup,
            warnings=gaps.check(),
        )
    identity = _identity(recipe, name, host, gaps, create_user=create_user)
    device_groups = _devices(recipe, identity, gaps)
    if identity is not None and device_groups:
        identity = msgspec.structs.replace(
            identity, groups=tuple(sorted({*identity.groups, *device_groups}))
        )
    kept, drop_bounding = _capabilities(recipe, host, gaps)
    files = _files(recipe, identity, host, gaps, work_dir)
    writable = [*([work_dir] if work_dir else []), *writable_paths, *(f.path for f in files)]
    seccomp = _seccomp(recipe, host, kept, gaps)
    apparmor = _apparmor(recipe, host, gaps)
    ns = _namespaces(ns_names, host, gaps, writable)
    return IsolationPolicy(
        component=name,
        mode=mode,
        arch=host.arch,
        identity=identity,
        capabilities=kept,
        drop_bounding=drop_bounding,
        no_new_privileges=sec.no_new_privileges is not False,
        seccomp=seccomp,
        apparmor_profile=apparmor,
        rlimits=rlimits,
        nice=nice,
        ioprio=ioprio,
        cgroup=cgroup,
        namespaces=ns,
        files=files,
        warnings=gaps.check(),
    )
