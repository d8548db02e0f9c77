"""The data plane: the path of a request, in the order a reader walks it.

1. `client` — `ClientConnection`, one per accepted connection: parses the request head (llhttp),
   validates it, reads the RouteTable once and builds the Exchange.
2. `exchange` — `Exchange`, one request/response cycle: picks an endpoint of the pool its snapshot
   named, sends the request, relays the response, retries inside the pool.
3. `upstream` — `UpstreamConnection`, one pooled connection to an endpoint, with its response parser.
4. `pool` — `Pool` and `Endpoint`: balancing, health state, in-flight counts, idle connections, drain.
5. `outbox` — writes held until the loop iteration's events are handled, then one write per connection.
6. `http` — HTTP/1.1 constants and the proxy's own responses; `fieldscan` — a head's end and the fields of
   it the proxy acts on, found in one call (for `client` and `upstream`; a C twin where one was built).
7. `routes` — `RouteTable`, the immutable snapshot a request reads once, and the route word naming it.
8. `plane` — `DataPlane`: what one event loop serves (listeners, pools, routes, timers).
9. `loop` — the event loop it runs on (uvloop).

Nothing here imports the control plane, workers or the fleet: they drive a DataPlane from above.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, SourceFileLoader
from importlib.util import find_spec

# The install compiles these modules with mypyc where a C compiler is found (setup.py), and fieldscan.c (a C
# twin of fieldscan.py). With BLUEGREEN_PURE=1 the pure-Python modules run anyway: this package's folder is
# searched for sources only, before any of its modules is imported (workers inherit the variable, so they run
# the same mode). So they do when a source was edited after the build: an edit takes effect at once, compiled
# again at the next install.


def stale(folder: str) -> bool:
    """A compiled module in `folder` is older than its source (a module, or the C of a C twin)."""
    for name in os.listdir(folder):  # (a list: a scandir iterator left open warns)
        if name.endswith(".so"):
            compiled = os.path.join(folder, name)
            for suffix in (".py", ".c"):
                source = os.path.join(folder, name.split(".", 1)[0] + suffix)
                # A margin: an install writes a source and its compiled module a moment apart, in either order.
                if os.path.exists(source) and os.stat(source).st_mtime > os.stat(compiled).st_mtime + 2:
                    return True
    return False


def incomplete(folders: list[str]) -> bool:
    """Compiled modules whose shared runtime (built with them, `proxy_dataplane__mypyc`) is missing."""
    compiled = any(name.endswith(".so") for folder in folders for name in os.listdir(folder))
    return compiled and find_spec("proxy_dataplane__mypyc") is None


_FOLDERS = list(globals().get("__path__", [os.path.dirname(__file__)]))  # (also when imported as a module)
if os.environ.get("BLUEGREEN_PURE"):
    _PURE_BECAUSE = "BLUEGREEN_PURE=1"
elif any(stale(folder) for folder in _FOLDERS):
    _PURE_BECAUSE = "a source is newer than its compiled module: reinstall to compile it again"
elif incomplete(_FOLDERS):
    _PURE_BECAUSE = "the compiled modules' runtime is missing: reinstall"
else:
    _PURE_BECAUSE = ""
if _PURE_BECAUSE:
    for _folder in _FOLDERS:
        sys.path_importer_cache[_folder] = FileFinder(_folder, (SourceFileLoader, SOURCE_SUFFIXES))


def mode() -> str:
    """ "compiled" when the request path runs as mypyc-compiled modules, else "pure"."""
    from proxy.dataplane import client

    return "compiled" if (client.__file__ or "").endswith((".so", ".pyd")) else "pure"


def pure_because() -> str:
    """Why the request path runs pure ("" when it runs compiled): a benchmark of a stale build must say so."""
    if mode() == "compiled":
        return ""
    return _PURE_BECAUSE or "not compiled at install (no C compiler, or built with BLUEGREEN_PURE=1)"
