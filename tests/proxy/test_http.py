"""HTTP/1.1 fidelity through the proxy (RFC 9110/9112), with raw sockets where a client would fix the input."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable

import aiohttp
import pytest

from tests.proxy.conftest import RawUpstream, StartProxy, StartUpstream, parse_responses, raw_request


async def test_keep_alive_and_host_preserved(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    port = proxy.ports["active"]
    req = b"GET /echo HTTP/1.1\r\nHost: example.test\r\n\r\n"
    out = parse_responses(
        await raw_request(port, req * 3 + b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    )
    assert [s for s, _, _ in out] == [200, 200, 200, 200]
    first = json.loads(out[0][2])
    headers = {k.lower(): v for k, v in first["headers"]}
    assert headers["host"] == "example.test"
    assert headers["x-forwarded-host"] == "example.test"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["via"] == "1.1 bluegreen"
    assert out[3][1]["connection"] == "close"
    assert all(h["x-served-by-color"] == "blue" for _, h, _ in out)


async def test_hop_by_hop_removed_both_ways(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    req = (
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, Foo\r\nX-Secret: 1\r\nFoo: 2\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\n"
        b"Proxy-Authorization: Basic eDp5\r\nX-Kept: yes\r\nConnection: close\r\n\r\n"
    )
    [(status, headers, body)] = parse_responses(await raw_request(proxy.ports["active"], req))
    assert status == 200
    seen = {k.lower() for k, _ in json.loads(body)["headers"]}
    assert "x-kept" in seen and "upgrade-insecure-requests" in seen
    for name in ("connection", "x-secret", "foo", "keep-alive", "te", "proxy-connection", "proxy-authorization"):
        assert name not in seen, name


async def test_x_forwarded_for_appended_for_trusted_peer(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    blue = await upstream("blue")
    trusting = await start_proxy({"blue": [blue]}, preview=None)
    req = b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.7\r\nVia: 1.0 edge\r\nConnection: close\r\n\r\n"
    [(_, _, body)] = parse_responses(await raw_request(trusting.ports["active"], req))
    headers = json.loads(body)["headers"]
    assert [v for k, v in headers if k.lower() == "x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert [v for k, v in headers if k.lower() == "via"] == ["1.0 edge, 1.1 bluegreen"]
    # With no trusted proxies a client's own X-Forwarded-For is replaced, never forwarded as a second line.
    strict = await start_proxy({"blue": [blue]}, preview=None, trusted_proxies=[])
    [(_, _, body)] = parse_responses(await raw_request(strict.ports["active"], req))
    headers = json.loads(body)["headers"]
    assert [v for k, v in headers if k.lower() == "x-forwarded-for"] == ["127.0.0.1"]


async def test_bodies_streamed_both_ways(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    base = f"http://127.0.0.1:{proxy.ports['active']}"
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def gen() -> object:
        for i in range(0, len(payload), 100_000):
            yield payload[i : i + 100_000]

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/echo", data=gen()) as resp:  # chunked upload
            echo = await resp.json()
        assert echo["size"] == len(payload) and echo["sha256"] == hashlib.sha256(payload).hexdigest()
        async with session.put(f"{base}/echo", data=payload) as resp:  # Content-Length upload
            echo = await resp.json()
        assert echo["method"] == "PUT" and echo["sha256"] == hashlib.sha256(payload).hexdigest()
        async with session.get(f"{base}/big?size=3000000") as resp:
            assert resp.headers["Content-Length"] == "3000000"
            assert len(await resp.read()) == 3000000
        async with session.get(f"{base}/stream?chunks=4&ms=10") as resp:  # chunked response re-framed
            assert resp.headers["Transfer-Encoding"] == "chunked"
            assert (await resp.text()).count("blue chunk") == 4


async def test_expect_100_continue(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports["active"])
    writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"hello")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_head_204_304(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    req = (
        b"HEAD /big?size=1000 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /status/304 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"HEAD /big?size=10 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /big?size=7 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    data = await raw_request(proxy.ports["active"], req)
    # HEAD keeps the Content-Length of the GET it stands for, with no body after it.
    heads = data.split(b"\r\n\r\n")
    assert heads[0].startswith(b"HTTP/1.1 200") and b"Content-Length: 1000" in heads[0]
    assert heads[1].startswith(b"HTTP/1.1 204")
    assert heads[2].startswith(b"HTTP/1.1 304")
    assert heads[3].startswith(b"HTTP/1.1 200") and b"Content-Length: 10" in heads[3]
    assert heads[4].startswith(b"HTTP/1.1 200") and heads[5] == b"xxxxxxx"


async def test_pipelined_requests_answered_in_order(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    req = b"".join(
        b"GET /slow?ms=%d HTTP/1.1\r\nHost: a\r\nX-N: %d\r\n\r\n" % (ms, i) for i, ms in enumerate((80, 5, 40, 0))
    )
    req += b"GET /echo?last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    out = parse_responses(await raw_request(proxy.ports["active"], req))
    assert [s for s, _, _ in out] == [200] * 5
    assert json.loads(out[4][2])["path"] == "/echo?last"


async def test_websocket_upgrade_passthrough(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{proxy.ports['active']}/ws") as ws:
            for i in range(3):
                await ws.send_str(f"m{i}")
                assert await ws.receive_str() == f"blue:m{i}"


async def test_http10_client(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    data = await raw_request(proxy.ports["active"], b"GET /stream?chunks=2&ms=1 HTTP/1.0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
    assert body == b"blue chunk 0\nblue chunk 1\n"


async def test_preview_without_pool_is_503_never_live(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")]}, preview=None)
    [(status, headers, _)] = parse_responses(
        await raw_request(proxy.ports["preview"], b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    )
    assert status == 503 and headers["retry-after"] == "1"
    empty = await start_proxy({"blue": [await upstream("blue")], "green": []})
    [(status, _, _)] = parse_responses(
        await raw_request(empty.ports["preview"], b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    )
    assert status == 503


@pytest.fixture
async def recorder(raw_upstream: Callable[..., RawUpstream]) -> RawUpstream:
    """An upstream that records every byte it receives: nothing malformed may arrive."""
    return raw_upstream()


MALFORMED = {
    "cl_and_te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "duplicate_cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "conflicting_cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl_list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
    "chunked_not_last": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "chunkedx": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nHost: a\r\nFoo : bar\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\nHost: a\r\nFoo: bar\r\n baz\r\n\r\n",
    "bare_cr": b"GET / HTTP/1.1\r\nHost: a\r\nFoo: b\rar\r\n\r\n",
    "nul_in_value": b"GET / HTTP/1.1\r\nHost: a\r\nFoo: b\x00r\r\n\r\n",
    "missing_host": b"GET / HTTP/1.1\r\nFoo: bar\r\n\r\n",
    "duplicate_host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "http10_te": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "oversized_header": b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "bad_version": b"GET / HTTP/2.7\r\nHost: a\r\n\r\n",
    "bad_chunk_size": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_request_400_and_never_forwarded(
    case: str, start_proxy: StartProxy, recorder: RawUpstream
) -> None:
    rec = recorder
    proxy = await start_proxy({"blue": [await rec.start()]}, preview=None)
    data = await raw_request(proxy.ports["active"], MALFORMED[case])
    assert data.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 505 ", b"HTTP/1.1 431 ")), data[:80]
    assert b"connection: close" in data.lower()
    if case == "bad_chunk_size":
        # Its head was valid, so it may have started upstream; the upstream never sees a complete body.
        assert b"abc" not in rec.received
    else:
        assert rec.received == b""


async def test_valid_request_after_pipelined_garbage_is_answered_first(
    start_proxy: StartProxy, recorder: RawUpstream
) -> None:
    rec = recorder
    proxy = await start_proxy({"blue": [await rec.start()]}, preview=None)
    data = await raw_request(
        proxy.ports["active"], b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nFoo : x\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400" in data
    assert rec.received.count(b"GET") == 1


async def test_connect_method_refused(start_proxy: StartProxy, recorder: RawUpstream) -> None:
    rec = recorder
    proxy = await start_proxy({"blue": [await rec.start()]}, preview=None)
    data = await raw_request(
        proxy.ports["active"], b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 405") and rec.received == b""


class PiecewiseUpstream:
    """Answers every request head with `pieces`, written one at a time with a pause between, so the proxy
    reads a response head in several parts (and interim and final heads in various groupings)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.server: asyncio.Server | None = None
        self.handlers: list[asyncio.Task[None]] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                for piece in self.pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)  # the pause between pieces (the point of this upstream)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in self.handlers:
                task.cancel()
            await asyncio.gather(*self.handlers, return_exceptions=True)
            await self.server.wait_closed()


async def two_requests_through(
    start_proxy: StartProxy, upstream: PiecewiseUpstream
) -> list[tuple[int, dict[str, str], bytes]]:
    """Two requests on one client connection through a proxy whose pools are `upstream`; the responses."""
    address = await upstream.start()
    try:
        proxy = await start_proxy({"blue": [address], "green": [address]})
        req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        return parse_responses(await raw_request(proxy.ports["active"], req))
    finally:
        await upstream.close()


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nX-Before: 1\r\nCONNECTION: Keep-Alive, X-Private\r\nKeep-Alive: timeout=5\r\n"
        b"X-Private: secret\r\nTrailer: X-Sum\r\nProxy-Authenticate: Basic\r\nConnection: x-other\r\n"
        b"X-Other: 2\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n",
        # Only Connection fields, the second naming another field: the common path must not stop at the first.
        b"HTTP/1.1 200 OK\r\nX-Before: 1\r\nConnection: keep-alive\r\nX-Other: 2\r\nconnection: X-Other\r\n"
        b"Content-Length: 10\r\nX-Kept: yes\r\n\r\n",
    ],
    ids=["every-kind", "two-connection-fields"],
)
async def test_response_hop_by_hop_fields_removed(start_proxy: StartProxy, head: bytes) -> None:
    chunked = b"Transfer-Encoding" in head
    upstream = PiecewiseUpstream([head, b"4\r\nabcd\r\n6\r\nefghij\r\n0\r\n\r\n" if chunked else b"abcdefghij"])
    out = await two_requests_through(start_proxy, upstream)
    assert [status for status, _, _ in out] == [200, 200]
    for _, headers, got in out:
        assert got == b"abcdefghij"
        assert headers["x-before"] == "1" and headers["x-kept"] == "yes"
        if chunked:
            assert headers["transfer-encoding"] == "chunked"  # re-framed by the proxy, once
        else:
            assert headers["content-length"] == "10" and "transfer-encoding" not in headers
        for name in ("keep-alive", "x-private", "trailer", "proxy-authenticate", "x-other", "upgrade"):
            assert name not in headers, name
    assert out[0][1].get("connection") is None and out[1][1]["connection"] == "close"


@pytest.mark.parametrize(
    "pieces",
    [
        # A head in three reads, cut inside a field name, inside the CRLF CRLF and before the body.
        [b"HTTP/1.1 200 OK\r\nX-A: 1\r\nConte", b"nt-Length: 5\r\nConnection: keep-alive\r\n\r", b"\nhello"],
        # An interim 103 then the final head in one read; then a 100 nobody asked for, alone, then the rest.
        [
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2",
            b"00 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhel",
            b"lo",
        ],
    ],
    ids=["split-head", "interim-heads"],
)
async def test_response_head_in_pieces(start_proxy: StartProxy, pieces: list[bytes]) -> None:
    upstream = PiecewiseUpstream(pieces)
    out = await two_requests_through(start_proxy, upstream)
    finals = [(status, headers, got) for status, headers, got in out if status >= 200]
    assert [status for status, _, _ in finals] == [200, 200]
    for _, headers, got in finals:
        assert got == b"hello" and headers["x-a"] == "1" and headers["content-length"] == "5"
        assert "connection" not in headers or headers["connection"] == "close"
    interim = [status for status, _, _ in out if status < 200]
    assert interim == ([103, 103] if len(pieces) == 3 and pieces[0].startswith(b"HTTP/1.1 103") else [])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_large_body_in_the_heads_read_goes_out_whole_and_in_order(start_proxy: StartProxy, chunked: bool) -> None:
    """A head and a large body in one upstream read leave in one writev (`Sender.write_parts`: pieces past
    `JOIN_LIMIT` are not joined): every byte in its place, twice on one connection."""
    body = bytes(range(256)) * 96  # 24 KiB, no two neighbouring 256-byte runs alike in their place
    if chunked:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        piece = head + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    else:
        piece = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: 1\r\n\r\n" % len(body) + body
    out = await two_requests_through(start_proxy, PiecewiseUpstream([piece]))
    assert [status for status, _, _ in out] == [200, 200]
    for _, headers, got in out:
        assert got == body and headers["x-a"] == "1"


async def test_endless_response_head_is_502(start_proxy: StartProxy) -> None:
    """An upstream whose head never ends is failed once it passes `limits.max_header_bytes`: the proxy does
    not hold an unbounded head, and the client gets a 502 rather than a stall."""
    upstream = PiecewiseUpstream([b"HTTP/1.1 200 OK\r\n"] + [b"X-Fill: " + b"a" * 1000 + b"\r\n"] * 8 + [b"X-More: "])
    address = await upstream.start()
    try:
        proxy = await start_proxy({"blue": [address]}, preview=None, limits={"max_header_bytes": 4096})
        answer = await raw_request(proxy.ports["active"], b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    finally:
        await upstream.close()
    assert answer.startswith(b"HTTP/1.1 502"), answer[:80]
