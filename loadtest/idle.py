"""Memory held by idle keep-alive client connections: `python -m loadtest.idle [--connections 10000]`.

Starts `bluegreen proxy` (one worker) in front of a tiny upstream in this process, opens N client
connections that each make one request and then stay open, idle, and reports the proxy's resident
memory (supervisor and workers, from /proc) before and after. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


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


async def run(connections: int, hold: float) -> dict[str, float]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < connections + 100:
        raise SystemExit(f"open-file limit {hard} is too low for {connections} connections")
    server = await asyncio.start_server(upstream, HOST, 0)
    up = server.sockets[0].getsockname()[1]
    ports = {"active": free_port(), "preview": free_port(), "admin": free_port()}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "proxy.yaml"
        config.write_text(
            f"listeners: {{active: {{port: {ports['active']}}}, preview: {{port: {ports['preview']}}}}}\n"
            f"admin: {{port: {ports['admin']}}}\n"
            f'pools: {{blue: {{endpoints: ["{HOST}:{up}"]}}, green: {{endpoints: ["{HOST}:{up}"]}}}}\n'
            "routes: {active: blue, preview: green}\n"
        )
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bluegreen", "proxy", "--config", str(config))
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    r, w = await asyncio.open_connection(HOST, ports["active"])
                    w.close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            before = rss_kib(proc.pid)
            held: list[asyncio.StreamWriter] = []
            sem = asyncio.Semaphore(200)

            async def open_one() -> None:
                async with sem:
                    reader, writer = await asyncio.open_connection(HOST, ports["active"])
                    writer.write(b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n")
                    await reader.readuntil(b"ok")
                    held.append(writer)

            async with asyncio.timeout(300):
                await asyncio.gather(*(open_one() for _ in range(connections)))
            await asyncio.sleep(hold)
            after = rss_kib(proc.pid)
            for writer in held:
                writer.close()
        finally:
            proc.send_signal(signal.SIGTERM)
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
    args = parser.parse_args()
    result = asyncio.run(run(args.connections, args.hold))
    grown = result["after_mib"] - result["before_mib"]
    print(
        f"{args.connections} idle keep-alive connections: proxy RSS {result['before_mib']:.1f} MiB -> "
        f"{result['after_mib']:.1f} MiB (+{grown:.1f} MiB, {grown * 1024 / args.connections:.2f} KiB each)"
    )


if __name__ == "__main__":
    main()
