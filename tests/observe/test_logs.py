"""The agent's log: record formats, events as log lines, configuration, forwarding of
component output, and the disk budget across every log file."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from keystone_edge.config import AgentConfig, LoggingSection
from keystone_edge.errors import AgentConfigError
from keystone_edge.observe.events import EventBus
from keystone_edge.observe.logs import (
    AGENT_LOG_NAME,
    ComponentLogTap,
    EventLogger,
    JsonFormatter,
    LogBudget,
    TextFormatter,
    configure_logging,
)
from keystone_edge.runners.logfile import RotatingLog


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def make_record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("keystone_edge.test")
    record = logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, "started %s", ("x",), None, extra=extra
    )
    record.created = 1_700_000_000.25
    return record


def test_json_lines_carry_the_fields() -> None:
    record = make_record(component="com.a", deployment_id="d-1", attempt=3, path=Path("/x"))
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["timestamp"] == "2023-11-14T22:13:20.250Z"
    assert data["level"] == "warning"
    assert data["logger"] == "keystone_edge.test"
    assert data["message"] == "started x"
    assert data["component"] == "com.a"
    assert data["deployment_id"] == "d-1"
    assert data["attempt"] == 3
    assert data["path"] == "/x"
    assert "ValueError: boom" in data["exception"]
    assert list(data)[:6] == [
        "timestamp",
        "level",
        "logger",
        "message",
        "component",
        "deployment_id",
    ]


def test_json_has_no_nulls_and_keeps_its_own_keys() -> None:
    data = json.loads(JsonFormatter().format(make_record(level="shadow", component=None)))
    assert "component" not in data
    assert data["level"] == "warning"
    assert data["extra_level"] == "shadow"


def test_text_for_people() -> None:
    line = TextFormatter().format(make_record(component="com.a", detail="two words"))
    assert ' WARNING keystone_edge.test: started x component=com.a detail="two words"' in line


def test_events_become_log_lines_with_their_fields() -> None:
    collect = Collect()
    logger = logging.getLogger("keystone_edge.test.events")
    logger.addHandler(collect)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    bus = EventBus()
    bus.subscribe(EventLogger(logger))
    bus.publish(
        "component.state",
        component="com.a",
        version="1.0.0",
        from_state="RUNNING",
        to_state="FAILED",
        trigger="GIVE_UP",
        reason="exited with code 3; backoff.max_retries is 0",
        pid=None,
        exit_code=3,
        signal=None,
    )
    bus.publish(
        "deployment.step",
        deployment_id="d-1",
        step="fetch",
        component="com.a",
        status="failed",
        error="404",
    )
    bus.publish("deployment.done", deployment_id="d-1", status="succeeded", error=None)
    first, step, done = collect.records
    assert first.levelno == logging.WARNING
    assert first.getMessage() == (
        "com.a 1.0.0: RUNNING -> FAILED: exited with code 3; backoff.max_retries is 0"
    )
    fields = json.loads(JsonFormatter().format(first))
    assert fields["component"] == "com.a"
    assert fields["exit_code"] == 3
    assert fields["event"] == "component.state"
    assert "pid" not in fields
    assert step.levelno == logging.WARNING
    assert json.loads(JsonFormatter().format(step))["deployment_id"] == "d-1"
    assert done.levelno == logging.INFO


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("keystone_edge.noisy").setLevel(logging.NOTSET)


def logging_config(**data: object) -> LoggingSection:
    return msgspec.convert({"logging": data}, AgentConfig, dec_hook=_units).logging


def _units(type_: type, value: object) -> object:
    return type_.parse(value)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_file_and_stderr_with_levels(tmp_path: Path) -> None:
    stderr = io.StringIO()
    setup = configure_logging(
        logging_config(sinks=["file", "stderr"], levels={"keystone_edge.noisy": "error"}),
        level="info",
        logs_dir=tmp_path,
        device_id="dev-1",
        stderr=stderr,
    )
    try:
        logging.getLogger("keystone_edge.agent").info("hello", extra={"component": "com.a"})
        logging.getLogger("keystone_edge.noisy").warning("suppressed")
        logging.getLogger("keystone_edge.agent").debug("below the root level")
    finally:
        setup.close()
    lines = (tmp_path / AGENT_LOG_NAME).read_text().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["hello"]
    assert json.loads(lines[0])["component"] == "com.a"
    # Not a terminal: JSON there too.
    assert json.loads(stderr.getvalue())["message"] == "hello"


@pytest.mark.usefixtures("restore_logging")
def test_loki_without_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match=r"logging\.loki\.url"):
        configure_logging(
            logging_config(sinks=["loki"]), level="info", logs_dir=tmp_path, device_id="d"
        )


def test_unknown_sink_is_refused_by_the_config() -> None:
    with pytest.raises(msgspec.ValidationError, match="sinks"):
        logging_config(sinks=["kafka"])


def test_component_output_is_forwarded_with_its_component(tmp_path: Path) -> None:
    collect = Collect()
    tap = ComponentLogTap(None, [collect])
    log = RotatingLog(tmp_path / "com.a.log", 1 << 20, 1, observer=tap)
    out = log.stream("out")
    out.feed(b"first line\nsecond")
    out.feed(b" line\n")
    log.stream("err").feed(b"oops\n")
    assert [(r.getMessage(), r.component, r.stream) for r in collect.records] == [  # type: ignore[attr-defined]
        ("first line", "com.a", "out"),
        ("second line", "com.a", "out"),
        ("oops", "com.a", "err"),
    ]
    # The component's own file has them too.
    assert len((tmp_path / "com.a.log").read_text().splitlines()) == 3


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def test_budget_deletes_the_oldest_unheld_files_first(tmp_path: Path) -> None:
    now = time.time()
    for index, name in enumerate(["old.log.2", "old.log.1", "gone.log", "recent.log.1"]):
        path = tmp_path / name
        path.write_bytes(b"x" * 40_000)
        os.utime(path, (now - 1000 + index, now - 1000 + index))
    budget = LogBudget(tmp_path, 100_000)  # 160 kB there: down to 90 kB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone.log", "recent.log.1"]
    assert budget.used_bytes == 80_000
    assert budget.deleted_files == 2


def test_budget_holds_under_a_flood_across_files(tmp_path: Path) -> None:
    cap = 300_000
    budget = LogBudget(tmp_path, cap)
    tap = ComponentLogTap(budget)
    logs = [RotatingLog(tmp_path / f"c{n}.log", 150_000, 3, observer=tap) for n in range(3)]
    line = b"y" * 99 + b"\n"
    # Per-file caps alone would allow 3 x 150 kB x 4 = 1.8 MB, the current files alone 450 kB.
    for _ in range(200):
        for log in logs:
            log.stream("out").feed(line * 50)
        assert dir_size(tmp_path) <= cap + len(line) * 50
    assert all(log.max_bytes < 150_000 for log in logs)  # shrunk so that all of them fit
    assert any(tmp_path.glob("*.log.1"))
    for log in logs:
        assert log.path.exists()  # the files being written are never deleted
        log.close()


def test_budget_leaves_files_alone_under_the_cap(tmp_path: Path) -> None:
    (tmp_path / "a.log.3").write_bytes(b"x" * 1000)
    budget = LogBudget(tmp_path, 10_000)
    log = RotatingLog(tmp_path / "a.log", 1000, 3, observer=ComponentLogTap(budget))
    log.stream("out").feed(b"z" * 500 + b"\n")
    assert (tmp_path / "a.log.3").exists()
    assert log.max_bytes == 1000
    log.close()
