"""Flip-to-all-acknowledged latency of a fleet: `python -m loadtest.fleet [--proxies 3 10] [--flips 100]`.

Starts a real etcd (Debian's etcd-server) and N `bluegreen proxy` processes sharing state through
it, then flips blue/green through one proxy's admin API and times each call: it answers only when
every live proxy serves the new generation. Loopback only; everything started here is stopped here.
"""

from __future__ import annotations

import argparse
import http.client
import json
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


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_etcd(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port, peer = free_port(), free_port()
    client = f"http://{HOST}:{port}"
    proc = subprocess.Popen(
        ["etcd", "--name=bench", f"--data-dir={tmp / 'etcd'}", f"--listen-client-urls={client}",
         f"--advertise-client-urls={client}", f"--listen-peer-urls=http://{HOST}:{peer}",
         f"--initial-advertise-peer-urls=http://{HOST}:{peer}", f"--initial-cluster=bench=http://{HOST}:{peer}",
         "--heartbeat-interval=10", "--election-timeout=100", "--log-level=error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port)
    return proc, f"{HOST}:{port}"


def run(n: int, flips: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        etcd, endpoint = start_etcd(tmp)
        upstream = free_port()  # pools need endpoints; nothing has to answer for flips with force
        procs: list[subprocess.Popen[bytes]] = []
        admins: list[int] = []
        try:
            for i in range(n):
                ports = [free_port() for _ in range(3)]
                admins.append(ports[2])
                config = tmp / f"p{i}.yaml"
                config.write_text(
                    f"listeners: {{active: {{port: {ports[0]}}}, preview: {{port: {ports[1]}}}}}\n"
                    f"admin: {{port: {ports[2]}}}\n"
                    f'pools: {{blue: {{endpoints: ["{HOST}:{upstream}"]}}, '
                    f'green: {{endpoints: ["{HOST}:{upstream}"]}}}}\n'
                    "routes: {active: blue, preview: green}\n"
                    f'state: {{backend: etcd, endpoints: ["{endpoint}"], prefix: /bench/, lease_ttl: 5s, name: p{i}}}\n'
                )
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bluegreen", "proxy", "--config", str(config)],
                        stdout=subprocess.DEVNULL,
                    )
                )
            for admin in admins:
                wait_port(admin)
            latencies = []
            color = "green"
            for _ in range(flips):
                latencies.append(flip_forced(admins[0], color))
                color = "blue" if color == "green" else "green"
            latencies.sort()
            return {
                "proxies": n,
                "flips": flips,
                "p50_ms": latencies[len(latencies) // 2] * 1000,
                "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
                "max_ms": latencies[-1] * 1000,
            }
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            etcd.kill()
            etcd.wait()


def flip_forced(admin: int, color: str) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, admin, timeout=30)
    try:
        conn.request("POST", "/api/v1/switch", body=json.dumps({"active": color, "force": True}))
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    if resp.status != 200 or len(body.get("fleet", {}).get("dropped", [])):
        raise RuntimeError(f"flip failed: {resp.status} {body}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--flips", type=int, default=100)
    args = parser.parse_args()
    print("proxies  flips  p50 ms  p99 ms  max ms")
    for n in args.proxies:
        r = run(n, args.flips)
        print(f"{n:7}  {args.flips:5}  {r['p50_ms']:6.2f}  {r['p99_ms']:6.2f}  {r['max_ms']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
