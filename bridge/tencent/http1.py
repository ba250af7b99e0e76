"""HTTP/1.1 for the lean transport: one request's bytes, and a strict incremental response parser.

h11 did this before, at about a tenth of the bridge's CPU per Desk call: its general state
machine validates each header with regular expressions and walks several objects per event.
The client side of a keep-alive POST needs much less (RFC 9112): a status line, header fields,
a body framed by Content-Length, chunked coding or the connection's close, and interim 1xx
responses to skip. Anything else is refused as a protocol error, as h11 refused it; the tests
parse the same responses with both and compare (`tests/unit/tencent/test_http1.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEAD = 64 * 1024  # status line and header fields together
MAX_BODY = 64 * 1024 * 1024  # no Tencent answer comes near it: a runaway one is refused
_MAX_CHUNK_LINE = 4096
_STATUS = re.compile(rb"HTTP/1\.([0-9]) ([0-9]{3})(?: ([\t \x21-\x7e\x80-\xff]*))?")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")  # a bare LF ends lines too, as RFC 9112 2.2 allows
_LINE_END = re.compile(rb"\r?\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,20})[\t ]*(?:;.*)?")


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 response."""


@dataclass(frozen=True, slots=True)
class Response:
    """One whole final response."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    reusable: bool  # the connection may carry the next request


def request_bytes(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """The request as it goes on the wire: its body framed by Content-Length."""
    lines = [b"%s %s HTTP/1.1" % (method, target)]
    for name, value in headers:
        lowered = name.lower()
        if lowered not in (b"content-length", b"transfer-encoding"):
            lines.append(b"%s: %s" % (name, value))
    if body or method not in (b"GET", b"HEAD"):
        lines.append(b"Content-Length: %d" % len(body))
    head = b"\r\n".join(lines)
    breaks = len(lines) - 1
    if head.count(b"\r") != breaks or head.count(b"\n") != breaks or b"\0" in head:
        raise ValueError("a request line or header field holds CR, LF or NUL")
    return head + b"\r\n\r\n" + body


class ResponseParser:
    """Feed it what the socket gives; it returns the final response once it is whole."""

    def __init__(self, *, head_request: bool = False) -> None:
        self._buf = bytearray()
        self._head_request = head_request
        self._head: tuple[int, int, bytes, list[tuple[bytes, bytes]]] | None = None
        self._length: int | None = None  # body bytes still to come; None: until close
        self._chunked = False
        self._body = bytearray()
        self._reusable = True

    def feed(self, data: bytes) -> Response | None:
        """Take more bytes; the response if it is complete now (raises `ProtocolError`)."""
        self._buf += data
        if len(self._buf) + len(self._body) > MAX_HEAD + MAX_BODY:
            raise ProtocolError(f"response larger than {MAX_BODY} bytes")
        while self._head is None:
            if not self._read_head():
                return None
        if self._chunked:
            return self._read_chunks()
        if self._length is None:
            self._body += self._buf
            self._buf.clear()
            return None
        take = min(self._length, len(self._buf))
        self._body += self._buf[:take]
        del self._buf[:take]
        self._length -= take
        return self._finish() if self._length == 0 else None

    def eof(self) -> Response:
        """The server closed the connection: the response, if its body ends with the close."""
        if self._head is not None and self._length is None and not self._chunked:
            self._reusable = False
            return self._finish()
        raise ProtocolError("server disconnected without a complete response")

    @property
    def leftover(self) -> bool:
        """Bytes after the response: the connection's state is unknown."""
        return bool(self._buf)

    def _read_head(self) -> bool:
        end = _HEAD_END.search(self._buf)
        if end is None:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError("response head too large")
            return False
        lines = _LINE_END.split(bytes(self._buf[: end.start()]))
        del self._buf[: end.end()]
        minor, status, reason = _status_line(lines[0])
        headers = [_field(line) for line in _unfolded(lines[1:])]
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("unexpected 101 Switching Protocols")
            return True  # interim: the final response follows
        self._head = (minor, status, reason, headers)
        self._frame(minor, status, headers)
        return True

    def _frame(self, minor: int, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        connection = _values(headers, b"connection")
        self._reusable = minor == 1 and b"close" not in connection
        encodings = _values(headers, b"transfer-encoding")
        if self._head_request or status in (204, 304):
            self._length = 0
        elif encodings:
            if encodings != [b"chunked"]:  # a coding under chunked would reach JSON undecoded
                raise ProtocolError("unsupported Transfer-Encoding")
            self._chunked = True
            if any(name.lower() == b"content-length" for name, _ in headers):
                self._reusable = False  # RFC 9112 6.3: a smuggling risk; not kept
            self._length = 0  # chunked: the size still to come in this chunk
        else:
            self._length = _content_length(headers)
            if self._length is not None and self._length > MAX_BODY:
                raise ProtocolError(f"response body of {self._length} bytes")
            if self._length is None:
                self._reusable = False  # the body ends when the connection does

    def _read_chunks(self) -> Response | None:
        while True:
            if self._length:  # inside a chunk: its data, then CRLF
                if len(self._buf) < self._length + 2:
                    return None
                if self._buf[self._length : self._length + 2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                self._body += self._buf[: self._length]
                del self._buf[: self._length + 2]
                self._length = 0
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > _MAX_CHUNK_LINE:
                    raise ProtocolError("chunk size line too long")
                return None
            if self._length is None:  # after the last chunk: trailer fields, then CRLF
                return self._read_trailers()
            size = _CHUNK_SIZE.fullmatch(self._buf[:end])
            if size is None:
                raise ProtocolError("bad chunk size")
            del self._buf[: end + 2]
            self._length = int(size.group(1), 16) or None

    def _read_trailers(self) -> Response | None:
        end = self._buf.find(b"\r\n")
        while end > 0:  # a trailer field: checked, then dropped
            _field(bytes(self._buf[:end]))
            del self._buf[: end + 2]
            end = self._buf.find(b"\r\n")
        if end < 0:
            return None
        del self._buf[:2]
        return self._finish()

    def _finish(self) -> Response:
        assert self._head is not None
        _, status, reason, headers = self._head
        return Response(status, reason, headers, bytes(self._body), self._reusable)


def _status_line(line: bytes) -> tuple[int, int, bytes]:
    match = _STATUS.fullmatch(line)
    if match is None:
        raise ProtocolError(f"bad status line {line[:64]!r}")
    return int(match.group(1)), int(match.group(2)), match.group(3) or b""


def _unfolded(lines: list[bytes]) -> list[bytes]:
    """Obsolete line folding (RFC 9112 5.2) replaced by a space, as h11 does."""
    out: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not out:
                raise ProtocolError("a folded line before any header field")
            out[-1] += b" " + line.strip(b" \t")
        else:
            out.append(line)
    return out


def _field(line: bytes) -> tuple[bytes, bytes]:
    name, colon, value = line.partition(b":")
    if not colon or _TOKEN.fullmatch(name) is None:
        raise ProtocolError(f"bad header line {line[:64]!r}")
    value = value.strip(b" \t")
    if _BAD_VALUE.search(value):
        raise ProtocolError(f"bad header value for {name[:64]!r}")
    return name, value


def _values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every comma-separated value of the fields called `name`, lowercased."""
    found: list[bytes] = []
    for key, value in headers:
        if key.lower() == name:
            found.extend(v.strip(b" \t").lower() for v in value.split(b",") if v.strip(b" \t"))
    return found


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """Its value; repeated or listed values must all be the same number (RFC 9110 8.6)."""
    values = {
        item.strip(b" \t")
        for name, value in headers
        if name.lower() == b"content-length"
        for item in value.split(b",")
    }
    if not values:
        return None
    if len(values) > 1 or not all(v.isdigit() for v in values):
        raise ProtocolError("bad Content-Length")
    return int(values.pop())
