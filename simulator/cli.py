"""The simulator's commands of `bluegreen` (`demo`, `apply`, `rollouts`): `register(sub)` adds them to
the parser of `bluegreen.cli`.

This module is a composition root: it may import proxy internals (the simulator core may not).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from proxy import cli as proxy_cli
from simulator.web import client as sim_client
from simulator.web.client import AdminClient, ClientError

Command = Callable[[AdminClient], Coroutine[Any, Any, int]]


def _run(args: argparse.Namespace, command: Command) -> int:
    async def main() -> int:
        async with AdminClient(args.admin, os.environ.get("BLUEGREEN_ADMIN_TOKEN") or None) as client:
            return await command(client)

    try:
        return asyncio.run(main())
    except ClientError as exc:
        return proxy_cli.fail(str(exc))
    except KeyboardInterrupt:
        return 130


def cmd_apply(args: argparse.Namespace) -> int:
    return _run(args, lambda c: sim_client.apply_files(c, args.filename))


def cmd_get(args: argparse.Namespace) -> int:
    color = not args.no_color and args.output != "json" and sys.stdout.isatty()
    return _run(
        args,
        lambda c: sim_client.get(c, args.name, output=args.output, watch=args.watch, color=color, out=sys.stdout),
    )


def cmd_status(args: argparse.Namespace) -> int:
    return _run(
        args,
        lambda c: sim_client.status(
            c, args.name, give_up_after=args.timeout, watch=args.watch, out=sys.stdout, err=sys.stderr
        ),
    )


def _action(action: str, body: Callable[[argparse.Namespace], dict[str, Any]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return _run(args, lambda c: sim_client.rollout_action(c, args.name, action, body(args), sys.stdout))

    return run


def _image_body(args: argparse.Namespace) -> dict[str, Any]:
    container, sep, image = args.assignment.partition("=")
    if not sep or not container or not image:
        raise SystemExit(proxy_cli.fail("expected CONTAINER=IMAGE (or *=IMAGE)", 2))
    return {"container": container, "image": image}


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, not {text!r}")
    return port


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="simulator + proxy + their API in one process")
    demo.add_argument("--manifests", metavar="DIR", help="manifests to load (default: the bundled rollouts-demo)")
    demo.add_argument("--active-port", type=_port, default=8080, metavar="P", help="live listener (8080; 0: any)")
    demo.add_argument("--preview-port", type=_port, default=8081, metavar="P", help="preview listener (8081)")
    demo.add_argument("--admin-port", type=_port, default=8090, metavar="P", help="admin API and dashboard (8090)")
    demo.set_defaults(func=cmd_demo)

    apply = sub.add_parser("apply", help="apply manifests to a running simulator")
    proxy_cli.add_admin_args(apply)
    apply.add_argument(
        "-f", "--filename", required=True, metavar="FILE", help="a YAML file, a directory, or - for stdin"
    )
    apply.set_defaults(func=cmd_apply)

    rollouts = sub.add_parser("rollouts", help="`kubectl argo rollouts` for the simulator")
    verbs = rollouts.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = verbs.add_parser(name, help=help_text)
        proxy_cli.add_admin_args(p)
        p.add_argument("name", metavar="NAME")
        return p

    get = verb("get", "show a rollout as a tree of revisions, ReplicaSets and pods")
    get.add_argument("-w", "--watch", action="store_true", help="redraw on change")
    get.add_argument("-o", "--output", choices=("tree", "json"), default="tree")
    get.add_argument("--no-color", action="store_true")
    get.set_defaults(func=cmd_get)

    set_cmd = verbs.add_parser("set", help="change a rollout (set image)")
    set_what = set_cmd.add_subparsers(dest="what", required=True, metavar="WHAT")
    image = set_what.add_parser("image", help="set a container's image: NAME CONTAINER=IMAGE")
    proxy_cli.add_admin_args(image)
    image.add_argument("name", metavar="NAME")
    image.add_argument("assignment", metavar="CONTAINER=IMAGE")
    image.set_defaults(func=_action("image", _image_body))

    promote = verb("promote", "promote a paused rollout")
    promote.add_argument("--full", action="store_true", help="skip the pause and analysis, cut over now")
    promote.set_defaults(func=_action("promote", lambda a: {"full": a.full}))
    verb("abort", "abort the update: live traffic back to the stable revision").set_defaults(
        func=_action("abort", lambda a: {})
    )
    verb("retry", "retry an aborted update").set_defaults(func=_action("retry", lambda a: {}))
    undo = verb("undo", "roll back to the previous (or a given) revision")
    undo.add_argument("--to-revision", type=int, default=None, metavar="N")
    undo.set_defaults(func=_action("undo", lambda a: {"toRevision": a.to_revision} if a.to_revision else {}))
    status = verb("status", "wait until the rollout is Healthy (0) or Degraded (1)")
    status.add_argument("--timeout", default="", metavar="DURATION", help="give up after this long (e.g. 5m)")
    status.add_argument("--watch", action=argparse.BooleanOptionalAction, default=True)
    status.set_defaults(func=cmd_status)


def cmd_demo(args: argparse.Namespace) -> int:
    from simulator import demo  # the demo pulls in the whole proxy; only load it for this command

    return demo.main(
        args.manifests, active_port=args.active_port, preview_port=args.preview_port, admin_port=args.admin_port
    )
