"""Request targets and Host to the letter (RFC 9110 §4.2, §7.2; RFC 9112 §3.2), and no 1xx to HTTP/1.0,
through the real proxy to a recording origin: what must be refused never reaches it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.proxy.conftest import StartProxy, parse_responses, raw_request
from tests.proxy.origin import OriginConnection, RecordingOrigin, Request, ok


@pytest.fixture
async def origin() -> AsyncIterator[Callable[..., RecordingOrigin]]:
    made: list[RecordingOrigin] = []

    def make(answer: Callable[[OriginConnection, Request], tuple[bytes, bool]] = ok) -> RecordingOrigin:
        made.append(RecordingOrigin(answer))
        return made[-1]

    yield make
    for o in made:
        await o.close()


BAD_HOSTS = {
    "userinfo": b"user@good.example",
    "path": b"good.example/x",
    "query": b"good.example?x",
    "empty": b"",
    "list": b"a.example, b.example",
    "port_letters": b"good.example:8x",
    "port_sign": b"good.example:-80",
    "two_colons": b"good.example:80:80",
    "bad_char": b"good\\example",
    "bad_pct": b"good%zzexample",
    "ipv6_unclosed": b"[::1",
}
GOOD_HOSTS = [b"good.example", b"good.example:8080", b"[::1]:8080", b"127.0.0.1", b"xn--bcher-kva.example", b"a.b:"]


@pytest.mark.parametrize("case", sorted(BAD_HOSTS))
async def test_bad_host_is_400_and_never_forwarded(
    case: str, start_proxy: StartProxy, origin: Callable[..., RecordingOrigin]
) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    answer = await raw_request(proxy.ports["active"], b"GET / HTTP/1.1\r\nHost: " + BAD_HOSTS[case] + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:60]
    assert o.connections == []


async def test_good_hosts_pass_and_are_checked_per_value(
    start_proxy: StartProxy, origin: Callable[..., RecordingOrigin]
) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    # One connection, several values: a valid one does not let a later invalid one through.
    heads = b"".join(b"GET /%d HTTP/1.1\r\nHost: %b\r\n\r\n" % (i, h) for i, h in enumerate(GOOD_HOSTS))
    out = parse_responses(await raw_request(proxy.ports["active"], heads + b"GET /bad HTTP/1.1\r\nHost: a@b\r\n\r\n"))
    assert [s for s, _, _ in out] == [200] * len(GOOD_HOSTS) + [400]
    assert sorted(r.fields("host")[0] for r in o.requests) == sorted(h.decode() for h in GOOD_HOSTS)


async def test_asterisk_form_only_with_options(start_proxy: StartProxy, origin: Callable[..., RecordingOrigin]) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    port = proxy.ports["active"]
    [(status, _, _)] = parse_responses(
        await raw_request(port, b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    )
    assert status == 200 and o.requests[0].method == "OPTIONS" and o.requests[0].target == "*"
    for method in (b"GET", b"POST", b"DELETE"):
        answer = await raw_request(port, method + b" * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 "), method
    assert len(o.requests) == 1


async def test_authority_form_only_with_connect(
    start_proxy: StartProxy, origin: Callable[..., RecordingOrigin]
) -> None:
    o = origin()
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    port = proxy.ports["active"]
    assert (await raw_request(port, b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n")).startswith(
        b"HTTP/1.1 405 "
    )
    assert (await raw_request(port, b"GET a.example:443 HTTP/1.1\r\nHost: a.example\r\n\r\n")).startswith(
        b"HTTP/1.1 400 "
    )
    assert o.connections == []


async def test_no_1xx_to_an_http10_client(start_proxy: StartProxy, origin: Callable[..., RecordingOrigin]) -> None:
    def continue_anyway(conn: OriginConnection, req: Request) -> tuple[bytes, bool]:
        answer, close = ok(conn, req)
        return b"HTTP/1.1 100 Continue\r\n\r\n" + answer, close  # an origin that sends 100 unasked

    o = origin(continue_anyway)
    proxy = await start_proxy({"blue": [await o.start()]}, preview=None)
    port = proxy.ports["active"]
    answer = await raw_request(port, b"POST /up HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
    assert answer.startswith(b"HTTP/1.1 200 ") and b" 100 " not in answer.split(b"\r\n")[0]
    assert b"100 Continue" not in answer
    assert o.requests[0].fields("expect") == [] and o.requests[0].body == b"hi"
    # HTTP/1.1 keeps Expect and gets the 100.
    answer = await raw_request(
        port,
        b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
    assert o.requests[1].fields("expect") == ["100-continue"]
