"""The `loadtest` command: `register(sub)` adds it to the `bluegreen` parser; `python -m loadtest.cli` runs it alone."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest import run
from proxy.duration import parse_duration


def _duration(text: str) -> float:
    """A command-line duration (`30s`, `0.5s`, `1m30s`; a plain number is seconds), in the project's one grammar."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", metavar="URL", help="the proxy's active listener (default: start a proxy here)")
    p.add_argument("--admin", metavar="URL", help="its admin API (default: $BLUEGREEN_ADMIN or :8090)")
    p.add_argument("--preview", metavar="URL", help="its preview listener (with --target; optional)")
    p.add_argument("--users", type=int, default=10, metavar="N", help="Locust users (default 10)")
    p.add_argument("--spawn-rate", type=float, default=None, metavar="R", help="users started per second")
    p.add_argument("--duration", type=_duration, default=30.0, metavar="D", help="run time (default 30s)")
    p.add_argument("--switch-every", type=_duration, default=0.5, metavar="D", help="flip interval (default 0.5s)")
    p.add_argument("--workers", type=int, default=0, metavar="K", help="Locust workers (0: one local process)")
    p.add_argument("--results", type=Path, default=None, metavar="DIR", help="default results/loadtest-TIME")
    p.add_argument("--scenario", choices=run.SCENARIOS, default="steady")
    p.add_argument("--rate", type=float, default=0.0, metavar="RPS", help="requests/s per user (0: closed loop)")
    p.add_argument("--preview-every", type=int, default=5, metavar="N", help="every N-th request on preview (0: off)")
    p.add_argument("--proxy-workers", type=int, default=1, metavar="N", help="workers of the proxy started here")
    p.add_argument("--slow-delay", type=_duration, default=0.1, metavar="D", help="slow-pool answer delay (0.1s)")
    p.add_argument("--path", default="/color", help="the path the users request")
    p.add_argument("--quiet", action="store_true", help="do not echo Locust's output (it is in locust.log)")


def register(sub: Any) -> None:
    p = sub.add_parser("loadtest", help="Locust against a proxy that flips under load")
    add_args(p)
    p.set_defaults(func=cmd_loadtest)


def cmd_loadtest(args: argparse.Namespace) -> int:
    if not run.locust_available():
        print("bluegreen: Locust is not installed (pip install -e '.[load]')", file=sys.stderr)
        return 1
    if args.users < 1 or args.workers < 0 or args.duration <= 0 or args.switch_every < 0:
        print("bluegreen: --users ≥ 1, --workers ≥ 0, --duration > 0 and --switch-every ≥ 0", file=sys.stderr)
        return 2
    if args.preview and not args.target:
        print("bluegreen: --preview goes with --target (the proxy started here has its own)", file=sys.stderr)
        return 2
    results = args.results or Path("results") / time.strftime("loadtest-%Y%m%d-%H%M%S")
    opts = run.Options(
        target=args.target,
        admin=args.admin,
        preview=args.preview,
        users=args.users,
        spawn_rate=args.spawn_rate or float(args.users),
        duration=args.duration,
        switch_every=args.switch_every,
        workers=args.workers,
        results=results,
        scenario=args.scenario,
        rate=args.rate,
        preview_every=args.preview_every if (args.preview or not args.target) else 0,
        proxy_workers=args.proxy_workers,
        slow_delay=args.slow_delay,
        path=args.path,
        quiet=args.quiet,
    )
    try:
        return run.run(opts)
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bluegreen loadtest", description=run.__doc__.split("\n")[0] if run.__doc__ else None
    )
    add_args(parser)
    return cmd_loadtest(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
