"""The lean transport's HTTP/1.1 parser against h11 (the parser it replaced) as the oracle:
the same responses, split anywhere, give the same status, headers and body; the same
malformed ones are refused."""

from __future__ import annotations

from dataclasses import dataclass

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.tencent import http1
from bridge.tencent.http1 import ProtocolError, Response, ResponseParser, request_bytes

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#", min_size=1)
VALUE = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127 or c >= 128).strip(b" \t")
)
RESERVED = {"content-length", "transfer-encoding", "connection"}


@dataclass
class Parsed:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


def h11_parse(wire: bytes, *, head: bool = False) -> Parsed:
    """What h11 makes of `wire` as the answer to a POST (or HEAD) request."""
    conn = h11.Connection(h11.CLIENT)
    method = b"HEAD" if head else b"POST"
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.receive_data(wire)
    conn.receive_data(b"")  # then the server closes the connection
    found: Parsed | None = None
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            found = Parsed(event.status_code, event.reason, list(event.headers.raw_items()), b"")
        elif isinstance(event, h11.Data):
            assert found is not None
            found.body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert found is not None
            return found
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("incomplete")


def ours(pieces: list[bytes], *, head: bool = False) -> tuple[Parsed, bool]:
    """What `ResponseParser` makes of the same bytes, fed piece by piece, then closed."""
    parser = ResponseParser(head_request=head)
    done: Response | None = None
    for piece in pieces:
        if done is not None:
            assert not piece
        elif piece:
            done = parser.feed(piece)
    if done is None:
        done = parser.eof()
    return Parsed(done.status, done.reason, done.headers, done.body), done.reusable


def _split(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(wire) + 1) for c in cuts})
    return [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, str]:
    """A well-formed response and its framing."""
    status = draw(st.sampled_from([200, 201, 204, 304, 400, 404, 500, 502]))
    reason = draw(st.sampled_from([b"OK", b"", b"Bad Gateway", b"x y\tz"]))
    fields = draw(st.lists(st.tuples(TOKEN, VALUE), max_size=5))
    headers = [(n.encode(), v) for n, v in fields if n.lower() not in RESERVED]
    body = draw(st.binary(max_size=300)) if status not in (204, 304) else b""
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if draw(st.booleans()):
        headers.append((b"Connection", draw(st.sampled_from([b"keep-alive", b"close"]))))
    if framing == "length":
        headers.append((b"Content-Length", b"%d" % len(body)))
        payload = body
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        sizes = draw(st.lists(st.integers(1, 64), max_size=8))
        payload, at = b"", 0
        for size in sizes:
            part = body[at : at + size]
            at += len(part)
            if part:
                ext = draw(st.sampled_from([b"", b";a=b", b";x"]))
                payload += b"%x%s\r\n%s\r\n" % (len(part), ext, part)
        rest = body[at:]
        if rest:
            payload += b"%X\r\n%s\r\n" % (len(rest), rest)
        trailer = draw(st.sampled_from([b"", b"X-Trailer: 1\r\n"]))
        payload += b"0\r\n" + trailer + b"\r\n"
    else:
        payload = body
    if status in (204, 304):
        payload = b""
    interim = draw(st.sampled_from([b"", b"HTTP/1.1 100 Continue\r\n\r\n"]))
    head = b"HTTP/1.1 %d" % status + (b" " + reason if reason or draw(st.booleans()) else b"")
    lines = [head, *(b"%s: %s" % (n, v) for n, v in headers)]
    return interim + b"\r\n".join(lines) + b"\r\n\r\n" + payload, framing


@given(responses(), st.lists(st.integers(0, 10_000), max_size=6))
def test_well_formed_responses_parse_as_h11_parses_them(
    case: tuple[bytes, str], cuts: list[int]
) -> None:
    wire, framing = case
    parsed, reusable = ours(_split(wire, cuts))
    assert parsed == h11_parse(wire)
    closes = b"\r\nconnection: close" in wire.lower()
    assert reusable == (framing != "close" and not closes) or parsed.status in (204, 304)


def test_a_head_answer_has_no_body_whatever_its_length() -> None:
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"
    assert ours([wire], head=True)[0] == h11_parse(wire, head=True)
    assert ours([wire], head=True)[0].body == b""


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nxx\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2,\r\n\r\nxx",
        b"HTTP/1.1 200 OK\r\n X: folded first\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxxx\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxx\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"",
    ],
)
def test_malformed_responses_are_refused_as_h11_refuses_them(wire: bytes) -> None:
    with pytest.raises(h11.RemoteProtocolError):
        h11_parse(wire)
    with pytest.raises(ProtocolError):
        ours([wire])


def test_bare_lf_line_ends_in_the_head_as_h11_takes_them() -> None:
    wire = b"HTTP/1.1 200 OK\nContent-Length: 2\r\nX: y\n\nok"
    assert ours([wire])[0] == h11_parse(wire)


def test_folded_header_lines_are_joined_as_h11_joins_them() -> None:
    wire = b"HTTP/1.1 200 OK\r\nX: a\r\n  b\r\n\tc\r\nContent-Length: 0\r\n\r\n"
    assert ours([wire])[0] == h11_parse(wire)
    assert ours([wire])[0].headers[0] == (b"X", b"a b c")


def test_a_zero_padded_chunk_size_is_taken() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s2\r\nok\r\n0\r\n\r\n"
    padded = wire % (b"0" * 18)
    assert ours([padded])[0] == h11_parse(padded)


def test_chunked_with_a_content_length_is_read_chunked_but_not_kept() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n"
    wire += b"2\r\nok\r\n0\r\n\r\n"
    parsed, reusable = ours([wire])
    assert parsed == h11_parse(wire) and parsed.body == b"ok"
    assert not reusable


def test_whitespace_before_a_chunk_extension_is_taken() -> None:
    """RFC 9112 7.1.1 allows it (BWS); h11 refuses it, this parser does not."""
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 ;x=y\r\nok\r\n0\r\n\r\n"
    assert ours([wire])[0].body == b"ok"


def test_a_huge_head_is_refused() -> None:
    parser = ResponseParser()
    with pytest.raises(ProtocolError, match="too large"):
        parser.feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000)


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 2000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"10\r\n0123456789abcdef\r\n" * 100,
    ],
)
def test_a_runaway_body_is_refused_not_buffered(
    wire: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http1, "MAX_BODY", 1000)
    monkeypatch.setattr(http1, "MAX_HEAD", 100)
    parser = ResponseParser()
    with pytest.raises(ProtocolError, match="bytes"):
        for at in range(0, len(wire), 64):
            parser.feed(wire[at : at + 64])


def test_bytes_after_the_response_make_the_connection_unusable() -> None:
    parser = ResponseParser()
    done = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1")
    assert done is not None and done.body == b"x" and done.reusable
    assert parser.leftover  # the transport does not reuse such a connection


def test_http10_answers_are_not_kept_alive() -> None:
    parsed, reusable = ours([b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    assert parsed.body == b"ok" and not reusable


def test_requests_are_what_h11_reads_as_a_server() -> None:
    headers = [(b"Host", b"h:1"), (b"Content-Type", b"application/json"), (b"X", b"a b")]
    wire = request_bytes(b"POST", b"/p?q=1&r=%2A", [*headers, (b"Content-Length", b"99")], b"{}")
    server = h11.Connection(h11.SERVER)
    server.receive_data(wire)
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert (request.method, request.target) == (b"POST", b"/p?q=1&r=%2A")
    assert list(request.headers.raw_items()) == [*headers, (b"Content-Length", b"2")]
    data = server.next_event()
    assert isinstance(data, h11.Data) and data.data == b"{}"
    assert isinstance(server.next_event(), h11.EndOfMessage)


@pytest.mark.parametrize(
    ("target", "value"),
    [(b"/a\r\nX: y", b"v"), (b"/", b"v\r\nX: y"), (b"/", b"v\nX"), (b"/", b"\0")],
)
def test_a_request_with_cr_lf_or_nul_is_never_written(target: bytes, value: bytes) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        request_bytes(b"POST", target, [(b"X-Value", value)], b"")
