"""`python -m loadtest.hotpath` runs and relays a correct response (no timing is asserted)."""

from __future__ import annotations

import asyncio

import pytest

from loadtest import hotpath


def test_hotpath_relays_the_response() -> None:
    seconds, upstream_head, client_response = asyncio.run(hotpath.run(200, 1))
    assert seconds > 0
    assert upstream_head.startswith(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9400\r\n")
    assert b"\r\nx-forwarded-for: 127.0.0.1\r\n" in upstream_head
    assert client_response.startswith(b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n")
    assert b"connection:" not in client_response.lower()  # the upstream's hop-by-hop field was cut
    assert client_response.endswith(b"x-served-by-color: blue\r\n\r\nhello\n")


def test_hotpath_command() -> None:
    assert hotpath.main(["--requests", "100", "--rounds", "1"]) == 0


@pytest.mark.parametrize("fields", sorted(hotpath.FIELDS))
def test_hotpath_every_case_relays_both_messages_whole(fields: str) -> None:
    """Each case's request and response reach the other side with their bodies whole (`main` checks them:
    an API POST's body, the 64 KiB upload and response written as pieces)."""
    assert hotpath.main(["--requests", "50", "--rounds", "1", "--fields", fields]) == 0
