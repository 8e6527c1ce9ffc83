"""``python -m bench``: run the selected suites, print their tables, write the results JSON.

Exit status: 0 when the bench ran to the end (even if a supervisor failed or KeyStone
missed a goal: those are results, printed and recorded), 1 when the bench itself broke,
130 when interrupted. Every process the bench started is gone when it exits, whichever of
those it is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from bench import procs
from bench.context import BENCH_DIR, Context, Options
from bench.install import Installer
from bench.machine import machine_facts
from bench.plot import plot_restart_latency
from bench.report import SuiteResult
from bench.stamps import build_stamp
from bench.suites import REGISTRY, load
from bench.supervisors import PEER_NAMES, KeyStone, peers

__all__ = ["main"]

SCHEMA = "keystone-bench/1"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="KeyStone's benchmarks: KeyStone side by side with supervisord, runit "
        "and s6, and the agent's own figures. See docs/benchmarks.md.",
    )
    parser.add_argument(
        "--suite",
        action="append",
        choices=["all", *REGISTRY],
        help="suite to run (repeatable; default: all)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="N = 3, one trial, short windows (for the tests)"
    )
    parser.add_argument("--n", type=int, action="append", help="children per run (repeatable)")
    parser.add_argument("--trials", type=int, help="cold starts per configuration (default 5)")
    parser.add_argument("--kills", type=int, help="kill -9 per configuration (default 20)")
    parser.add_argument("--kill-spacing", type=float, help="seconds between kills (default 1.5)")
    parser.add_argument("--settle", type=float, help="seconds before memory is read (default 3)")
    parser.add_argument("--idle", type=float, help="idle CPU window, supervisors suite (30)")
    parser.add_argument("--agent-idle", type=float, help="idle CPU window, agent suite (60)")
    parser.add_argument(
        "--only",
        action="append",
        choices=["keystone", *PEER_NAMES],
        help="supervisors suite: run only these (repeatable)",
    )
    parser.add_argument(
        "--keystone-apply",
        choices=["api", "cli"],
        default="api",
        help="how KeyStone's cold start applies its deployment (default: api)",
    )
    parser.add_argument(
        "--no-install", action="store_true", help="never install peers; skip missing ones"
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=BENCH_DIR / "results",
        help="where the JSON (and PNG) go (default: bench/results)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="parent of the scratch directory (default: TMPDIR)",
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep configs and logs")
    args = parser.parse_args(argv)
    if args.kill_spacing is not None and args.kill_spacing < 1.1:
        parser.error("--kill-spacing must exceed every restart throttle and backoff reset (1 s)")
    return args


def _options(args: argparse.Namespace) -> Options:
    base = (
        Options(ns=(3,), trials=1, kills=2, settle=1.0, idle=1.0, agent_idle=2.0, smoke=True)
        if args.smoke
        else Options()
    )
    overrides: dict[str, Any] = {"keystone_apply": args.keystone_apply}
    for name in ("trials", "kills", "kill_spacing", "settle", "idle", "agent_idle"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.n:
        overrides["ns"] = tuple(args.n)
    return Options(**{**base.as_json(), **overrides})


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    raise KeyboardInterrupt


def _versions(peers_dir: Path) -> dict[str, str]:
    versions = {"keystone": KeyStone().version()}
    for name, sup in peers(peers_dir).items():
        try:
            versions[name] = sup.version()
        except (OSError, AssertionError):
            versions[name] = "not installed"
    return versions


def _print_result(result: SuiteResult) -> None:
    print(f"\n=== suite {result.name}: {result.summary}\n")
    for table in result.tables:
        print(table.render())
        print()
    if result.goals:
        print("KeyStone's goals:")
        for goal in result.goals:
            print("  " + goal.line())
        print()
    for name, reason in result.skipped.items():
        print(f"skipped {name}: {reason}")
    for error in result.errors:
        print(f"error: {error}")
    for note in result.notes:
        print(f"note: {note}")
    if result.configurations:
        print("\nConfigurations:")
        for name, conf in result.configurations.items():
            print(f"--- {name}: {conf.get('version', '')}")
            if "restart_setting" in conf:
                print(f"    restart: {conf['restart_setting']}")
            shown = conf.get("by_n") or {"": conf}
            for n, each in shown.items():
                if n:
                    print(f"    N={n}:")
                if each.get("env"):
                    print(f"    env: {each['env']}")
                print(f"    $ {' '.join(each['command'])}")
                for path, text in each["files"].items():
                    print(f"    {path}:")
                    print("      " + text.rstrip().replace("\n", "\n      "))
                for note in each.get("notes", []):
                    print(f"    {note}")


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    partial.replace(path)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    options = _options(args)
    names = (
        list(REGISTRY) if not args.suite or "all" in args.suite else list(dict.fromkeys(args.suite))
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C tears down in order even when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    procs.become_subreaper()

    started = datetime.datetime.now(datetime.UTC)
    stamp_name = started.strftime("%Y%m%dT%H%M%SZ")
    out = args.results_dir / f"{stamp_name}.json"
    peers_dir = BENCH_DIR / ".peers"
    installer = Installer.for_this_process(peers_dir, no_install=args.no_install)
    installer.log = lambda m: print(m, file=sys.stderr, flush=True)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ksb-", dir=args.workdir))
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": None,
        "status": "running",
        "command": [sys.executable, "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
        "options": options.as_json(),
        "machine": {},
        "suites": {},
    }
    status, code = "complete", 0
    try:
        stamp = build_stamp(BENCH_DIR / "stamp.c", BENCH_DIR / ".build")
        ctx = Context(
            options=options,
            stamp=stamp,
            workdir=workdir,
            installer=installer,
            peers_dir=peers_dir,
            only=tuple(args.only or ()),
        )
        for name in names:
            suite = load(name)
            began = time.monotonic()
            try:
                result = suite.run(ctx)
            except Exception as exc:  # a broken suite must not lose the others' results
                result = SuiteResult(name, suite.summary, errors=[f"suite crashed: {exc!r}"])
                result.data["traceback"] = traceback.format_exc()
                print(traceback.format_exc(), file=sys.stderr)
                code = 1
            doc["suites"][name] = {**result.as_json(), "duration_s": time.monotonic() - began}
            _print_result(result)
            if name == "supervisors":
                try:
                    png = plot_restart_latency(result.data.get("runs", []), out.with_suffix(".png"))
                except Exception as exc:  # the plot is optional; a matplotlib quirk is not fatal
                    print(f"bench: no plot: {exc!r}", file=sys.stderr)
                    png = None
                if png is not None:
                    doc["suites"][name]["plot"] = str(png)
    except KeyboardInterrupt:
        status, code = "interrupted", 130
        print("\nbench: interrupted; stopping everything it started", file=sys.stderr)
    except Exception:
        status, code = "crashed", 1
        traceback.print_exc()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the teardown undisturbed
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.sweep()
        doc["status"] = status
        doc["finished_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        doc["machine"] = machine_facts(_versions(peers_dir))
        _write(out, doc)
        if args.keep_workdir:
            print(f"bench: configs and logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"\nresults: {out}")
        sys.stdout.flush()
    sys.exit(code)
