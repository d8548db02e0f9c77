"""Memory held by idle keep-alive client connections: `python -m loadtest.idle [--connections 10000] [--tls]`.

Starts `bluegreen proxy` (one worker) in front of a tiny upstream in this process, opens N client
connections that each make one request and then stay open, idle, and reports the proxy's resident
memory (supervisor and workers, from /proc) before and after. Loopback only, bounded in time.

`--tls`: the listener terminates TLS (a self-signed ECDSA P-256 certificate made with `openssl req`),
and each client connection completes a TLS 1.3 handshake before its request. `--target haproxy|nginx`
puts HAProxy 2.6 (one thread) or nginx (one worker) in the proxy's place, with the same certificate,
suite and upstream, for the same figure beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtest.bench import TLS12_SUITE, TLS13_SUITE, make_certificate

HOST = "127.0.0.1"
TARGETS = ("ours", "haproxy", "nginx")

HAPROXY_CONF = """\
global
    nbthread 1
    maxconn {maxconn}
    ssl-default-bind-ciphersuites {tls13}
    ssl-default-bind-ciphers {tls12}
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    timeout http-keep-alive 600s
frontend fe
    bind {host}:{port}{ssl}
    default_backend be
backend be
    server up {host}:{upstream}
"""
NGINX_CONF = """\
daemon off;
worker_processes 1;
worker_rlimit_nofile {nginx_conns};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections {nginx_conns}; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/client_body;
  proxy_temp_path {tmp}/proxy;
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  upstream up {{ server {host}:{upstream}; keepalive 16; }}
  server {{
    listen {host}:{port}{ssl};
{tls}    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def rss_kib(root: int) -> int:
    """Resident memory of `root` and its children, in KiB."""
    total = 0
    pids = [root]
    out = subprocess.run(["pgrep", "-P", str(root)], capture_output=True, text=True).stdout
    pids += [int(p) for p in out.split()]
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    writer.close()


def proxy_argv(target: str, tmp: Path, port: int, up: int, tls: bool, connections: int) -> list[str]:
    """The command line (and config files in `tmp`) for HAProxy or nginx on `port` in front of `up`."""
    # HAProxy reserves two descriptors per connection (client and server) and refuses to start when its
    # open-file limit cannot cover that: its maxconn stays within the hard limit (10,000 clients need a limit
    # above 21,000; with a limit of 20,000 HAProxy is measured at 9,000).
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    maxconn = min(connections + 500, (limit - 200) // 2)
    if target == "haproxy" and maxconn < connections:
        raise SystemExit(f"open-file limit {limit} is too low for HAProxy with {connections} connections")
    fmt = {"host": HOST, "port": port, "upstream": up, "tmp": tmp, "tls12": TLS12_SUITE, "tls13": TLS13_SUITE}
    fmt |= {"maxconn": maxconn, "nginx_conns": connections + 1000}
    if target == "haproxy":
        ssl_bind = f" ssl crt {tmp}/tls-both.pem alpn http/1.1" if tls else ""
        (tmp / "haproxy.cfg").write_text(HAPROXY_CONF.format(ssl=ssl_bind, **fmt))
        return ["haproxy", "-db", "-f", str(tmp / "haproxy.cfg")]
    nginx_tls = (
        f"    ssl_certificate {tmp}/tls-cert.pem;\n    ssl_certificate_key {tmp}/tls-key.pem;\n"
        f"    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_ciphers {TLS12_SUITE};\n"
        f"    ssl_conf_command Ciphersuites {TLS13_SUITE};\n"
    )
    conf = NGINX_CONF.format(ssl=" ssl" if tls else "", tls=nginx_tls if tls else "", **fmt)
    (tmp / "nginx.conf").write_text(conf)
    return ["nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf")]


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a self-signed certificate on loopback: encrypted, not verified
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def run(connections: int, hold: float, tls: bool = False, target: str = "ours") -> dict[str, float]:
    # Clients, the upstream's side of the proxy's connections (HAProxy may hold one per client), and HAProxy
    # reserving two descriptors per `maxconn`: raise the hard limit too where allowed.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(hard, 3 * connections + 2000)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        want = hard
    if want < connections + 100:
        raise SystemExit(f"open-file limit {want} is too low for {connections} connections")
    server = await asyncio.start_server(upstream, HOST, 0)
    up = server.sockets[0].getsockname()[1]
    ports = {"active": free_port(), "preview": free_port(), "admin": free_port()}
    client_tls = client_context() if tls else None
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # nginx's workers run unprivileged and read the certificate here
        if tls:
            cert, key, _both = make_certificate(Path(tmp))
        if target == "ours":
            config = Path(tmp) / "proxy.yaml"
            tls_conf = f', tls: {{certificates: [{{cert: "{cert}", key: "{key}"}}]}}' if tls else ""
            config.write_text(
                f"listeners: {{active: {{port: {ports['active']}{tls_conf}}}, preview: {{port: {ports['preview']}}}}}\n"
                f"admin: {{port: {ports['admin']}}}\n"
                f'pools: {{blue: {{endpoints: ["{HOST}:{up}"]}}, green: {{endpoints: ["{HOST}:{up}"]}}}}\n'
                "routes: {active: blue, preview: green}\n"
            )
            argv = [sys.executable, "-m", "bluegreen", "proxy", "--config", str(config)]
        else:
            argv = proxy_argv(target, Path(tmp), ports["active"], up, tls, connections)
        proc = await asyncio.create_subprocess_exec(*argv, start_new_session=True)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    r, w = await asyncio.open_connection(HOST, ports["active"], ssl=client_tls)
                    w.write(b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n")
                    await r.readuntil(b"ok")
                    w.close()
                    break
                except (OSError, asyncio.IncompleteReadError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            before = rss_kib(proc.pid)
            held: list[asyncio.StreamWriter] = []
            sem = asyncio.Semaphore(200)

            async def open_one() -> None:
                async with sem:
                    reader, writer = await asyncio.open_connection(HOST, ports["active"], ssl=client_tls)
                    writer.write(b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n")
                    await reader.readuntil(b"ok")
                    held.append(writer)

            async with asyncio.timeout(300):
                await asyncio.gather(*(open_one() for _ in range(connections)))
            await asyncio.sleep(hold)
            after = rss_kib(proc.pid)
            for writer in held:
                writer.transport.abort()  # no TLS close_notify exchange for 10k connections
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # nginx's and ours' workers too
            async with asyncio.timeout(30):
                await proc.wait()
            await asyncio.sleep(0.3)  # the proxy closed its upstream connections: let the handlers see EOF
            server.close()
            await server.wait_closed()
    return {"connections": connections, "before_mib": before / 1024, "after_mib": after / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.idle", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds to hold them before measuring")
    parser.add_argument("--tls", action="store_true", help="TLS connections (a TLS 1.3 handshake each)")
    parser.add_argument("--target", choices=TARGETS, default="ours", help="the proxy measured (default ours)")
    args = parser.parse_args()
    result = asyncio.run(run(args.connections, args.hold, args.tls, args.target))
    grown = result["after_mib"] - result["before_mib"]
    kind = "TLS" if args.tls else "keep-alive"
    print(
        f"{args.target}: {args.connections} idle {kind} connections: RSS {result['before_mib']:.1f} MiB -> "
        f"{result['after_mib']:.1f} MiB (+{grown:.1f} MiB, {grown * 1024 / args.connections:.2f} KiB each)"
    )


if __name__ == "__main__":
    main()
