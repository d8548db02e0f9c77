"""`proxy.dataplane.fieldscan`: the reference (fieldscan.py) and its C twin (fieldscan.c, built at install)
give the same answers, on chosen heads and on generated ones.

Both are loaded from their files here, whatever mode this run is in, so the pure pass checks the C twin too.
"""

from __future__ import annotations

import importlib.util
import shutil
import sysconfig
from importlib.machinery import ExtensionFileLoader, SourceFileLoader
from types import ModuleType

import pytest
from hypothesis import given, settings, strategies as st

from tests.support import REPO

FOLDER = REPO / "proxy" / "dataplane"


def _load(name: str, loader: SourceFileLoader | ExtensionFileLoader) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, loader.path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


REFERENCE = _load("fieldscan_reference", SourceFileLoader("fieldscan_reference", str(FOLDER / "fieldscan.py")))
_BUILT = sorted(FOLDER.glob("fieldscan.*.so"))
C_TWIN = (
    _load("proxy.dataplane.fieldscan", ExtensionFileLoader("proxy.dataplane.fieldscan", str(_BUILT[0])))
    if _BUILT
    else None
)
IMPLEMENTATIONS = [REFERENCE] + ([C_TWIN] if C_TWIN is not None else [])
NAMES = {b"host": 2, b"connection": 5, b"content-length": 3, b"te": 4, b"transfer-encoding": 6, b"x": 0, b"z": 255}


def scan_all(data: bytes, start: int, kinds: dict[bytes, int] = NAMES) -> list[list[int] | None]:
    return [m.scan(data, start, m.table(kinds)) for m in IMPLEMENTATIONS]


def test_the_c_twin_is_built_where_a_compiler_is() -> None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    assert C_TWIN is not None or shutil.which(compiler) is None, "a C compiler is here but fieldscan.c was not built"
    if C_TWIN is not None:
        assert C_TWIN.IMPLEMENTATION == "C" and REFERENCE.IMPLEMENTATION == "Python"


@pytest.mark.parametrize(
    ("data", "start", "expected"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 0, [18, 14]),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, [27, 14, 2, 16, 21, 23]),
        (
            b"GET / HTTP/1.1\r\nHOST:a\r\nUser-Agent: u\r\nCoNnEcTiOn:  close \r\n\r\n",
            0,
            [62, 14, 2, 16, 21, 22, 5, 39, 50, 58],
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\n", 0, None),  # no empty line yet
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0, None),
        (b"GET / HTTP/1.1", 0, None),
        (b"", 0, None),
        (b"GET / HTTP/1.1\r\n\r\n", 19, None),  # past the end
        (b"GET / HTTP/1.1\r\n\r\n", -1, None),
        (b"GET / HTTP/1.1\r\n\r\n", 2**64, None),  # past what a C size holds, too
        (b"GET / HTTP/1.1\r\n\r\n", -(2**64), None),
        (b"GET / HTTP/1.1\r\n\r\n", 18, None),  # at the end: nothing yet
        (b"\r\n\r\n", 0, [4, 0]),  # an empty first line
        (b"\r\nHost: a\r\n\r\n", 0, [13, 0, 2, 2, 7, 9]),
        (b"hostname: a\r\nhost : a\r\nhost\r\nhost:\r\n\r\n", 0, [38, 11, 2, 29, 34, 34]),  # name, colon, at once
        (b"A\r\nx:1\r\nZ:2\r\n\r\n", 0, [15, 1, 0, 3, 5, 6, 255, 8, 10, 11]),  # kinds 0 and 255
        (b"A\rB\r\r\nhost:\r1\r\n\r\n", 0, [17, 4, 2, 6, 11, 13]),  # a CR alone is inside a line
        (b"A\nB\r\n\nhost:1\r\n\r\n", 0, [16, 3]),  # so is an LF alone (here it starts "\nhost", no name)
        (b"A\r\n\rhost:1\r\n\r\n", 0, [14, 1]),  # "\rhost" is not a name in the table
        (b"A\rhost: 1\r\n\r\n", 0, [13, 9]),
        # A second head, pipelined: offsets from its start.
        (b"GET / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nconnection: keep-alive\r\n\r\n", 18, [43, 15, 5, 17, 28, 39]),
        # llhttp's bytes: `| 32` folds CR (13) onto "-" (45) as field_kind always did; llhttp refuses such a head.
        (b"A\r\ncontent\rlength: 1\r\n\r\n", 0, [24, 1, 3, 3, 18, 20]),
    ],
)
def test_chosen_heads(data: bytes, start: int, expected: list[int] | None) -> None:
    assert scan_all(data, start) == [expected] * len(IMPLEMENTATIONS)


def test_many_fields_of_interest() -> None:
    """More fields of interest than the C twin keeps on its stack."""
    head = b"GET / HTTP/1.1\r\n" + b"Connection: a\r\nCookie: c\r\n" * 300 + b"\r\n"
    (result, *others) = scan_all(head, 0)
    assert result is not None and len(result) == 2 + 4 * 300 and result[0] == len(head)
    assert result[2:6] == [5, 16, 27, 29] and all(other == result for other in others)


def test_tables_refuse_what_scan_cannot_read() -> None:
    for bad in ({b"Host": 1}, {b"": 1}, {b"a" * 256: 1}, {b"host": 256}, {b"host": -1}):
        for module in IMPLEMENTATIONS:
            with pytest.raises(ValueError, match="field names must be lowercase"):
                module.table(bad)


# Heads built from the pieces a scanner could trip on: line ends whole and broken, colons, spaces, names of
# the table in any case, their prefixes and extensions, and bytes above 127.
PIECES = [
    b"\r\n",
    b"\r",
    b"\n",
    b"\r\n\r\n",
    b":",
    b" ",
    b"\t",
    b"host",
    b"Host",
    b"HOST",
    b"hos",
    b"hostx",
    b"connection",
    b"Content-Length",
    b"te",
    b"TE",
    b"Transfer-Encoding",
    b"x",
    b"Z",
    b"-",
    b"GET / HTTP/1.1",
    b"a",
    b"\x00",
    b"\xff",
    b"\xc8",
    b"@",
]


@settings(max_examples=3000, deadline=None)
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=40), start=st.integers(min_value=-2, max_value=60))
def test_both_give_the_same_answer(pieces: list[bytes], start: int) -> None:
    data = b"".join(pieces)
    results = scan_all(data, start)
    assert all(result == results[0] for result in results), (data, start, results)
