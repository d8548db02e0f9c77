"""The `bluegreen` command: one parser over the proxy's, the simulator's and the load test's commands.

It imports only the part a command belongs to, so `bluegreen proxy` loads the proxy alone: no
simulator, load test, Locust or gevent module (`python -X importtime -m bluegreen proxy --help`
shows it). Only `bluegreen --help` and an unknown command load all three, to list every command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

# Which part owns each command.
OWNERS = {
    "proxy": "proxy",
    "status": "proxy",
    "switch": "proxy",
    "demo": "simulator",
    "apply": "simulator",
    "delete": "simulator",
    "rollouts": "simulator",
    "loadtest": "loadtest",
}


def version() -> str:
    try:
        return metadata.version("bluegreen")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _register(owner: str, sub: Any) -> None:
    if owner == "proxy":
        from proxy import cli as proxy_cli

        proxy_cli.register(sub)
    elif owner == "simulator":
        from simulator import cli as simulator_cli

        simulator_cli.register(sub)
    else:
        from loadtest import cli as loadtest_cli

        loadtest_cli.register(sub)


def build_parser(owners: Sequence[str] = ("proxy", "simulator", "loadtest")) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bluegreen", description="A blue/green traffic switch.")
    parser.add_argument("--version", action="version", version=f"bluegreen {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for owner in owners:
        _register(owner, sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args_in = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_in if not a.startswith("-")), None)
    owner = OWNERS.get(command or "")
    parser = build_parser((owner,) if owner else ("proxy", "simulator", "loadtest"))
    args = parser.parse_args(args_in)
    sys.exit(args.func(args))
