"""A worker process: one DataPlane on SO_REUSEPORT listeners, driven by the supervisor's channel.

It applies the state it is sent before binding, so a (re)started worker serves the current
generation from its first request; every later state is acknowledged once applied.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys

from proxy.channel import Channel
from proxy.config import ConfigError, load_config
from proxy.dataplane import DataPlane
from proxy.state import apply_state, collect_stats


async def serve(config_path: str, fd: int) -> int:
    config = load_config(config_path)
    channel = await Channel.open(socket.socket(fileno=fd))
    dp = DataPlane(config)
    first = await channel.receive()
    if first is None:
        return 1
    generation = apply_state(dp, first["state"])
    epoch = [first.get("settings_epoch", 0)]
    await dp.start(reuse_port=True)
    await channel.send({"op": "ack", "generation": generation})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def control() -> None:
        while (message := await channel.receive()) is not None:
            op = message.get("op")
            if op == "state":
                if message.get("settings_epoch", 0) != epoch[0]:
                    epoch[0] = message["settings_epoch"]
                    dp.apply_settings(load_config(config_path))  # the supervisor validated it already
                await channel.send({"op": "ack", "generation": apply_state(dp, message["state"])})
            elif op == "stats":
                await channel.send({"op": "stats", "stats": collect_stats(dp)})
            else:
                await channel.send({"op": "error", "error": f"unknown op {op!r}"})
        stop.set()  # the supervisor is gone: stop gracefully rather than serve stale routes forever

    task = loop.create_task(control())
    await stop.wait()
    task.cancel()
    await dp.stop(config.shutdown_timeout)
    channel.close()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="bluegreen-worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    from proxy.cli import new_event_loop

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            sys.exit(runner.run(serve(args.config, args.fd)))
    except ConfigError as exc:
        print(f"bluegreen worker: config error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
