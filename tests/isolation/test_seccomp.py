"""The seccomp compiler: program structure, what it decides (run in an emulator), OCI profiles."""

from __future__ import annotations

import ctypes
import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keystone_edge.isolation._syscalls import SYSCALLS
from keystone_edge.isolation.seccomp import (
    ARCHES,
    CLONE_NEWUSER,
    DEFAULT_DENY,
    ArgCondition,
    SeccompProfile,
    SeccompRule,
    compile_filter,
    default_profile,
    describe_result,
    evaluate,
    host_arch,
    load_oci_profile,
    resolve,
)

X86_64 = ARCHES["x86_64"].audit
I386 = ARCHES["x86"].audit
AARCH64 = ARCHES["aarch64"].audit
ARM = ARCHES["arm"].audit


def decide(program: bytes, arch: str, name: str, *args: int) -> str:
    return describe_result(
        evaluate(program, arch=ARCHES[arch].audit, nr=SYSCALLS[arch][name], args=args)
    )


@pytest.fixture(scope="module")
def x86_default() -> bytes:
    return compile_filter(default_profile("x86_64"), "x86_64")


@pytest.fixture(scope="module")
def arm_default() -> bytes:
    return compile_filter(default_profile("aarch64"), "aarch64")


def test_program_is_well_formed(x86_default: bytes) -> None:
    assert len(x86_default) % 8 == 0
    insns = [x86_default[i : i + 8] for i in range(0, len(x86_default), 8)]
    assert len(insns) <= 4096
    # First: load the architecture (BPF_LD|BPF_W|BPF_ABS, offset 4).
    assert int.from_bytes(insns[0][:2], "little") == 0x20
    assert int.from_bytes(insns[0][4:], "little") == 4
    # Every conditional jump lands inside the program; the last instruction returns.
    for pos, insn in enumerate(insns):
        code = int.from_bytes(insn[:2], "little")
        if code & 0x07 == 0x05 and code != 0x05:
            assert pos + 1 + max(insn[2], insn[3]) < len(insns)
    assert int.from_bytes(insns[-1][:2], "little") == 0x06


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_default_denies_the_dangerous_calls(arch: str) -> None:
    program = compile_filter(default_profile(arch), arch)
    for name in ("kexec_load", "init_module", "ptrace", "mount", "bpf", "reboot", "swapon"):
        assert decide(program, arch, name) == "errno(EPERM)", name
    assert decide(program, arch, "keyctl") == "errno(EPERM)"
    for name in ("read", "write", "openat", "execve", "mmap", "exit_group", "setresuid"):
        assert decide(program, arch, name) == "allow", name


def test_every_denied_name_is_known_somewhere() -> None:
    known = set().union(*(table.keys() for table in SYSCALLS.values()))
    assert set(DEFAULT_DENY) <= known


def test_user_namespaces_are_denied_by_flag(x86_default: bytes) -> None:
    assert decide(x86_default, "x86_64", "unshare", CLONE_NEWUSER) == "errno(EPERM)"
    assert decide(x86_default, "x86_64", "unshare", CLONE_NEWUSER | 0x20000) == "errno(EPERM)"
    assert decide(x86_default, "x86_64", "unshare", 0x40000000) == "allow"  # CLONE_NEWNET
    assert decide(x86_default, "x86_64", "clone", CLONE_NEWUSER | 17) == "errno(EPERM)"
    assert decide(x86_default, "x86_64", "clone", 0x01200011) == "allow"  # what fork() passes
    # clone3 hides its flags in memory: C libraries fall back to clone on ENOSYS.
    assert decide(x86_default, "x86_64", "clone3") == "errno(ENOSYS)"


def test_compat_architecture_uses_its_own_numbers(x86_default: bytes, arm_default: bytes) -> None:
    # i386 mount is 21 (x86_64's 21 is access): a 32-bit program cannot slip through.
    assert SYSCALLS["x86"]["mount"] == 21
    assert decide(x86_default, "x86", "mount") == "errno(EPERM)"
    assert decide(x86_default, "x86", "access") == "allow"
    assert decide(x86_default, "x86_64", "access") == "allow"
    assert decide(arm_default, "arm", "ptrace") == "errno(EPERM)"
    assert decide(arm_default, "aarch64", "ptrace") == "errno(EPERM)"


def test_foreign_architectures_and_x32_are_killed(x86_default: bytes) -> None:
    assert describe_result(evaluate(x86_default, arch=AARCH64, nr=0)) == "kill_process"
    x32_read = 0x40000000 | 0
    assert describe_result(evaluate(x86_default, arch=X86_64, nr=x32_read)) == "kill_process"


def test_host_arch() -> None:
    assert host_arch("x86_64") == "x86_64"
    assert host_arch("arm64") == "aarch64"
    assert host_arch("armv7l") == "arm"
    with pytest.raises(ValueError, match="not supported on 'riscv64'"):
        host_arch("riscv64")


def test_resolve_specs(tmp_path: Path) -> None:
    assert resolve("unconfined", native="x86_64", capabilities=()) is None
    default = resolve("default", native="x86_64", capabilities=())
    assert default is not None
    assert default.arches == ("x86_64", "x86")
    with pytest.raises(ValueError, match="must be absolute"):
        resolve("path:profile.json", native="x86_64", capabilities=())
    with pytest.raises(ValueError, match="expected 'default', 'unconfined'"):
        resolve("strict", native="x86_64", capabilities=())
    with pytest.raises(ValueError, match="cannot read seccomp profile"):
        resolve(f"path:{tmp_path}/missing.json", native="x86_64", capabilities=())


DOCKER_LIKE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"names": ["read", "write", "exit_group", "openat", "close"], "action": "SCMP_ACT_ALLOW"},
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
        },
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        },
        {
            "names": ["mount", "umount2"],
            "action": "SCMP_ACT_ALLOW",
            "includes": {"caps": ["CAP_SYS_ADMIN"]},
        },
        {
            "names": ["ptrace"],
            "action": "SCMP_ACT_ALLOW",
            "includes": {"minKernel": "99.0"},
        },
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["not_a_real_syscall"], "action": "SCMP_ACT_ALLOW"},
    ],
}


def write_profile(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(doc))
    return path


def test_docker_style_allow_list(tmp_path: Path) -> None:
    path = write_profile(tmp_path, DOCKER_LIKE)
    profile = load_oci_profile(path, native="x86_64", capabilities=(), kernel="6.1.0-18-amd64")
    assert profile.source == f"path:{path}"
    assert profile.arches == ("x86_64", "x86")
    program = compile_filter(profile, "x86_64")
    assert decide(program, "x86_64", "read") == "allow"
    assert decide(program, "x86", "read") == "allow"
    assert decide(program, "x86_64", "socket") == "errno(EPERM)"  # the default action
    assert decide(program, "x86_64", "personality", 8) == "allow"
    assert decide(program, "x86_64", "personality", 9) == "errno(EPERM)"
    assert decide(program, "x86_64", "personality", 8 | 1 << 32) == "errno(EPERM)"
    assert decide(program, "x86_64", "clone", 0x01200011) == "allow"
    assert decide(program, "x86_64", "clone", CLONE_NEWUSER) == "errno(EPERM)"
    # includes.caps: mount only for components that keep CAP_SYS_ADMIN.
    assert decide(program, "x86_64", "mount") == "errno(EPERM)"
    # includes.minKernel: ptrace only on kernels >= 99.0.
    assert decide(program, "x86_64", "ptrace") == "errno(EPERM)"
    assert decide(program, "x86_64", "kill") == "errno(ENOSYS)"


def test_capabilities_decide_includes_and_excludes(tmp_path: Path) -> None:
    path = write_profile(tmp_path, DOCKER_LIKE)
    profile = load_oci_profile(
        path, native="x86_64", capabilities=("CAP_SYS_ADMIN",), kernel="6.1.0"
    )
    program = compile_filter(profile, "x86_64")
    assert decide(program, "x86_64", "mount") == "allow"
    # The clone rule excludes CAP_SYS_ADMIN holders: clone falls to the default action.
    assert decide(program, "x86_64", "clone", 0x01200011) == "errno(EPERM)"


def test_profile_without_architectures_filters_native_only(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path,
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_KILL_PROCESS"}],
        },
    )
    profile = load_oci_profile(path, native="x86_64", capabilities=(), kernel="6.1")
    program = compile_filter(profile, "x86_64")
    assert decide(program, "x86_64", "mount") == "kill_process"
    assert describe_result(evaluate(program, arch=I386, nr=21)) == "kill_process"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{not json", "invalid JSON"),
        ({"syscalls": []}, "not an OCI seccomp profile"),
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "unsupported action 'SCMP_ACT_NOTIFY'"),
        (
            {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "X"}]},
            r"syscalls\[0\]: unsupported action 'X'",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}],
                    }
                ],
            },
            "argument index 7 is not 0..5",
        ),
    ],
)
def test_bad_profiles_say_what_is_wrong(tmp_path: Path, doc: object, message: str) -> None:
    path = tmp_path / "profile.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(ValueError, match=message):
        load_oci_profile(path, native="x86_64", capabilities=(), kernel="6.1")


U64 = st.integers(min_value=0, max_value=2**64 - 1)
OPS: dict[str, Callable[[int, int, int], bool]] = {
    "eq": lambda a, v, _t: a == v,
    "ne": lambda a, v, _t: a != v,
    "lt": lambda a, v, _t: a < v,
    "le": lambda a, v, _t: a <= v,
    "gt": lambda a, v, _t: a > v,
    "ge": lambda a, v, _t: a >= v,
    "masked_eq": lambda a, v, t: a & v == t,
}


@given(
    op=st.sampled_from(sorted(OPS)),
    arg=U64,
    value=U64,
    two=U64,
    index=st.integers(min_value=0, max_value=5),
)
def test_argument_comparisons_are_64_bit_exact(
    op: str, arg: int, value: int, two: int, index: int
) -> None:
    cond = ArgCondition(index=index, op=op, value=value, value_two=two)  # type: ignore[arg-type]
    profile = SeccompProfile(
        source="test",
        default_action="allow",
        arches=("x86_64",),
        rules=(SeccompRule(names=("ioctl",), action="errno", args=(cond,)),),
    )
    program = compile_filter(profile, "x86_64")
    args = [0] * 6
    args[index] = arg
    got = evaluate(program, arch=X86_64, nr=SYSCALLS["x86_64"]["ioctl"], args=args)
    expected = OPS[op](arg, value, two)
    assert describe_result(got) == ("errno(EPERM)" if expected else "allow")


def test_tables_match_libseccomp() -> None:
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        pytest.skip("libseccomp is not installed")
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    for arch, table in SYSCALLS.items():
        token = lib.seccomp_arch_resolve_name(arch.encode())
        assert token == ARCHES[arch].audit
        for name in ("read", "mount", "ptrace", "unshare", "clone", "clone3", "bpf", "keyctl"):
            if name in table:
                assert lib.seccomp_syscall_resolve_name_arch(token, name.encode()) == table[name]


def test_errno_values_are_what_callers_see() -> None:
    assert describe_result(0x00050000 | errno.EPERM) == "errno(EPERM)"
    assert describe_result(0x7FFF0000) == "allow"
    assert describe_result(0x12345678) == "unknown(0x12345678)"
