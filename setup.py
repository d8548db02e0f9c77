"""Build the data plane compiled with mypyc where a C compiler is found (else, or with BLUEGREEN_PURE=1,
the pure-Python modules run unchanged). Everything else about the package is in pyproject.toml."""

from __future__ import annotations

import os
import shutil
import sysconfig

from setuptools import Extension, setup

# The request path, compiled: the modules every request runs through.
COMPILED = [
    "proxy/dataplane/http.py",
    "proxy/dataplane/outbox.py",
    "proxy/dataplane/routes.py",
    "proxy/dataplane/pool.py",
    "proxy/dataplane/upstream.py",
    "proxy/dataplane/exchange.py",
    "proxy/dataplane/client.py",
    "proxy/dataplane/accesslog.py",
    "proxy/dataplane/plane.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("BLUEGREEN_PURE"):
        return []
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    extensions = mypycify(COMPILED, opt_level="3", group_name="proxy_dataplane")
    # fieldscan.py's C twin (a head's end and the fields the proxy acts on, in one pass): plain C, as mypyc
    # compiles a bytes method call to a generic one.
    extensions.append(
        Extension("proxy.dataplane.fieldscan", ["proxy/dataplane/fieldscan.c"], extra_compile_args=["-O2"])
    )
    for ext in extensions:
        ext.optional = True  # a compile error falls back to the pure modules instead of failing the install
    return extensions


setup(ext_modules=ext_modules())
