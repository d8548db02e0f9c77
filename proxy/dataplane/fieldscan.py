"""Find the end of a head and the few fields of it the proxy acts on, in one call.

A head (request or status line, field lines, empty line) is forwarded as it came, less what the proxy cuts;
only fields whose names are in a table (Host, Connection, Content-Length, hop-by-hop...) are read. `scan`
returns the head's length and, for each such field, where it is; every other field is passed over unread.

This is the reference implementation, run in the pure mode. The install compiles `fieldscan.c`, its C twin
with the same functions, which shadows this module where it was built (as mypyc's modules shadow theirs). A
browser's head has about 17 fields: here that is a `find`, a `split` into one bytes object per line and a
table lookup per line (~11k instructions per request and response under mypyc); the C twin walks the bytes
once and allocates only the result. tests/proxy/test_fieldscan.py checks that both give the same answers.
"""

from __future__ import annotations

from typing import cast

from proxy.dataplane.http import named

Table = object  # opaque: what `table` built, for `scan` (a tuple here, bytes in the C twin)

IMPLEMENTATION = "Python"


def table(kinds: dict[bytes, int]) -> Table:
    """`kinds` (lowercase name: kind, 0-255) as `scan` reads it: indexed by a name's first byte."""
    for name, kind in kinds.items():
        if not name or len(name) > 255 or name != name.lower() or not 0 <= kind <= 255:
            raise ValueError(f"field names must be lowercase, 1-255 bytes, with a kind of 0-255: {name!r}")
    return tuple(tuple((name, kind) for name, kind in kinds.items() if name[0] == first) for first in range(256))


def scan(data: bytes, start: int, names: Table) -> list[int] | None:
    """The head that starts at `start` in `data`: None when it is not complete (no empty line yet), else
    `[head length, first line's length, (kind, line start, value start, line end) per field in names...]`,
    offsets from `start`. Lines end with CRLF. A field is in `names` when its line starts with a name, in
    any case, then a colon; its value starts after the colon (OWS included), its line ends before the CRLF.

    The head is not checked: llhttp does that (a field line llhttp accepts is `name ":" OWS value OWS`)."""
    if not 0 <= start <= len(data):
        return None
    end = data.find(b"\r\n\r\n", start) + 4
    if end < 4:
        return None
    lines = data[start:end].split(b"\r\n")  # the first line, a line per field, then two empty ones
    found = [end - start, len(lines[0])]
    offset = len(lines[0]) + 2
    by_first = cast(tuple[tuple[tuple[bytes, int], ...], ...], names)  # built by `table`
    for index in range(1, len(lines) - 2):
        field = lines[index]
        length = len(field)
        for name, kind in by_first[field[0] | 32]:
            colon = len(name)
            if length > colon and field[colon] == 58 and named(field, name):
                found.extend((kind, offset, offset + colon + 1, offset + length))
                break
        offset += length + 2
    return found
