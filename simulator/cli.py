"""The simulator's commands of `bluegreen` (`demo`, `apply`, `rollouts`): `register(sub)` adds them to
the parser of `bluegreen.cli`.

This module is a composition root: it may import proxy internals (the simulator core may not).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
from collections.abc import Callable, Coroutine
from importlib import metadata
from typing import Any

from proxy import cli as proxy_cli
from simulator import operations
from simulator.k8s.fields import parse_duration
from simulator.web import client as sim_client
from simulator.web.client import AdminClient, ClientError

Command = Callable[[AdminClient], Coroutine[Any, Any, int]]
ARGO_COMMIT = "9f8d111d8f8e"  # the Argo Rollouts source the simulator follows (docs/BLUEGREEN_SPEC.md)
_COMMANDS = ("apply", "delete", "demo", "loadtest", "proxy", "rollouts", "status", "switch")  # for completion


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


def cmd_delete(args: argparse.Namespace) -> int:
    return _run(args, lambda c: sim_client.delete_files(c, args.filename))


_TRUE, _FALSE = ("true", "t", "1", "yes", "y"), ("false", "f", "0", "no", "n")
_NOUNS = ("rollout", "rollouts", "ro")


def _bool_or_word(text: str) -> bool | str:
    """`-w=false` as Go's flags take it; a word that is no boolean was the next argument, which
    argparse handed to the optional value (`get -w rollout NAME`): given back as a word."""
    lowered = text.lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else text


def _flag(args: argparse.Namespace, flag: str) -> tuple[bool, list[str]]:
    """The flag's value and any word it swallowed (see `_bool_or_word`)."""
    value = getattr(args, flag)
    return (True, [value]) if isinstance(value, str) else (bool(value), [])


def _name(args: argparse.Namespace, words: list[str], verb: str) -> str:
    """NAME, or `rollout NAME` (the noun every Argo tutorial types)."""
    if len(words) == 2 and words[0] in _NOUNS:
        return words[1]
    if len(words) == 1 and words[0] not in _NOUNS:
        return words[0]
    raise SystemExit(proxy_cli.fail(f"usage: bluegreen rollouts {verb} [rollout] NAME", 2))


def cmd_get(args: argparse.Namespace) -> int:
    watch, swallowed = _flag(args, "watch")
    name = _name(args, swallowed + args.words, "get")
    color = not args.no_color and args.output != "json" and sys.stdout.isatty()
    return _run(
        args,
        lambda c: sim_client.get(
            c, name, output=args.output, watch=watch, color=color, out=sys.stdout, namespace=args.namespace
        ),
    )


def cmd_list(args: argparse.Namespace) -> int:
    namespace = None if args.all_namespaces else args.namespace
    return _run(args, lambda c: sim_client.list_rollouts(c, namespace=namespace, name=args.only))


def cmd_status(args: argparse.Namespace) -> int:
    watch, swallowed = _flag(args, "watch")
    name = _name(args, swallowed + args.words, "status")
    return _run(
        args,
        lambda c: sim_client.status(
            c,
            name,
            give_up_after=args.timeout,
            watch=watch,
            out=sys.stdout,
            err=sys.stderr,
            namespace=args.namespace,
        ),
    )


def cmd_lint(args: argparse.Namespace) -> int:
    """Local, like Argo's: no cluster needed. Silent on success, each problem on stderr otherwise."""
    from simulator.k8s.fields import ManifestError
    from simulator.manifests import load_text

    try:
        loaded = load_text(sim_client.read_manifests(args.filename), ", ".join(args.filename))
    except (ManifestError, sim_client.ClientError) as exc:
        return proxy_cli.fail(str(exc))
    for notice in loaded.notices:
        print(f"Warning: {notice}", file=sys.stderr)
    problems = operations.lint(loaded.objects)
    for problem in problems:
        print(f"Error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_version(args: argparse.Namespace) -> int:
    try:
        version = metadata.version("bluegreen")
    except metadata.PackageNotFoundError:
        version = "unknown"
    print(f"bluegreen-rollouts: v{version}")
    if not args.short:
        print(f"  Simulates: kubectl-argo-rollouts, Argo Rollouts {ARGO_COMMIT} (blueGreen strategy)")
        print(f"  Python: {platform.python_version()}")
        print(f"  Platform: {sys.platform}/{platform.machine()}")
    return 0


def _action(
    action: str, body: Callable[[argparse.Namespace], dict[str, Any]], nouns: bool = False
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        name = _name(args, args.words, action) if nouns else args.name
        return _run(
            args,
            lambda c: sim_client.rollout_action(c, name, action, body(args), sys.stdout, namespace=args.namespace),
        )

    return run


def _image_body(args: argparse.Namespace) -> dict[str, Any]:
    container, sep, image = args.assignment.partition("=")
    if not sep or not container or not image:
        raise SystemExit(proxy_cli.fail("expected CONTAINER=IMAGE (or *=IMAGE)", 2))
    return {"container": container, "image": image}


def _restart_body(args: argparse.Namespace) -> dict[str, Any]:
    try:
        return {"in": parse_duration(args.delay) if args.delay else 0}
    except ValueError as exc:
        raise SystemExit(proxy_cli.fail(f"--in: {exc}", 2)) from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, not {text!r}")
    return port


def _filenames(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help=f"{what}: a YAML file, a directory, or - for stdin (repeat for more)",
    )


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="simulator + proxy + their API in one process")
    demo.add_argument("--manifests", metavar="DIR", help="manifests to load (default: the bundled rollouts-demo)")
    demo.add_argument("--active-port", type=_port, default=8080, metavar="P", help="live listener (8080; 0: any)")
    demo.add_argument("--preview-port", type=_port, default=8081, metavar="P", help="preview listener (8081)")
    demo.add_argument("--admin-port", type=_port, default=8090, metavar="P", help="admin API and dashboard (8090)")
    demo.add_argument("--kube-port", type=_port, default=8092, metavar="P", help="Kubernetes API for kubectl (8092)")
    demo.add_argument(
        "--prometheus",
        action="store_true",
        help="start Prometheus (on PATH) scraping the proxy; default manifests: the success-rate analysis",
    )
    demo.set_defaults(func=cmd_demo)

    apply = sub.add_parser("apply", help="apply manifests to a running simulator (kubectl apply -f)")
    proxy_cli.add_admin_args(apply)
    _filenames(apply, "manifests to apply")
    apply.set_defaults(func=cmd_apply)

    delete = sub.add_parser("delete", help="delete what manifests name from a running simulator (kubectl delete -f)")
    proxy_cli.add_admin_args(delete)
    _filenames(delete, "manifests naming the objects to delete")
    delete.set_defaults(func=cmd_delete)

    rollouts = sub.add_parser("rollouts", help="`kubectl argo rollouts` for the simulator")
    rollouts.add_argument("-n", "--namespace", default="default", metavar="NS", help="namespace (default: default)")
    verbs = rollouts.add_subparsers(dest="verb", required=True, metavar="VERB")
    _VERBS.clear()
    _VERBS.append(verbs)

    def verb(name: str, help_text: str, *, nouns: bool = False, admin: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = verbs.add_parser(name, help=help_text)
        # After the verb too (`get rollout X -n NS`); SUPPRESS keeps a value given before it.
        p.add_argument("-n", "--namespace", default=argparse.SUPPRESS, metavar="NS", help="namespace")
        if admin:
            proxy_cli.add_admin_args(p)
        if nouns:
            p.add_argument("words", nargs="+", metavar="[rollout] NAME")
        elif admin:
            p.add_argument("name", metavar="NAME")
        return p

    get = verb("get", "show a rollout as a tree of revisions, ReplicaSets and pods", nouns=True)
    get.add_argument(
        "-w",
        "--watch",
        nargs="?",
        const=True,
        default=False,
        type=_bool_or_word,
        metavar="BOOL",
        help="redraw on change",
    )
    get.add_argument("-o", "--output", choices=("tree", "json"), default="tree")
    get.add_argument("--no-color", action="store_true")
    get.set_defaults(func=cmd_get)

    list_cmd = verbs.add_parser("list", help="list rollouts: list rollouts [-A] [--name NAME]")
    list_cmd.add_argument("-n", "--namespace", default=argparse.SUPPRESS, metavar="NS", help="namespace")
    proxy_cli.add_admin_args(list_cmd)
    list_cmd.add_argument("what", choices=_NOUNS, metavar="rollouts")
    list_cmd.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    list_cmd.add_argument("--name", dest="only", metavar="NAME", help="only this rollout")
    list_cmd.set_defaults(func=cmd_list)

    set_cmd = verbs.add_parser("set", help="change a rollout (set image)")
    set_what = set_cmd.add_subparsers(dest="what", required=True, metavar="WHAT")
    image = set_what.add_parser("image", help="set a container's image: NAME CONTAINER=IMAGE")
    image.add_argument("-n", "--namespace", default=argparse.SUPPRESS, metavar="NS", help="namespace")
    proxy_cli.add_admin_args(image)
    image.add_argument("name", metavar="NAME")
    image.add_argument("assignment", metavar="CONTAINER=IMAGE")
    image.set_defaults(func=_action("image", _image_body))

    promote = verb("promote", "promote a paused rollout")
    promote.add_argument("--full", action="store_true", help="skip the pause and analysis, cut over now")
    promote.set_defaults(func=_action("promote", lambda a: {"full": a.full}))
    verb("pause", "pause a rollout (spec.paused)").set_defaults(func=_action("pause", lambda a: {}))
    verb("abort", "abort the update: live traffic back to the stable revision").set_defaults(
        func=_action("abort", lambda a: {})
    )
    verb("retry", "retry an aborted update: retry rollout NAME", nouns=True).set_defaults(
        func=_action("retry", lambda a: {}, nouns=True)
    )
    restart = verb("restart", "restart the rollout's pods (spec.restartAt)")
    restart.add_argument("-i", "--in", dest="delay", default="", metavar="DURATION", help="restart after (e.g. 10s)")
    restart.set_defaults(func=_action("restart", _restart_body))
    undo = verb("undo", "roll back to the previous (or a given) revision")
    undo.add_argument("--to-revision", type=int, default=None, metavar="N")
    undo.set_defaults(func=_action("undo", lambda a: {"toRevision": a.to_revision} if a.to_revision else {}))
    status = verb("status", "wait until the rollout is Healthy (0) or Degraded (1)", nouns=True)
    status.add_argument("-t", "--timeout", default="", metavar="DURATION", help="give up after this long (e.g. 5m)")
    status.add_argument(
        "-w",
        "--watch",
        nargs="?",
        const=True,
        default=True,
        type=_bool_or_word,
        metavar="BOOL",
        help="keep watching (default true; -w=false prints once)",
    )
    status.set_defaults(func=cmd_status)

    lint = verb("lint", "check manifests offline: lint -f FILE", admin=False)
    _filenames(lint, "manifests to check")
    lint.set_defaults(func=cmd_lint)
    version = verb("version", "print the version", admin=False)
    version.add_argument("--short", action="store_true", help="the first line only")
    version.set_defaults(func=cmd_version)
    completion = verb("completion", "print a shell completion script: completion bash|zsh|fish", admin=False)
    completion.add_argument("shell", choices=("bash", "zsh", "fish"))
    completion.set_defaults(func=cmd_completion)


_VERBS: list[Any] = []  # the `rollouts` verbs' parser, read by `completion`


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))


def cmd_completion(args: argparse.Namespace) -> int:
    """Completes commands, verbs, nouns, flags and (from a running demo) rollout names."""
    verbs: dict[str, argparse.ArgumentParser] = dict(_VERBS[0].choices)
    cases = "\n".join(f'      {name}) flags="{" ".join(_flags(p))}" ;;' for name, p in sorted(verbs.items()))
    words = " ".join(sorted(verbs))
    if args.shell == "fish":
        lines = [
            "complete -c bluegreen -f",
            f"complete -c bluegreen -n __fish_use_subcommand -a '{' '.join(sorted(_COMMANDS))}'",
            f"complete -c bluegreen -n '__fish_seen_subcommand_from rollouts' -a '{words}'",
            "complete -c bluegreen -n '__fish_seen_subcommand_from get retry' -a 'rollout'",
            "complete -c bluegreen -n '__fish_seen_subcommand_from list' -a 'rollouts'",
            "complete -c bluegreen -n '__fish_seen_subcommand_from get promote pause abort retry restart undo status' "
            "-a '(bluegreen rollouts list rollouts 2>/dev/null | tail -n +2 | cut -d\" \" -f1)'",
        ]
        print("\n".join(lines))
        return 0
    script = BASH_COMPLETION.format(commands=" ".join(sorted(_COMMANDS)), verbs=words, cases=cases)
    if args.shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    print(script)
    return 0


BASH_COMPLETION = """\
# bluegreen completion: source <(bluegreen rollouts completion bash)
_bluegreen() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}} verb=${{COMP_WORDS[2]}} flags="" words=""
  if [ "$COMP_CWORD" -eq 1 ]; then
    words="{commands}"
  elif [ "${{COMP_WORDS[1]}}" != rollouts ]; then
    case "${{COMP_WORDS[1]}}" in
      apply|delete) words="-f --filename --admin" ;;
    esac
  elif [ "$COMP_CWORD" -eq 2 ]; then
    words="{verbs} -n --namespace"
  else
    case "$verb" in
{cases}
    esac
    if [[ "$cur" == -* ]]; then
      words="$flags"
    else
      case "$verb" in
        list) words="rollouts" ;;
        set) words="image" ;;
        completion) words="bash zsh fish" ;;
        lint|version) words="" ;;
        get|retry|status)
          words="$(bluegreen rollouts list rollouts 2>/dev/null | tail -n +2 | cut -d' ' -f1)"
          [ "$COMP_CWORD" -eq 3 ] && words="rollout $words" ;;
        *) words="$(bluegreen rollouts list rollouts 2>/dev/null | tail -n +2 | cut -d' ' -f1)" ;;
      esac
    fi
  fi
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F _bluegreen bluegreen
"""


def cmd_demo(args: argparse.Namespace) -> int:
    from simulator import demo  # the demo pulls in the whole proxy; only load it for this command

    return demo.main(
        args.manifests,
        active_port=args.active_port,
        preview_port=args.preview_port,
        admin_port=args.admin_port,
        kube_port=args.kube_port,
        prometheus=args.prometheus,
    )
