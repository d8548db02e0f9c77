"""The `bluegreen` command: the proxy's commands plus the simulator's, in one parser.

This module is a composition root: it may import proxy internals (the simulator core may not).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxy import cli as proxy_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bluegreen", description="A blue/green traffic switch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    proxy_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
