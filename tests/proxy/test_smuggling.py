"""Request smuggling and response desync: each case of issue 12, through the real proxy to a recording origin
that keeps the raw bytes of every upstream connection and frames them as a correct server would.

An attack succeeds when the origin acts on a request the proxy never saw, or when one client gets bytes
meant for another (client B, on its own connection, after client A's attack on a pooled connection).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest

from tests.proxy.conftest import StartProxy, parse_responses, raw_request
from tests.proxy.origin import OriginConnection, RecordingOrigin, Request, ok

MakeOrigin = Callable[..., RecordingOrigin]


@pytest.fixture
async def origin() -> AsyncIterator[MakeOrigin]:
    made: list[RecordingOrigin] = []

    def make(answer: Callable[[OriginConnection, Request], tuple[bytes, bool]] = ok) -> RecordingOrigin:
        o = RecordingOrigin(answer)
        made.append(o)
        return o

    yield make
    for o in made:
        await o.close()


Responses = list[tuple[int, dict[str, str], bytes]]


async def exchange(port: int, data: bytes | list[bytes], responses: int, wait: float = 5.0) -> Responses:
    """Send `data` on a fresh connection (a list: piece by piece, in separate reads most of the time) and read
    until `responses` complete answers arrived (or it closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    buffer = b""
    try:
        for piece in [data] if isinstance(data, bytes) else data:
            writer.write(piece)
            await writer.drain()
            if not isinstance(data, bytes):
                await asyncio.sleep(0.001)
        async with asyncio.timeout(wait):
            while True:
                try:
                    if len(parse_responses(buffer)) >= responses:
                        break
                except (ValueError, IndexError):
                    pass  # a response still incomplete
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buffer += chunk
    finally:
        writer.close()
    return parse_responses(buffer)


VICTIM = b"GET /victim HTTP/1.1\r\nHost: a\r\nCookie: session=secret\r\n\r\n"
SMUGGLED = b"GET /slow HTTP/1.1\r\nHost: abcde\r\nX-Smuggled: 1\r\n\r\n"  # exactly 50 bytes
assert len(SMUGGLED) == 50


async def victim_answer(port: int) -> bytes:
    [(status, _, body)] = await exchange(port, VICTIM, 1)
    assert status == 200
    return body


# -- 1. Connection tokens never remove framing --------------------------------------------------------------

CONNECTION_VARIANTS = {
    "named": b"POST /front HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 50\r\n\r\n",
    "capitalised_cl_first": (
        b"POST /front HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\nConnection: Content-Length\r\n\r\n"
    ),
    "close_list": b"POST /front HTTP/1.1\r\nHost: a\r\nConnection: close, content-length\r\nContent-Length: 50\r\n\r\n",
    "keep_alive_list": (
        b"POST /front HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, CONTENT-LENGTH\r\nContent-Length: 50\r\n\r\n"
    ),
    "http10": b"POST /front HTTP/1.0\r\nConnection: keep-alive, content-length\r\nContent-Length: 50\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(CONNECTION_VARIANTS))
async def test_connection_token_cannot_remove_content_length(
    case: str, start_proxy: StartProxy, origin: MakeOrigin
) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    port = proxy.ports["active"]
    [(status, _, body)] = await exchange(port, CONNECTION_VARIANTS[case] + SMUGGLED, 1)
    assert (status, body) == (200, b"POST /front")
    assert await victim_answer(port) == b"GET /victim"  # B reuses the pooled connection, gets its own answer
    assert o.targets == ["/front", "/victim"]  # /slow was a body, never a request
    front = o.requests[0]
    assert front.fields("content-length") == ["50"] and front.body == SMUGGLED


async def test_connection_token_cannot_remove_chunked_or_host(start_proxy: StartProxy, origin: MakeOrigin) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    port = proxy.ports["active"]
    chunked = (
        b"POST /front HTTP/1.1\r\nHost: a\r\nConnection: transfer-encoding, host\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    )
    [(status, _, _)] = await exchange(port, chunked, 1)
    assert status == 200
    assert await victim_answer(port) == b"GET /victim"
    assert o.targets == ["/front", "/victim"]
    front = o.requests[0]
    assert front.fields("transfer-encoding") == ["chunked"] and front.body == SMUGGLED
    assert front.fields("host") == ["a"]


# -- 2. Upgrade requests with a body ------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_upgrade_request_body_is_forwarded_as_a_body(
    framing: str, start_proxy: StartProxy, origin: MakeOrigin
) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    port = proxy.ports["active"]
    inner = b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    head = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    if framing == "chunked":
        attack = head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(inner), inner)
    else:
        attack = head + b"Content-Length: %d\r\n\r\n%b" % (len(inner), inner)
    [(status, headers, body)] = await exchange(port, attack, 1)
    assert (status, body) == (200, b"GET /x")
    assert headers["connection"] == "close"  # the client's parser is past an upgrade request: start over
    assert await victim_answer(port) == b"GET /victim"
    assert o.targets == ["/x", "/victim"]
    x = o.requests[0]
    assert x.body == inner and not x.fields("upgrade")  # the upgrade is ignored, the body is a body


async def test_curl_h2c_post_upgrade_is_answered_as_http11(start_proxy: StartProxy, origin: MakeOrigin) -> None:
    """`curl --http2 -d hello http://…` sends an h2c Upgrade with its body: it must work as a plain POST."""
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--http2", "-d", "hello", "-m", "5", f"http://127.0.0.1:{proxy.ports['active']}/post",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and out == b"POST /post"
    assert o.requests[0].body == b"hello"


async def test_upgrade_answered_without_101_closes_the_upstream_connection(
    start_proxy: StartProxy, origin: MakeOrigin
) -> None:
    def refuse_upgrades(conn: OriginConnection, req: Request) -> tuple[bytes, bool]:
        if req.fields("upgrade"):
            return b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n", False
        return ok(conn, req)

    o = origin(refuse_upgrades)
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    port = proxy.ports["active"]
    ws = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    [(status, _, _)] = await exchange(port, ws, 1)
    assert status == 426
    async with asyncio.timeout(2):
        await o.connections[0].closed_by_peer.wait()  # never pooled
    assert await victim_answer(port) == b"GET /victim"
    assert [c.index for c in o.connections if c.requests and c.requests[0].target == "/victim"] == [1]


# -- 3. Bytes beyond a complete response ---------------------------------------------------------------------

EXTRA = b"HTTP/1.1 200 OK\r\ncontent-length: 19\r\n\r\nsmuggled-response!!"


def with_extra_response(conn: OriginConnection, req: Request) -> tuple[bytes, bool]:
    answer, close = ok(conn, req)
    if req.target == "/first":
        return answer + EXTRA, close  # one write: the answer and an unsolicited second response
    return answer, close


async def test_extra_upstream_response_never_reaches_a_pipelined_request(
    start_proxy: StartProxy, origin: MakeOrigin
) -> None:
    o = origin(with_extra_response)
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    port = proxy.ports["active"]
    first = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
    out = await exchange(port, first + VICTIM, 2)
    assert [(s, b) for s, _, b in out] == [(200, b"GET /first"), (200, b"GET /victim")]
    assert out[1][1]["content-length"] == str(len(b"GET /victim"))
    async with asyncio.timeout(2):
        await o.connections[0].closed_by_peer.wait()  # the connection that sent too much is not reused


async def test_extra_upstream_bytes_close_the_connection_for_the_next_client(
    start_proxy: StartProxy, origin: MakeOrigin
) -> None:
    o = origin(with_extra_response)
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    port = proxy.ports["active"]
    [(status, _, body)] = await exchange(port, b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n", 1)
    assert (status, body) == (200, b"GET /first")
    assert await victim_answer(port) == b"GET /victim"  # client B: its own answer, never the extra one


async def test_bytes_after_a_head_answer_close_the_connection(start_proxy: StartProxy, origin: MakeOrigin) -> None:
    def head_with_body(conn: OriginConnection, req: Request) -> tuple[bytes, bool]:
        if req.method == "HEAD":  # a HEAD answer with a body the client must never get as the next response
            return b"HTTP/1.1 200 OK\r\ncontent-length: 19\r\n\r\n" + EXTRA[-19:], False
        return ok(conn, req)

    o = origin(head_with_body)
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    port = proxy.ports["active"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n" + VICTIM)
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")  # a HEAD answer: a head only
            rest = await reader.readuntil(b"\r\n\r\n")
            rest += await reader.readexactly(len(b"GET /victim"))
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 19" in head
    [(status, _, body)] = parse_responses(rest)
    assert (status, body) == (200, b"GET /victim")
    async with asyncio.timeout(2):
        await o.connections[0].closed_by_peer.wait()


# -- 4. A response's Connection tokens keep its framing ------------------------------------------------------


async def test_response_connection_token_keeps_content_length(start_proxy: StartProxy, origin: MakeOrigin) -> None:
    def named(conn: OriginConnection, req: Request) -> tuple[bytes, bool]:
        body = req.target.encode()
        return b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: %d\r\n\r\n%b" % (
            len(body),
            body,
        ), False

    o = origin(named)
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    req = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
    out = await exchange(proxy.ports["active"], req + req.replace(b"/one", b"/two"), 2)
    assert [(h.get("content-length"), b) for _, h, b in out] == [("4", b"/one"), ("4", b"/two")]


# -- 5. Trailers ---------------------------------------------------------------------------------------------


async def test_request_trailers_never_become_the_next_request_head(start_proxy: StartProxy, origin: MakeOrigin) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    post = (
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
        b"X-Injected: 1\r\nX-Forwarded-Host: evil.example\r\nConnection: content-length\r\n\r\n"
    )
    out = await exchange(proxy.ports["active"], post + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n", 2)
    assert [s for s, _, _ in out] == [200, 200]
    assert o.targets == ["/up", "/next"]
    up, nxt = o.requests
    assert up.body == b"abc"
    for req in (up, nxt):
        assert not req.fields("x-injected")
        assert req.fields("x-forwarded-host") == ["a"]


async def test_request_trailers_are_bounded(start_proxy: StartProxy, origin: MakeOrigin) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None, limits={"max_header_bytes": 4096})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports["active"])
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n")
        answer = b""
        for i in range(400):  # 400 × 1 KiB of trailer fields that never end, until the proxy answers
            writer.write(b"X-Fill-%d: %b\r\n" % (i, b"v" * 1000))
            await writer.drain()
            await asyncio.sleep(0.002)  # trickles the fields, so the proxy reads them as they come
            if reader.at_eof() or len(reader._buffer):  # type: ignore[attr-defined]
                break
        async with asyncio.timeout(5):
            answer = await reader.read(65536)
    except ConnectionResetError:
        answer = b"reset"
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:60]
    assert i < 100  # answered soon after the limit, not after everything was sent


# -- 6. Absolute-form targets, codings, lengths --------------------------------------------------------------


async def test_absolute_form_target_becomes_origin_form_with_its_authority(
    start_proxy: StartProxy, origin: MakeOrigin
) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    port = proxy.ports["active"]
    req = b"GET http://evil.example/x?q=1 HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n"
    [(status, _, body)] = parse_responses(await raw_request(port, req))
    assert (status, body) == (200, b"GET /x?q=1")
    [seen] = o.requests
    assert seen.fields("host") == ["evil.example"] and seen.fields("x-forwarded-host") == ["evil.example"]
    for bad in (b"http://user@evil.example/x", b"ftp://evil.example/x", b"http:///x"):
        answer = await raw_request(port, b"GET " + bad + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 "), bad
    assert len(o.requests) == 1


async def test_transfer_coding_other_than_chunked_is_501(start_proxy: StartProxy, origin: MakeOrigin) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    req = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    assert (await raw_request(proxy.ports["active"], req)).startswith(b"HTTP/1.1 501 ")
    twice = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert (await raw_request(proxy.ports["active"], twice)).startswith(b"HTTP/1.1 400 ")
    assert o.connections == []


async def test_content_length_with_leading_zeros_is_forwarded_as_a_number(
    start_proxy: StartProxy, origin: MakeOrigin
) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    req = b"POST /n HTTP/1.1\r\nHost: a\r\nContent-Length: 010\r\nConnection: close\r\n\r\n0123456789"
    [(status, _, _)] = parse_responses(await raw_request(proxy.ports["active"], req))
    assert status == 200
    assert o.requests[0].fields("content-length") == ["10"] and o.requests[0].body == b"0123456789"
    assert b"content-length: 10\r\n" in bytes(o.connections[0].raw).lower()


# -- 7. Error paths -----------------------------------------------------------------------------------------


async def test_malformed_response_head_is_not_retried(start_proxy: StartProxy, origin: MakeOrigin) -> None:
    def garbage(conn: OriginConnection, req: Request) -> tuple[bytes, bool]:
        return b"HTTP/1.1 2x0 Broken\r\n\r\n", False

    a, b = origin(garbage), origin(garbage)
    proxy = await start_proxy({"blue": [await a.start(), await b.start()]}, preview=None)
    [(status, _, _)] = await exchange(proxy.ports["active"], b"GET /once HTTP/1.1\r\nHost: a\r\n\r\n", 1)
    assert status == 502
    assert len(a.requests) + len(b.requests) == 1  # response bytes arrived: nothing is retried


async def test_close_delimited_coded_response_is_relayed_whole(start_proxy: StartProxy, origin: MakeOrigin) -> None:
    payload = bytes(range(256)) * 8

    def coded(conn: OriginConnection, req: Request) -> tuple[bytes, bool]:
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n" + payload, True

    o = origin(coded)
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    port = proxy.ports["active"]
    [(status, headers, body)] = await exchange(port, b"GET /z HTTP/1.1\r\nHost: a\r\n\r\n", 1)
    assert status == 200 and headers["transfer-encoding"] == "gzip, chunked" and body == payload
    old = await raw_request(port, b"GET /z HTTP/1.0\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 502 ")  # an HTTP/1.0 client cannot be told the coding


async def test_bad_chunk_right_after_the_head_is_502(start_proxy: StartProxy, origin: MakeOrigin) -> None:
    def bad_chunk(conn: OriginConnection, req: Request) -> tuple[bytes, bool]:
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", False

    o = origin(bad_chunk)
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    [(status, _, _)] = await exchange(proxy.ports["active"], b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n", 1)
    assert status == 502


async def test_client_half_close_mid_body_closes_the_upstream_at_once(
    start_proxy: StartProxy, origin: MakeOrigin
) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None, timeouts={"idle": "30s"})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports["active"])
    try:
        writer.write(b"POST /part HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        async with asyncio.timeout(2):
            await o.connected.wait()
            writer.write_eof()
            await o.connections[0].closed_by_peer.wait()  # not held open until the idle timeout
    finally:
        writer.close()
    assert o.requests == []  # the truncated request was never completed upstream


# -- 9. Plain heads, forwarded in one piece, frame exactly as field-by-field ones ----------------------------
#
# A complete head with no body and no field to act on but Host and `Connection: keep-alive|close` skips the
# per-field parser callbacks (`proxy.dataplane.client._scan`); any other head goes field by field. Each case is
# sent twice: as is, and with a `TE: trailers` field in every request (hop-by-hop, so dropped, but it sends
# the head field by field). The origin must see the same requests and the client the same answers, and the
# plain run is also sent in 7-byte pieces, so heads end in every position of a read.

PLAIN_CASES: dict[str, tuple[list[bytes], int]] = {
    "pipelined_mix": (
        [
            b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /c HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n",
            b"POST /d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"GET /e HTTP/1.1\r\nhost: a\r\nX-Api-Key: k\r\nCookie: c=1\r\n\r\n",
            b"GET /f HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
            b"GET /g HTTP/1.1\r\nHost: a\r\n\r\n",
        ],
        7,
    ),
    "browser": (
        [
            b"GET /account/orders?page=2 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n"
            b'sec-ch-ua: "Chromium";v="131"\r\nUpgrade-Insecure-Requests: 1\r\nUser-Agent: Mozilla/5.0 (X11)\r\n'
            b"Accept: text/html,*/*;q=0.8\r\nReferer: http://a/account\r\nAccept-Encoding: gzip, br\r\n"
            b"Cookie: session=8f14e45f; theme=dark\r\nhostname: not-host\r\nTEA: not-te\r\n\r\n",
            b"GET /second HTTP/1.1\r\nHost: a\r\nAccept:*/*  \r\n\r\n",
        ],
        2,
    ),
    "close_then_more": (
        [b"GET /close HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n"],
        9,
    ),
    "http10": ([b"GET /ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", b"GET /ten2 HTTP/1.0\r\n\r\n"], 9),
    "two_hosts": ([b"GET /two HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"], 9),
    "host_trailing_space": ([b"GET /t HTTP/1.1\r\nHost: a \r\n\r\n"], 9),  # llhttp keeps trailing OWS: 400
    "connection_trailing_space": ([b"GET /t HTTP/1.1\r\nHost: a\r\nConnection: keep-alive \r\n\r\n"], 1),
    "bad_host": ([b"GET /bad HTTP/1.1\r\nHost: a b\r\n\r\n"], 9),
    "no_host": ([b"GET /none HTTP/1.1\r\nAccept: */*\r\n\r\n"], 9),
    "garbage_after": ([b"GET /g1 HTTP/1.1\r\nHost: a\r\n\r\n", b"NOT HTTP\r\n\r\n"], 9),
    "two_connection_fields": (
        [b"GET /two-conn HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: x-drop\r\nX-Drop: 1\r\n\r\n"],
        1,
    ),
    "bodies": (
        [
            b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /cl-tight HTTP/1.1\r\nHost: a\r\nContent-Length:3\r\n\r\nabc",
            b"POST /zero HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            b"POST /leading-zero HTTP/1.1\r\nHost: a\r\nContent-Length: 004\r\n\r\nabcd",
            b"POST /trailing-space HTTP/1.1\r\nHost: a\r\nContent-Length: 2 \r\n\r\nab",
            b"PUT /keep HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nGET ",
            b"GET /with-body HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
            b"POST /large HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\n\r\n" + bytes(range(256)) * 78 + b"x" * 32,
            b"POST /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 4\r\n\r\nlast",
        ],
        9,
    ),
    "two_lengths": ([b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab"], 9),
    "length_and_chunked": (
        [b"POST /both HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
        9,
    ),
    "many_fields": (
        [b"GET /many HTTP/1.1\r\nhost: a\r\n" + b"".join(b"F%d: v%d\r\n" % (i, i) for i in range(40)) + b"\r\n"],
        1,
    ),
}


def slowed(request: bytes) -> bytes:
    """The same request with a field that sends its head field by field (TE is hop-by-hop: never forwarded)."""
    if not request[:1].isalpha() or b" HTTP/" not in request.split(b"\r\n", 1)[0]:
        return request  # not a request: sent as it is
    line, _, rest = request.partition(b"\r\n")
    return line + b"\r\nTE: trailers\r\n" + rest


async def seen(port: int, pieces: list[bytes], answers: int) -> list[tuple[int, bytes, bool]]:
    """(status, body, closes) of each answer, reading until `answers` came (9: until the proxy closes)."""
    return [(s, b, h.get("connection") == "close") for s, h, b in await exchange(port, pieces, answers)]


def upstream_view(requests: list[Request]) -> list[tuple[str, str, list[tuple[str, str]], bytes]]:
    return [
        (r.method, r.target, [(k.lower(), v) for k, v in r.headers if k.lower() != "x-request-id"], r.body)
        for r in requests
    ]


@pytest.mark.parametrize("case", sorted(PLAIN_CASES))
async def test_plain_heads_frame_as_field_by_field_ones(start_proxy: StartProxy, origin: MakeOrigin, case: str) -> None:
    requests, answers = PLAIN_CASES[case]
    runs = {"plain": [b"".join(requests)], "field_by_field": [b"".join(slowed(r) for r in requests)]}
    if case == "pipelined_mix":
        whole = runs["plain"][0]
        runs["plain_in_pieces"] = [whole[i : i + 7] for i in range(0, len(whole), 7)]
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    results = {}
    for name, pieces in runs.items():  # one after the other, each on its own client connection
        before = len(o.requests)
        answered = await seen(proxy.ports["active"], pieces, answers)
        # Sorted: the proxy spreads requests over pooled upstream connections in no fixed order.
        results[name] = (answered, sorted(upstream_view(o.requests[before:])))
    assert results["plain"] == results["field_by_field"], case
    if "plain_in_pieces" in results:
        assert results["plain_in_pieces"] == results["plain"]
        answers_seen, upstream = results["plain"]
        assert [(s, b) for s, b, _ in answers_seen] == [
            (200, b"GET /a"),
            (200, b"POST /b"),
            (200, b"GET /c"),
            (200, b"POST /d"),
            (200, b"GET /e"),
            (200, b"GET /f"),
            (200, b"GET /g"),
        ]
        assert sorted((t, m, body) for m, t, _, body in upstream) == [
            ("/a", "GET", b""),
            ("/b", "POST", b"hello"),
            ("/c", "GET", b""),
            ("/d", "POST", b"abc"),
            ("/e", "GET", b""),
            ("/f", "GET", b""),
            ("/g", "GET", b""),
        ]
        fields = {t: dict(h) for _, t, h, _ in upstream}
        assert "connection" not in fields["/c"] and fields["/c"]["accept"] == "*/*"
        assert fields["/f"]["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"  # start_proxy trusts loopback peers
        assert fields["/e"]["x-api-key"] == "k" and fields["/e"]["x-forwarded-host"] == "a"
    if case == "bodies":  # each body reaches the origin whole, on its own request, whichever parser read it
        answers_seen, upstream = results["plain"]
        assert [status for status, _, _ in answers_seen] == [200] * len(requests)
        sent = {r.split(b" ", 2)[1].decode(): r.partition(b"\r\n\r\n")[2] for r in requests}
        assert {target: body for _, target, _, body in upstream} == sent


# -- 10. Response heads: what the client gets is the upstream's head less the hop-by-hop fields ------------

RESPONSE_NAMES = [
    "Server",
    "Date",
    "Content-Type",
    "Set-Cookie",
    "X-Up",
    "x-up",
    "Connection",
    "connection",
    "CONNECTION",
    "Keep-Alive",
    "Te",
    "Trailer",
    "Upgrade",
    "Proxy-Connection",
    "Proxy-Authenticate",
    "Proxy-Foo",
    "Via",
    "Connectionx",
    "Tea",
    "keep-alivex",
    "Cache-Control",
    "Vary",
]
RESPONSE_VALUES = ["a", "keep-alive", "close", "Keep-Alive", "x-up", "close, X-Up", "keep-alive, vary", "tea", "1"]


def random_response(rng: random.Random) -> tuple[bytes, list[tuple[str, str]]]:
    """A 200 with random fields and a Content-Length, and the fields a client must get of it (RFC 9110
    §7.6.1: no hop-by-hop field, none that a Connection field names, except framing and addressing)."""
    fields = [(rng.choice(RESPONSE_NAMES), rng.choice(RESPONSE_VALUES)) for _ in range(rng.randint(0, 7))]
    named = {
        token.strip().lower() for name, value in fields if name.lower() == "connection" for token in value.split(",")
    } - {"", "close", "keep-alive", "upgrade", "content-length", "transfer-encoding", "host", "expect"}
    hop = {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
    }
    kept = [(n.lower(), v) for n, v in fields if n.lower() not in hop | named]
    head = "".join(f"{n}:{rng.choice([' ', '', '  '])}{v}\r\n" for n, v in fields)
    return f"HTTP/1.1 200 OK\r\n{head}Content-Length: 4\r\n\r\nbody".encode(), kept


async def test_response_heads_lose_exactly_their_hop_by_hop_fields(start_proxy: StartProxy, origin: MakeOrigin) -> None:
    rng = random.Random(20261207)
    cases = [random_response(rng) for _ in range(150)]
    o = origin(lambda conn, req: (cases[int(req.target[1:])][0], False))
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    for i, (raw, kept) in enumerate(cases):
        [(status, fields, body)] = await exchange_all(proxy.ports["active"], b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        assert (status, body) == (200, b"body"), raw
        added = {("via", "1.1 bluegreen"), ("x-served-by-color", "blue")}  # the proxy's own lines
        got = [(n, v) for n, v in fields if (n, v) not in added and n != "content-length"]
        assert got == kept, raw


async def exchange_all(port: int, data: bytes) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    """One request on a fresh connection: its answer with every field line in order (names lowercased)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")[1:-2]
            fields = [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(":") for line in lines)]
            length = int(dict(fields)["content-length"])
            body = await reader.readexactly(length)
    finally:
        writer.close()
    return [(int(head[9:12]), fields, body)]
