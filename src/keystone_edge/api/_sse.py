"""Server-Sent Events, both ways, without I/O.

The agent writes each event as::

    id: 42
    event: component.state
    data: {"id":42,"ts":1764150000.5,"type":"component.state","payload":{...}}

followed by a blank line; ``data`` is the whole :class:`Event` as compact JSON (one line,
so no ``data:`` continuation is ever needed). A line starting with ``:`` is a comment:
the server sends one as a keep-alive when nothing happened for a while.

:class:`SseParser` follows the WHATWG event-stream rules that matter for a client which
is not a browser: lines end with CRLF, LF or CR; ``field: value`` loses one leading space;
several ``data`` lines join with LF; an unknown field is ignored; a block without data is
not dispatched (it still updates the last event id).
"""

from __future__ import annotations

import re

import msgspec

from keystone_edge.observe.events import Event

__all__ = ["KEEPALIVE", "SseMessage", "SseParser", "encode_event"]

KEEPALIVE = b": keep-alive\n\n"

_EOL = re.compile(rb"\r\n|\r|\n")
_encode = msgspec.json.Encoder(enc_hook=str).encode


def encode_event(event: Event) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        event.id,
        event.type.encode(),
        _encode(event),
    )


class SseMessage(msgspec.Struct, frozen=True):
    """One dispatched message; ``data`` is None for a comment (a keep-alive)."""

    event: str
    data: str | None
    id: str | None


class SseParser:
    """Feed it bytes as they arrive; it returns the messages that became complete."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._comment = False
        self.last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SseMessage]:
        self._buffer += chunk
        messages: list[SseMessage] = []
        while True:
            line, found = self._next_line()
            if not found:
                return messages
            message = self._line(line)
            if message is not None:
                messages.append(message)

    def _next_line(self) -> tuple[str, bool]:
        match = _EOL.search(self._buffer)
        if match is None:
            return "", False
        if match.group() == b"\r" and match.end() == len(self._buffer):
            # A CR at the very end may be the first half of a CRLF: wait for more bytes.
            return "", False
        line = self._buffer[: match.start()]
        self._buffer = self._buffer[match.end() :]
        return line.decode("utf-8", errors="replace"), True

    def _line(self, line: str) -> SseMessage | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self._comment = True
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None

    def _dispatch(self) -> SseMessage | None:
        message: SseMessage | None = None
        if self._data:
            message = SseMessage(
                event=self._event or "message", data="\n".join(self._data), id=self.last_id
            )
        elif self._comment:
            message = SseMessage(event="", data=None, id=self.last_id)
        self._event, self._data, self._comment = "", [], False
        return message
