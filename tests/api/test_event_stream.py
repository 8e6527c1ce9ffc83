"""GET /v1/events: replay after an id, then live, with no gap and no duplicate."""

from __future__ import annotations

import time

import httpcore
import pytest

from keystone_edge.api._sse import SseParser
from keystone_edge.api.client import AgentClient, EventSubscription
from keystone_edge.observe.events import Event
from tests.api.harness import Http, ServerThread


def _ids(subscription: EventSubscription, count: int) -> list[int]:
    ids: list[int] = []
    for event in subscription:
        ids.append(event.id)
        if len(ids) == count:
            break
    return ids


def _publish(server: ServerThread, count: int) -> list[Event]:
    return [server.publish("tick", n=n) for n in range(count)]


def test_the_wire_format(http: Http, server: ServerThread) -> None:
    event = server.publish("component.state", component="com.a", to_state="RUNNING")
    reply = http.get("/v1/events?follow=0")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert reply.body == (
        b"id: 1\nevent: component.state\n"
        b'data: {"id":1,"ts":%r,"type":"component.state",'
        b'"payload":{"component":"com.a","to_state":"RUNNING"}}\n\n' % event.ts
    )


def test_follow_0_returns_the_backlog_after_since_and_ends(
    client: AgentClient, server: ServerThread
) -> None:
    _publish(server, 5)
    assert [e.id for e in client.events()] == [1, 2, 3, 4, 5]
    assert [e.payload["n"] for e in client.events(since=3)] == [3, 4]
    assert client.events(since=5) == []


def test_the_backlog_is_read_in_pages(client: AgentClient, server: ServerThread) -> None:
    page = server.limits.backlog_page_events
    server.call(lambda: [server.agent.bus.publish("tick") for _ in range(page + 5)])
    assert [e.id for e in client.events(since=3)] == list(range(4, page + 6))


def test_since_replays_then_goes_live_without_gap_or_duplicate(
    client: AgentClient, server: ServerThread
) -> None:
    _publish(server, 3)
    agent = server.agent
    # One event lands after the subscription but before the backlog is read (so it is in
    # both: it must arrive once), one after the backlog was read (only in the live
    # stream: it must arrive at all).
    agent.before_backlog = lambda: agent.bus.publish("between", where="before the read")
    agent.after_backlog = lambda: agent.bus.publish("between", where="after the read")
    with client.stream_events(since=1) as events:
        got = [(e.id, e.type) for e in _take(events, 4)]
        assert got == [(2, "tick"), (3, "tick"), (4, "between"), (5, "between")]
        server.publish("live")
        [live] = _take(events, 1)
        assert (live.id, live.type) == (6, "live")


def _take(events: EventSubscription, count: int) -> list[Event]:
    taken: list[Event] = []
    for event in events:
        taken.append(event)
        if len(taken) == count:
            break
    return taken


def test_without_since_only_live_events(client: AgentClient, server: ServerThread) -> None:
    _publish(server, 2)
    with client.stream_events() as events:
        server.publish("live")
        assert [(e.id, e.type) for e in _take(events, 1)] == [(3, "live")]


def test_reconnect_with_last_event_id(server: ServerThread, http: Http) -> None:
    _publish(server, 3)
    pool = httpcore.ConnectionPool(uds=str(server.socket_path))
    timeouts = {"timeout": {"read": 10}}
    parser = SseParser()
    with pool.stream("GET", "http://keystone/v1/events?since=0", extensions=timeouts) as first:
        got: list[str] = []
        for chunk in first.iter_stream():
            got += [m.id or "" for m in parser.feed(chunk)]
            if len(got) >= 2:
                break
    assert got[:2] == ["1", "2"]
    _publish(server, 2)  # ids 4 and 5, published while disconnected
    # A browser reconnects with the original URL plus Last-Event-ID: the header wins.
    headers: dict[str | bytes, str | bytes] = {"Last-Event-ID": "2"}
    seen: list[str] = []
    parser = SseParser()
    with pool.stream(
        "GET", "http://keystone/v1/events?since=0", headers=headers, extensions=timeouts
    ) as second:
        for chunk in second.iter_stream():
            seen += [m.id or "" for m in parser.feed(chunk)]
            if len(seen) >= 3:
                break
    assert seen == ["3", "4", "5"]
    pool.close()


def test_a_bad_last_event_id_is_400(http: Http, server: ServerThread) -> None:
    reply = http.get("/v1/events", headers={"Last-Event-ID": "abc"})
    assert reply.status == 400
    assert reply.error["message"] == ("Last-Event-ID: expected an event id (an integer), got 'abc'")


def test_keepalive_comments_while_idle(client: AgentClient, server: ServerThread) -> None:
    with client.stream_events(keepalive=1) as events:
        started = time.monotonic()
        items = events.items()
        assert next(items) is None  # a keep-alive, nothing happened
        assert 0.5 < time.monotonic() - started < 5
        server.publish("after")
        event = next(items)
        assert event is not None
        assert event.type == "after"


def test_a_slow_reader_gets_the_dropped_events_from_the_store(
    client: AgentClient, server: ServerThread
) -> None:
    server.agent.stream_maxsize = 2
    first = server.publish("first")
    with client.stream_events(since=first.id) as events:
        # Ten events in one go, before the server's reader can run: its bounded stream
        # keeps the last two and counts eight dropped.
        server.call(lambda: [server.agent.bus.publish("burst", n=n) for n in range(10)])
        got = [e.payload["n"] for e in _take(events, 10)]
        assert got == list(range(10))
        server.publish("after")
        assert [e.type for e in _take(events, 1)] == ["after"]


def test_a_disconnected_client_releases_its_stream(
    client: AgentClient, server: ServerThread
) -> None:
    def streams() -> int:
        return server.call(lambda: len(server.agent.bus._streams))

    events = client.stream_events()
    assert streams() == 1
    events.close()
    deadline = time.monotonic() + 5
    while streams() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert streams() == 0


@pytest.mark.parametrize("value", ["0", "3601"])
def test_keepalive_has_bounds(http: Http, server: ServerThread, value: str) -> None:
    reply = http.get(f"/v1/events?keepalive={value}")
    assert reply.status == 400
    assert reply.error["details"] == {"parameter": "keepalive", "value": value}
