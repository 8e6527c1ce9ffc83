"""The SSE codec without I/O: what the server writes, the parser reads back, in any chunking."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from keystone_edge.api._sse import KEEPALIVE, SseMessage, SseParser, encode_event
from keystone_edge.observe.events import Event

EVENTS = [
    Event(id=1, ts=1.5, type="component.state", payload={"component": "com.a", "to": "RUNNING"}),
    Event(id=2, ts=2.5, type="deployment.step", payload={"text": "line one\nline two"}),
]


def test_encode_event() -> None:
    assert encode_event(EVENTS[0]) == (
        b"id: 1\nevent: component.state\n"
        b'data: {"id":1,"ts":1.5,"type":"component.state",'
        b'"payload":{"component":"com.a","to":"RUNNING"}}\n\n'
    )
    # A newline inside the payload stays escaped in the JSON: one data line per event.
    assert encode_event(EVENTS[1]).count(b"\n") == 4


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_any_chunking_gives_the_same_messages(cuts: list[int]) -> None:
    wire = encode_event(EVENTS[0]) + KEEPALIVE + encode_event(EVENTS[1])
    parser = SseParser()
    messages: list[SseMessage] = []
    pos = 0
    for cut in cuts:
        messages += parser.feed(wire[pos : pos + cut])
        pos += cut
    messages += parser.feed(wire[pos:])
    assert [m.event for m in messages] == ["component.state", "", "deployment.step"]
    assert messages[1].data is None  # the keep-alive
    decoded = [msgspec.json.decode(m.data, type=Event) for m in messages if m.data is not None]
    assert decoded == EVENTS
    assert parser.last_id == "2"


def test_line_endings_and_fields_per_the_spec() -> None:
    parser = SseParser()
    messages = parser.feed(b"event: a\r\ndata: one\rdata:two\r\nid: 7\nretry: 10\nx: y\r\n\n")
    assert messages == [SseMessage(event="a", data="one\ntwo", id="7")]
    # A trailing CR may be half of a CRLF: nothing is dispatched until the next byte.
    assert parser.feed(b"data: z\r\r") == []
    assert parser.feed(b"\n") == [SseMessage(event="message", data="z", id="7")]


def test_a_block_without_data_only_moves_the_last_id() -> None:
    parser = SseParser()
    assert parser.feed(b"id: 9\n\n") == []
    assert parser.last_id == "9"
    assert parser.feed(b"data: x\n\n") == [SseMessage(event="message", data="x", id="9")]
