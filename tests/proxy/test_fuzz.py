"""Property-based fuzzing (hypothesis, bounded): raw HTTP against a live proxy, the config loader, the admin API.

The proxy and a recording upstream run on their own event loop in a thread; examples use blocking
sockets, so each example is one real exchange over loopback.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from proxy.config import ConfigError, parse_config
from proxy.server import ProxyServer
from tests.proxy.conftest import proxy_config
from tests.proxy.origin import _Parser


class Recorder:
    def __init__(self) -> None:
        self.received = bytearray()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.received += data
                if b"\r\n\r\n" in data:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except ConnectionError:
            pass
        writer.close()


class LiveProxy:
    def __init__(self) -> None:
        self.recorder = Recorder()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.ports: dict[str, int] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(15)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.upstream = await asyncio.start_server(self.recorder.handle, "127.0.0.1", 0)
        address = f"127.0.0.1:{self.upstream.sockets[0].getsockname()[1]}"
        config = proxy_config({"blue": [address], "green": [address]}, "blue", "green")
        config["timeouts"] = {"client_header": "500ms", "idle": "500ms", "upstream_header": "1s"}
        self.server = ProxyServer(parse_config(config))
        await self.server.start()
        self.ports = self.server.ports

    def stop(self) -> None:
        async def stop() -> None:
            await self.server.stop(grace=0.5)
            self.upstream.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def exchange(self, data: bytes, wait: float = 0.3) -> bytes:
        with socket.create_connection(("127.0.0.1", self.ports["active"]), timeout=wait) as sock:
            try:
                sock.sendall(data)
            except OSError:
                pass
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except (TimeoutError, OSError):
                pass
        return b"".join(chunks)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveProxy]:
    proxy = LiveProxy()
    yield proxy
    proxy.stop()


VALID = [
    b"GET /a?b=c HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: example\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /c HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
]
NASTY = [b"\r", b"\n", b"\x00", b" ", b":", b"\t", b"\r\n", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "nasty", "header"]))
        if kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 4))]
        elif kind == "nasty":
            data[pos:pos] = draw(st.sampled_from(NASTY))
        else:
            head_end = data.find(b"\r\n") + 2 if b"\r\n" in data else 0
            name = draw(st.binary(min_size=1, max_size=12))
            value = draw(st.binary(max_size=16))
            data[head_end:head_end] = name + b": " + value + b"\r\n"
    return bytes(data)


def first_status(data: bytes) -> int | None:
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data[9:12])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=mutated())
def test_raw_request_fuzz(live: LiveProxy, request: bytes) -> None:
    live.recorder.received.clear()
    answer = live.exchange(request)
    status = first_status(answer)
    if status is not None and status >= 400 and status not in (502, 503, 504):
        # Refused by the proxy: nothing of it reached the upstream.
        assert bytes(live.recorder.received) == b"", (request, answer[:100])
    # The proxy is alive and answers a valid request correctly afterwards.
    ok = live.exchange(b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait=2)
    assert ok.startswith(b"HTTP/1.1 200 OK") and ok.endswith(b"ok"), ok[:100]


def valid_config() -> dict[str, Any]:
    return proxy_config({"blue": ["127.0.0.1:9101"], "green": ["127.0.0.1:9201"]}, "blue", "green")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**20), 2**20) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def config_mutation(draw: st.DrawFn) -> dict[str, Any]:
    config = valid_config()
    node: Any = config
    path = []
    while isinstance(node, dict) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node)))
        path.append(key)
        if not isinstance(node[key], dict):
            break
        node = node[key]
    target = config
    for key in path[:-1]:
        target = target[key]
    if path:
        target[path[-1]] = draw(json_values)
    else:
        config[draw(st.text(max_size=8))] = draw(json_values)
    return config


@settings(max_examples=400, deadline=None)
@given(data=config_mutation())
def test_config_fuzz_either_loads_or_says_why(data: dict[str, Any]) -> None:
    try:
        parse_config(data, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml") and exc.reason


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["POST", "PUT", "DELETE", "GET"]),
    path=st.sampled_from(["/api/v1/switch", "/api/v1/pools/fz", "/api/v1/pools/fz2", "/api/v1/routes"]),
    body=json_values
    | st.fixed_dictionaries({"active": json_values})
    | st.fixed_dictionaries({"endpoints": json_values}),
)
def test_admin_fuzz_never_500(live: LiveProxy, method: str, path: str, body: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", live.ports["admin"], timeout=10)
    try:
        conn.request(method, path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
    finally:
        conn.close()
    assert resp.status in (200, 201, 400, 404, 405, 409), (resp.status, payload)
    if resp.status >= 400:
        assert "error" in json.loads(payload)


# -- plain heads (one piece) against field-by-field ones --------------------------------------------------------

NAMES = [
    b"Host",
    b"host",
    b"HOST",
    b"Hostx",
    b"Connection",
    b"connection",
    b"Accept",
    b"Cookie",
    b"X-Api-Key",
    b"X-Forwarded-For",
    b"X-Request-Id",
    b"Te",
    b"Trailer",
    b"Upgrade",
    b"Expect",
    b"Keep-Alive",
    b"Via",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Proxy-Authorization",
    b"Forwarded",
    b"User-Agent",
    b"C",
]
VALUES = [
    b"a",
    b"example.com",
    b"keep-alive",
    b"close",
    b"Keep-Alive",
    b"upgrade",
    b"x-api-key",
    b"0",
    b"3",
    b"chunked",
    b"trailers",
    b"100-continue",
    b" a ",
    b"\ta",
    b"a b",
    b"",
    b"*/*",
    b"03",
    b"+3",
    b"3 ",
    b"1",
    b"99999999999999999999",
]


PLAIN = [
    b"Host",
    b"host",
    b"HOST",
    b"Hostx",
    b"Accept",
    b"Cookie",
    b"X-Api-Key",
    b"User-Agent",
    b"C",
    b"Connection",
    b"Content-Length",
]


@st.composite
def plain_ish(draw: st.DrawFn) -> bytes:
    """A head of fields a proxy acts on or not, in any case and order, sometimes broken, sometimes a body.
    Three fields in four are of names a plain head may have, so most heads take the one-piece path."""
    target = draw(st.sampled_from([b"/", b"/a?b", b"/c", b"*", b"http://h/x", b"/x y"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    fields = b"".join(
        draw(st.sampled_from(PLAIN if draw(st.integers(0, 3)) else NAMES))
        + b":"
        + draw(st.sampled_from([b" ", b"", b"  "]))
        + draw(st.sampled_from(VALUES))
        + b"\r\n"
        for _ in range(draw(st.integers(0, 6)))
    )
    head = b"GET " + target + b" " + version + b"\r\n" + fields + b"\r\n"
    data = bytearray(head + draw(st.sampled_from([b"", b"abc"])))
    if draw(st.integers(0, 4)) == 0:
        pos = draw(st.integers(len(b"GET / HTTP/1.1\r\n"), len(data)))
        data[pos:pos] = draw(st.sampled_from(NASTY))
    return bytes(data)


def upstream_bytes(
    live: LiveProxy, request: bytes
) -> tuple[list[int], list[tuple[str, str, list[tuple[str, str]], bytes]]]:
    """The statuses the client got and the requests the upstream received, with the client's side shut after
    sending (the proxy answers what it read, then closes)."""
    live.recorder.received.clear()
    with socket.create_connection(("127.0.0.1", live.ports["active"]), timeout=2) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
    answer = b"".join(chunks)
    statuses = [int(answer[i + 9 : i + 12]) for i in range(len(answer)) if answer.startswith(b"HTTP/1.1 ", i)]
    return statuses, requests_in(bytes(live.recorder.received))


def requests_in(raw: bytes) -> list[tuple[str, str, list[tuple[str, str]], bytes]]:
    """The requests in `raw` as a server reads them (a plain head's field lines go as they came: `Host:a`,
    where a head built field by field says `Host: a`), less the generated request ids."""
    parser = _Parser()
    parser.parser.feed_data(raw)
    return [
        (r.method, r.target, [(k.lower(), v) for k, v in r.headers if k.lower() != "x-request-id"], r.body)
        for r in parser.done
    ]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=plain_ish())
def test_plain_heads_fuzz_against_field_by_field(live: LiveProxy, request: bytes) -> None:
    """Whatever a head holds, the proxy answers and forwards it alike whether it is served in one piece
    (`_scan`) or field by field (the same head with a `TE: trailers` field, which is dropped)."""
    line_end = request.index(b"\r\n") + 2
    slowed = request[:line_end] + b"TE: trailers\r\n" + request[line_end:]
    assert upstream_bytes(live, request) == upstream_bytes(live, slowed), request
