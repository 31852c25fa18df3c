"""`runbook-bot`: the local pipeline, runbook validation, demo seeding, signed test requests."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    result: int = args.run(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runbook-bot",
        description="ChatOps runbooks for partners' DynamoDB incidents (Slack + AWS Lambda).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    dev = sub.add_parser(
        "dev",
        help="run the whole pipeline on this machine (embedded AWS, stream delivery, "
        "Slack stand-in, playground)",
    )
    dev.add_argument(
        "--engine",
        choices=["moto", "ddblocal"],
        default="moto",
        help="DynamoDB engine: moto's server (default) or AWS DynamoDB Local (Java)",
    )
    dev.add_argument("--port", type=int, default=3000, help="port of the Slack request URL and playground")
    dev.add_argument("--no-seed", action="store_true", help="skip seeding the demo partners' resources")
    dev.set_defaults(run=_dev)

    serve = sub.add_parser(
        "serve",
        help="serve the Slack-facing function over HTTP for a real Slack app (needs SLACK_SIGNING_SECRET "
        "and SLACK_BOT_TOKEN, or SLACK_SECRET_ARN); see slack-manifest.yaml",
    )
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument(
        "--aws",
        choices=["embedded", "real"],
        default="embedded",
        help="embedded: the whole pipeline here on embedded AWS (default); real: only the ingress, on the "
        "AWS account your credentials and EXECUTIONS_TABLE name (the deployed stack runs the rest)",
    )
    serve.add_argument("--engine", choices=["moto", "ddblocal"], default="moto")
    serve.set_defaults(run=_serve)

    validate = sub.add_parser("validate", help="check runbooks, partners and the error catalog")
    validate.add_argument("paths", nargs="*", type=Path, help="files or folders (default: runbooks/)")
    validate.add_argument(
        "--compile",
        action="store_true",
        help="also keep the validated catalog next to the runbooks (what `sam build` ships)",
    )
    validate.set_defaults(run=_validate)

    seed = sub.add_parser(
        "seed-demo",
        help="create the demo partners' tables, data, metrics and missed "
        "writes where the standard AWS variables point; safe to run twice",
    )
    seed.set_defaults(run=_seed_demo)

    drill = sub.add_parser(
        "drill",
        help="rehearse a runbook against the partner's drill target with injected faults, "
        "on the local pipeline, and report whether detection and recovery worked (exit 1 if not)",
    )
    drill.add_argument("runbook")
    drill.add_argument("partner")
    drill.add_argument(
        "--faults",
        default=None,
        help="faults to inject, e.g. throttle=0.3,timeout=0.05 (kinds: throttle, timeout, error; "
        "default: the partner file's drill.faults)",
    )
    drill.add_argument(
        "--for", dest="time_limit", default=None, help="time limit, e.g. 2m (default: the partner's)"
    )
    drill.add_argument("--engine", choices=["moto", "ddblocal"], default="moto")
    drill.add_argument(
        "--no-approve", action="store_true", help="do not approve risky steps (the drill then times out)"
    )
    drill.set_defaults(run=_drill)

    send = sub.add_parser("send", help="send a signed /runbook command to a running `runbook-bot dev`")
    send.add_argument("text", help='the command text, e.g. "throttle partner-acme"')
    send.add_argument("--url", default="http://127.0.0.1:3000/slack/events")
    send.add_argument("--user", default="U0DEVONCALL", help="Slack user id of the sender")
    send.add_argument("--channel", default="C0ACMEOPS", help="Slack channel id it is sent from")
    send.add_argument("--secret", default=None, help="signing secret (default: the dev secret)")
    send.set_defaults(run=_send)
    return parser


def _dev(args: argparse.Namespace) -> int:
    from bot.local.pipeline import run_dev

    return run_dev(engine=args.engine, port=args.port, seed=not args.no_seed)


def _serve(args: argparse.Namespace) -> int:
    from bot.local.pipeline import run_serve

    return run_serve(port=args.port, aws=args.aws, engine=args.engine)


def _validate(args: argparse.Namespace) -> int:
    from bot.catalog import validate_paths

    problems = validate_paths(list(args.paths))
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("ok: runbooks, partners and error catalog are valid")
    if args.compile:
        from bot.catalog import compile_catalog, runbooks_root

        roots = [p for p in args.paths if p.is_dir()] or [runbooks_root()]
        for root in roots:
            print(f"compiled: {compile_catalog(root)}")
    return 0


def _seed_demo(args: argparse.Namespace) -> int:
    import boto3

    from bot.demo import seed_demo

    report = seed_demo(boto3.session.Session())
    print(report)
    return 0


def _drill(args: argparse.Namespace) -> int:
    from bot.drills.faults import FaultSpec, FaultSpecError
    from bot.drills.local import run_local_drill

    if args.faults is not None:
        try:
            FaultSpec.parse(args.faults)
        except FaultSpecError as error:
            print(f"--faults: {error}", file=sys.stderr)
            return 2
    result = run_local_drill(
        args.runbook,
        args.partner,
        faults=args.faults,
        time_limit=args.time_limit,
        engine=args.engine,
        approve=not args.no_approve,
    )
    for line in result.report.lines():
        print(line)
    if result.injected:
        print("  injected: " + ", ".join(f"{k} {v}" for k, v in result.injected.items()))
    print(f"  took {result.seconds:.1f}s; {result.channel_events} message(s) in the channel")
    return 0 if result.report.passed else 1


def _send(args: argparse.Namespace) -> int:
    from bot.local.slack_requests import DEV_SIGNING_SECRET, signed_headers, slash_command_body

    body = slash_command_body(args.text, user_id=args.user, channel_id=args.channel)
    request = urllib.request.Request(  # noqa: S310 - a loopback URL the user gives
        args.url,
        data=body.encode(),
        headers=signed_headers(args.secret or DEV_SIGNING_SECRET, body),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status, payload = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read().decode()
    except urllib.error.URLError as error:
        print(f"cannot reach {args.url}: {error.reason}; is `runbook-bot dev` running?", file=sys.stderr)
        return 1
    print(f"HTTP {status}")
    try:
        print(json.loads(payload).get("text", payload))
    except ValueError:
        print(payload)
    return 0 if status == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
