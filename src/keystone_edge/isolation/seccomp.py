"""Seccomp profiles: KeyStone's default deny-list, OCI/Docker JSON profiles, and the BPF
program that enforces one.

Rules this module enforces:

- ``default`` denies a fixed list of dangerous system calls (:data:`DEFAULT_DENY`) with
  ``EPERM``, denies creating user namespaces (``clone``/``unshare`` with
  ``CLONE_NEWUSER``), answers ``clone3`` with ``ENOSYS`` (its flags live in memory a filter
  cannot read, so C libraries fall back to ``clone``, whose flags it can; Docker does the
  same) and allows everything else.
- A filter is compiled for the host's architecture and its 32-bit compat architecture
  (``x86`` on ``x86_64``, ``arm`` on ``aarch64``), each with its own system call numbers,
  so a 32-bit program cannot reach a denied call under another number. Any other
  architecture, and the x32 ABI, is killed: a deny-list is only as good as its numbers.
- An OCI/Docker profile (``path:FILE``) keeps its meaning: ``defaultAction``,
  per-rule ``action``/``errnoRet``, argument filters, ``includes``/``excludes`` on
  capabilities, architectures and ``minKernel`` (evaluated against the component's kept
  capabilities and this host). Rules are tried in file order; the first match decides.
  Names this host's tables do not know are skipped, as runc does.
- Compiling is pure: profile in, ``struct sock_filter[]`` bytes out. :func:`evaluate`
  runs a program on a given system call so tests (and curious operators) can check what
  a filter decides without installing it.
"""

from __future__ import annotations

import errno
import platform
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Final, Literal

import msgspec

__all__ = [
    "ARCHES",
    "DEFAULT_DENY",
    "Action",
    "ArgCondition",
    "SeccompProfile",
    "SeccompRule",
    "compile_filter",
    "default_profile",
    "describe_result",
    "evaluate",
    "host_arch",
    "load_oci_profile",
    "resolve",
]

Action = Literal["allow", "errno", "kill_process", "kill_thread", "trap", "log", "trace"]
Op = Literal["eq", "ne", "lt", "le", "gt", "ge", "masked_eq"]


class ArgCondition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``args[index] <op> value``; for ``masked_eq``: ``args[index] & value == value_two``."""

    index: int
    op: Op
    value: int
    value_two: int = 0


class SeccompRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    names: tuple[str, ...]
    action: Action
    errno: int = errno.EPERM
    # All conditions must hold (AND); several rules for one name are alternatives (OR).
    args: tuple[ArgCondition, ...] = ()


class SeccompProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A resolved profile: what to do with each system call on which architectures."""

    source: str  # "default" or "path:/etc/keystone/seccomp.json"
    default_action: Action
    arches: tuple[str, ...]  # filtered architectures; system calls from any other are killed
    rules: tuple[SeccompRule, ...]
    default_errno: int = errno.EPERM


class _Arch(msgspec.Struct, frozen=True):
    audit: int  # AUDIT_ARCH_* from linux/audit.h
    bits: int
    compat: str | None


ARCHES: Final[dict[str, _Arch]] = {
    "x86_64": _Arch(audit=0xC000003E, bits=64, compat="x86"),
    "aarch64": _Arch(audit=0xC00000B7, bits=64, compat="arm"),
    "x86": _Arch(audit=0x40000003, bits=32, compat=None),
    "arm": _Arch(audit=0x40000028, bits=32, compat=None),
}
_MACHINES: Final[dict[str, str]] = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "i386": "x86",
    "i486": "x86",
    "i586": "x86",
    "i686": "x86",
    "armv6l": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "arm": "arm",
}
# OCI "architectures"/"archMap" names and Docker's "includes.arches" (Go's GOARCH) names.
_OCI_ARCHES: Final[dict[str, str]] = {
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_ARM": "arm",
    "amd64": "x86_64",
    "x86_64": "x86_64",
    "arm64": "aarch64",
    "aarch64": "aarch64",
    "386": "x86",
    "x86": "x86",
    "arm": "arm",
}

CLONE_NEWUSER: Final = 0x10000000
_X32_SYSCALL_BIT: Final = 0x40000000

DEFAULT_DENY: Final[tuple[str, ...]] = (
    # Replacing or extending the kernel, rebooting it.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "reboot",
    "uselib",
    # Reading or steering other processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "perf_event_open",
    # Mounts, old and new API, and escaping through file handles.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "mount_setattr",
    "open_by_handle_at",
    "quotactl",
    "quotactl_fd",
    "nfsservctl",
    # Changing namespaces (creating user namespaces is filtered by flag below).
    "setns",
    # BPF programs, kernel keyrings, page-fault handling in user space.
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "lookup_dcookie",
    # io_uring performs file and network operations that seccomp never sees.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # Swap, accounting, the kernel log, system clocks.
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "_sysctl",
    "vhangup",
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    "clock_adjtime",
    "clock_adjtime64",
    "adjtimex",
    # x86 port I/O and virtual 8086 mode.
    "ioperm",
    "iopl",
    "vm86",
    "vm86old",
)

_RET: Final[dict[Action, int]] = {
    "kill_process": 0x80000000,
    "kill_thread": 0x00000000,
    "trap": 0x00030000,
    "errno": 0x00050000,
    "trace": 0x7FF00000,
    "log": 0x7FFC0000,
    "allow": 0x7FFF0000,
}
_SECCOMP_RET_ACTION_FULL: Final = 0xFFFF0000
_SECCOMP_RET_DATA: Final = 0x0000FFFF

# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
_LD_W_ABS: Final = 0x20
_ALU_AND_K: Final = 0x54
_JMP_JA: Final = 0x05
_JMP_JEQ_K: Final = 0x15
_JMP_JGT_K: Final = 0x25
_JMP_JGE_K: Final = 0x35
_JMP_JSET_K: Final = 0x45
_RET_K: Final = 0x06
_BPF_MAXINSNS: Final = 4096

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
_OFF_NR: Final = 0
_OFF_ARCH: Final = 4
_OFF_ARGS: Final = 16


def host_arch(machine: str | None = None) -> str:
    """This host's architecture in seccomp terms; ``ValueError`` if unsupported."""
    machine = machine or platform.machine()
    try:
        return _MACHINES[machine]
    except KeyError:
        raise ValueError(
            f"seccomp filters are not supported on {machine!r} "
            f"(supported: x86_64, aarch64, i386, arm)"
        ) from None


def default_profile(native: str) -> SeccompProfile:
    """KeyStone's default deny-list for ``native`` and its compat architecture."""
    arch = ARCHES[native]
    namespaces = ArgCondition(index=0, op="masked_eq", value=CLONE_NEWUSER, value_two=CLONE_NEWUSER)
    return SeccompProfile(
        source="default",
        default_action="allow",
        arches=(native,) if arch.compat is None else (native, arch.compat),
        rules=(
            SeccompRule(names=DEFAULT_DENY, action="errno", errno=errno.EPERM),
            SeccompRule(names=("clone", "unshare"), action="errno", args=(namespaces,)),
            SeccompRule(names=("clone3",), action="errno", errno=errno.ENOSYS),
        ),
    )


def resolve(
    spec: str, *, native: str, capabilities: Collection[str], kernel: str | None = None
) -> SeccompProfile | None:
    """``default`` / ``unconfined`` / ``path:FILE`` -> a profile (``None`` = unconfined).

    ``ValueError`` says what is wrong with the spec or the file.
    """
    if spec == "unconfined":
        return None
    if spec == "default":
        return default_profile(native)
    if spec.startswith("path:"):
        path = Path(spec.removeprefix("path:"))
        if not path.is_absolute():
            raise ValueError(f"seccomp profile path must be absolute, got {str(path)!r}")
        return load_oci_profile(
            path,
            native=native,
            capabilities=capabilities,
            kernel=kernel or platform.release(),
        )
    raise ValueError(
        f"invalid seccomp profile {spec!r}: "
        "expected 'default', 'unconfined' or 'path:/abs/file.json'"
    )


# -- OCI / Docker JSON profiles ------------------------------------------------------------

_OCI_ACTIONS: Final[dict[str, Action]] = {
    "SCMP_ACT_ALLOW": "allow",
    "SCMP_ACT_ERRNO": "errno",
    "SCMP_ACT_KILL": "kill_thread",
    "SCMP_ACT_KILL_THREAD": "kill_thread",
    "SCMP_ACT_KILL_PROCESS": "kill_process",
    "SCMP_ACT_TRAP": "trap",
    "SCMP_ACT_LOG": "log",
    "SCMP_ACT_TRACE": "trace",
}
_OCI_OPS: Final[dict[str, Op]] = {
    "SCMP_CMP_NE": "ne",
    "SCMP_CMP_LT": "lt",
    "SCMP_CMP_LE": "le",
    "SCMP_CMP_EQ": "eq",
    "SCMP_CMP_GE": "ge",
    "SCMP_CMP_GT": "gt",
    "SCMP_CMP_MASKED_EQ": "masked_eq",
}


class _OciArg(msgspec.Struct, rename="camel"):
    index: int
    value: int
    op: str
    value_two: int = 0


class _OciFilter(msgspec.Struct, rename="camel"):
    caps: list[str] = msgspec.field(default_factory=list)
    arches: list[str] = msgspec.field(default_factory=list)
    min_kernel: str | None = None


class _OciSyscall(msgspec.Struct, rename="camel"):
    action: str
    names: list[str] = msgspec.field(default_factory=list)
    name: str | None = None  # Docker's older single-name form
    args: list[_OciArg] | None = None
    errno_ret: int | None = None
    includes: _OciFilter = msgspec.field(default_factory=_OciFilter)
    excludes: _OciFilter = msgspec.field(default_factory=_OciFilter)
    comment: str = ""


class _OciArchMap(msgspec.Struct, rename="camel"):
    architecture: str
    sub_architectures: list[str] = msgspec.field(default_factory=list)


class _OciProfile(msgspec.Struct, rename="camel"):
    default_action: str
    default_errno_ret: int | None = None
    architectures: list[str] = msgspec.field(default_factory=list)
    arch_map: list[_OciArchMap] | None = None
    syscalls: list[_OciSyscall] | None = None
    flags: list[str] | None = None
    listener_path: str | None = None


def _kernel_version(release: str) -> tuple[int, int]:
    parts: list[int] = []
    for piece in release.split(".")[:2]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits) if digits else 0)
    while len(parts) < 2:
        parts.append(0)
    return parts[0], parts[1]


def _action(name: str, where: str) -> Action:
    try:
        return _OCI_ACTIONS[name]
    except KeyError:
        raise ValueError(
            f"{where}: unsupported action {name!r} (supported: {', '.join(_OCI_ACTIONS)})"
        ) from None


def load_oci_profile(
    path: Path, *, native: str, capabilities: Collection[str], kernel: str
) -> SeccompProfile:
    """Load an OCI runtime-spec / Docker seccomp JSON profile for this host and component.

    ``capabilities`` are the component's kept capabilities (``CAP_*`` names), which decide
    Docker's ``includes.caps``/``excludes.caps``; ``kernel`` decides ``minKernel``.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read seccomp profile {path}: {exc.strerror}") from exc
    try:
        doc = msgspec.json.decode(raw, type=_OciProfile)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{path}: not an OCI seccomp profile: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from exc

    listed: set[str] = set()
    for name in doc.architectures:
        if name in _OCI_ARCHES:
            listed.add(_OCI_ARCHES[name])
    for entry in doc.arch_map or ():
        main = _OCI_ARCHES.get(entry.architecture)
        if main is None:
            continue
        listed.add(main)
        listed.update(_OCI_ARCHES[sub] for sub in entry.sub_architectures if sub in _OCI_ARCHES)
    compat = ARCHES[native].compat
    # Like libseccomp, a profile without architectures filters the native one.
    arches = [native]
    if compat is not None and compat in listed:
        arches.append(compat)

    kept = {c.upper() for c in capabilities}
    version = _kernel_version(kernel)
    rules: list[SeccompRule] = []
    default_errno = doc.default_errno_ret if doc.default_errno_ret is not None else errno.EPERM
    for number, call in enumerate(doc.syscalls or ()):
        where = f"{path}: syscalls[{number}]"
        if not _applies(call.includes, call.excludes, kept=kept, native=native, kernel=version):
            continue
        names = (*call.names, *((call.name,) if call.name else ()))
        if not names:
            raise ValueError(f"{where}: no system call names")
        conditions: list[ArgCondition] = []
        for arg in call.args or ():
            op = _OCI_OPS.get(arg.op)
            if op is None:
                raise ValueError(
                    f"{where}: unsupported argument operator {arg.op!r} "
                    f"(supported: {', '.join(_OCI_OPS)})"
                )
            if not 0 <= arg.index <= 5:
                raise ValueError(f"{where}: argument index {arg.index} is not 0..5")
            conditions.append(
                ArgCondition(
                    index=arg.index,
                    op=op,
                    value=arg.value & 0xFFFFFFFFFFFFFFFF,
                    value_two=arg.value_two & 0xFFFFFFFFFFFFFFFF,
                )
            )
        rules.append(
            SeccompRule(
                names=names,
                action=_action(call.action, where),
                errno=call.errno_ret if call.errno_ret is not None else errno.EPERM,
                args=tuple(conditions),
            )
        )
    return SeccompProfile(
        source=f"path:{path}",
        default_action=_action(doc.default_action, f"{path}: defaultAction"),
        default_errno=default_errno,
        arches=tuple(arches),
        rules=tuple(rules),
    )


def _applies(
    includes: _OciFilter,
    excludes: _OciFilter,
    *,
    kept: set[str],
    native: str,
    kernel: tuple[int, int],
) -> bool:
    # Docker's semantics (moby profiles/seccomp): a rule applies when the component holds
    # *all* of includes.caps and *none* of excludes.caps.
    if includes.caps and not all(c.upper() in kept for c in includes.caps):
        return False
    if includes.arches and native not in {_OCI_ARCHES.get(a) for a in includes.arches}:
        return False
    if includes.min_kernel and kernel < _kernel_version(includes.min_kernel):
        return False
    if excludes.caps and any(c.upper() in kept for c in excludes.caps):
        return False
    if excludes.arches and native in {_OCI_ARCHES.get(a) for a in excludes.arches}:
        return False
    return not (excludes.min_kernel and kernel >= _kernel_version(excludes.min_kernel))


# -- compiling -----------------------------------------------------------------------------


class _Asm:
    """A tiny classic-BPF assembler: forward jumps to labels, resolved at the end."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int | str, int | str, int | str]] = []
        self.labels: dict[str, int] = {}
        self._next = 0

    def label(self) -> str:
        self._next += 1
        return f"L{self._next}"

    def place(self, label: str) -> None:
        self.labels[label] = len(self.code)

    def ld(self, offset: int) -> None:
        self.code.append((_LD_W_ABS, 0, 0, offset))

    def and_(self, mask: int) -> None:
        self.code.append((_ALU_AND_K, 0, 0, mask))

    def jump(self, op: int, k: int, jt: int | str, jf: int | str) -> None:
        self.code.append((op, jt, jf, k))

    def ja(self, target: str) -> None:
        self.code.append((_JMP_JA, 0, 0, target))

    def ret(self, value: int) -> None:
        self.code.append((_RET_K, 0, 0, value))

    def assemble(self) -> bytes:
        if len(self.code) > _BPF_MAXINSNS:
            raise ValueError(
                f"seccomp filter too long: {len(self.code)} instructions "
                f"(the kernel accepts at most {_BPF_MAXINSNS})"
            )
        out = bytearray()
        for pos, (op, jt, jf, k) in enumerate(self.code):
            jt_off = self._offset(pos, jt)
            jf_off = self._offset(pos, jf)
            k_val = self._offset(pos, k) if isinstance(k, str) else k
            if op != _JMP_JA and not (0 <= jt_off <= 255 and 0 <= jf_off <= 255):
                raise ValueError("seccomp filter rule too long for a conditional jump")
            out += op.to_bytes(2, "little")
            out += bytes((jt_off, jf_off))
            out += (k_val & 0xFFFFFFFF).to_bytes(4, "little")
        return bytes(out)

    def _offset(self, pos: int, target: int | str) -> int:
        if isinstance(target, int):
            return target
        return self.labels[target] - pos - 1


def _ret_value(action: Action, errno_value: int) -> int:
    base = _RET[action]
    if action in {"errno", "trace"}:
        return base | (errno_value & _SECCOMP_RET_DATA)
    return base


def _condition(asm: _Asm, cond: ArgCondition, bits: int, fail: str) -> None:
    lo_off = _OFF_ARGS + 8 * cond.index  # little-endian: the low word comes first
    hi_off = lo_off + 4
    value_lo, value_hi = cond.value & 0xFFFFFFFF, cond.value >> 32
    two_lo, two_hi = cond.value_two & 0xFFFFFFFF, cond.value_two >> 32
    passed = asm.label()
    if bits == 32:
        # 32-bit architectures pass 32-bit arguments: compare the low word only.
        asm.ld(lo_off)
        if cond.op == "masked_eq":
            asm.and_(value_lo)
            asm.jump(_JMP_JEQ_K, two_lo, 0, fail)
        elif cond.op == "eq":
            asm.jump(_JMP_JEQ_K, value_lo, 0, fail)
        elif cond.op == "ne":
            asm.jump(_JMP_JEQ_K, value_lo, fail, 0)
        elif cond.op == "gt":
            asm.jump(_JMP_JGT_K, value_lo, 0, fail)
        elif cond.op == "ge":
            asm.jump(_JMP_JGE_K, value_lo, 0, fail)
        elif cond.op == "lt":
            asm.jump(_JMP_JGE_K, value_lo, fail, 0)
        else:  # le
            asm.jump(_JMP_JGT_K, value_lo, fail, 0)
        return
    if cond.op == "masked_eq":
        asm.ld(hi_off)
        asm.and_(value_hi)
        asm.jump(_JMP_JEQ_K, two_hi, 0, fail)
        asm.ld(lo_off)
        asm.and_(value_lo)
        asm.jump(_JMP_JEQ_K, two_lo, 0, fail)
    elif cond.op == "eq":
        asm.ld(hi_off)
        asm.jump(_JMP_JEQ_K, value_hi, 0, fail)
        asm.ld(lo_off)
        asm.jump(_JMP_JEQ_K, value_lo, 0, fail)
    elif cond.op == "ne":
        asm.ld(hi_off)
        asm.jump(_JMP_JEQ_K, value_hi, 0, passed)
        asm.ld(lo_off)
        asm.jump(_JMP_JEQ_K, value_lo, fail, passed)
    elif cond.op in {"gt", "ge"}:
        asm.ld(hi_off)
        asm.jump(_JMP_JGT_K, value_hi, passed, 0)
        asm.jump(_JMP_JEQ_K, value_hi, 0, fail)
        asm.ld(lo_off)
        asm.jump(_JMP_JGT_K if cond.op == "gt" else _JMP_JGE_K, value_lo, passed, fail)
    else:  # lt / le: the negation of ge / gt
        asm.ld(hi_off)
        asm.jump(_JMP_JGT_K, value_hi, fail, 0)
        asm.jump(_JMP_JEQ_K, value_hi, 0, passed)
        asm.ld(lo_off)
        asm.jump(_JMP_JGE_K if cond.op == "lt" else _JMP_JGT_K, value_lo, fail, passed)
    asm.place(passed)


def compile_filter(profile: SeccompProfile, native: str) -> bytes:
    """Compile ``profile`` into a classic BPF program (``struct sock_filter[]``, LE)."""
    from keystone_edge.isolation._syscalls import SYSCALLS

    arch = ARCHES[native]
    arches = [native] + [a for a in profile.arches if a == arch.compat]
    if native not in profile.arches:
        raise ValueError(f"seccomp profile {profile.source} does not cover {native}")
    asm = _Asm()
    asm.ld(_OFF_ARCH)
    sections = {name: asm.label() for name in arches}
    for name in arches:
        asm.jump(_JMP_JEQ_K, ARCHES[name].audit, 0, 1)
        asm.ja(sections[name])
    asm.ret(_RET["kill_process"])
    default = _ret_value(profile.default_action, profile.default_errno)
    for name in arches:
        asm.place(sections[name])
        table = SYSCALLS[name]
        bits = ARCHES[name].bits
        asm.ld(_OFF_NR)
        if name == "x86_64":
            # x32 system calls carry bit 30 and other numbers: never let them through.
            asm.jump(_JMP_JGE_K, _X32_SYSCALL_BIT, 0, 1)
            asm.ret(_RET["kill_process"])
        loaded_nr = True
        for rule in profile.rules:
            value = _ret_value(rule.action, rule.errno)
            for syscall in rule.names:
                nr = table.get(syscall)
                if nr is None:
                    continue
                if not loaded_nr:
                    asm.ld(_OFF_NR)
                nxt = asm.label()
                asm.jump(_JMP_JEQ_K, nr, 0, nxt)
                for cond in rule.args:
                    _condition(asm, cond, bits, nxt)
                asm.ret(value)
                asm.place(nxt)
                loaded_nr = not rule.args
        asm.ret(default)
    return asm.assemble()


# -- reading programs ----------------------------------------------------------------------


def evaluate(program: bytes, *, arch: int, nr: int, args: Sequence[int] = (), ip: int = 0) -> int:
    """Run ``program`` on one system call like the kernel would; return the SECCOMP_RET."""
    padded = [*args, 0, 0, 0, 0, 0, 0][:6]
    data = (
        (nr & 0xFFFFFFFF).to_bytes(4, "little")
        + arch.to_bytes(4, "little")
        + ip.to_bytes(8, "little")
        + b"".join((a & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little") for a in padded)
    )
    insns = [
        (
            int.from_bytes(program[i : i + 2], "little"),
            program[i + 2],
            program[i + 3],
            int.from_bytes(program[i + 4 : i + 8], "little"),
        )
        for i in range(0, len(program), 8)
    ]
    acc = 0
    pc = 0
    while True:
        op, jt, jf, k = insns[pc]
        pc += 1
        if op == _LD_W_ABS:
            acc = int.from_bytes(data[k : k + 4], "little")
        elif op == _ALU_AND_K:
            acc &= k
        elif op == _JMP_JA:
            pc += k
        elif op == _JMP_JEQ_K:
            pc += jt if acc == k else jf
        elif op == _JMP_JGT_K:
            pc += jt if acc > k else jf
        elif op == _JMP_JGE_K:
            pc += jt if acc >= k else jf
        elif op == _JMP_JSET_K:
            pc += jt if acc & k else jf
        elif op == _RET_K:
            return k
        else:
            raise ValueError(f"unexpected BPF opcode {op:#x} at {pc - 1}")


def describe_result(value: int) -> str:
    """``0x50001`` -> ``errno(EPERM)``, ``0x7fff0000`` -> ``allow``."""
    action = value & _SECCOMP_RET_ACTION_FULL
    for name, base in _RET.items():
        if base == action:
            if name in {"errno", "trace"}:
                data = value & _SECCOMP_RET_DATA
                return f"{name}({errno.errorcode.get(data, data)})"
            return name
    return f"unknown({value:#x})"
