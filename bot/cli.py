"""`runbook-bot`: the local pipeline, runbook validation, demo seeding, signed test requests.

`dev`, `serve` and `drill` keep a quiet console: one line per meaningful event (a command and its
answer, each timeline event of a run as the pipeline commits it, a warning of the bot's own code);
everything else, tracebacks included, goes to the log file they name. A busy port or a missing
dependency is one line saying what to do; SIGINT, SIGTERM and SIGHUP stop every child. `dev` (and
`serve` on embedded AWS) also print a few lines of the bot's own metrics: every so often when they
changed, on SIGUSR1, and when they stop.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import importlib
import json
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from bot.local.emf import EmfAggregator

logger = logging.getLogger(__name__)


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
    _metrics_every_option(dev)
    _log_file_option(dev)
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
    _metrics_every_option(serve)
    _log_file_option(serve)
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
    _log_file_option(drill)
    drill.set_defaults(run=_drill)

    send = sub.add_parser("send", help="send a signed /runbook command to a running `runbook-bot dev`")
    send.add_argument("text", help='the command text, e.g. "throttle partner-acme"')
    send.add_argument("--url", default="http://127.0.0.1:3000/slack/events")
    send.add_argument("--user", default="U0DEVONCALL", help="Slack user id of the sender")
    send.add_argument("--channel", default="C0ACMEOPS", help="Slack channel id it is sent from")
    send.add_argument("--secret", default=None, help="signing secret (default: the dev secret)")
    send.set_defaults(run=_send)
    return parser


def _log_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="where the functions' logs, the embedded AWS's and every traceback go "
        "(default: runbook-bot-<command>-<port>.log in the temporary directory)",
    )


def _metrics_every_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-every",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="print the bot's metrics summary this often when something was recorded since the last one "
        "(default 30; 0: only on SIGUSR1 and at the end)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds (e.g. 30, or 0 for never)"
        ) from None
    if not 0 <= value <= 86_400:  # NaN and infinity fail it too
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 86400 seconds")
    return value


def _default_log_file(name: str) -> Path:
    return Path(tempfile.gettempdir()) / f"runbook-bot-{name}.log"


def _dev(args: argparse.Namespace) -> int:
    console = Console(args.log_file or _default_log_file(f"dev-{args.port}"))
    return console.run("dev", lambda: _run_dev(console, args), port=args.port, engine=args.engine)


def _run_dev(console: Console, args: argparse.Namespace) -> None:
    """Start everything, seed the demo before the request URL answers, say how to use it, run
    until a signal."""
    from bot.local.pipeline import LocalPipeline, PipelineOptions

    started = time.monotonic()
    console.say(f"Starting the local pipeline ({args.engine}) …")
    pipeline = LocalPipeline(
        PipelineOptions(
            engine=args.engine,
            port=args.port,
            before_invoke=console.observe,
            before_serving=None if args.no_seed else _seed_demo_here,
        )
    )
    playground: Any = None
    summaries = MetricsSummaries(console, pipeline.metrics, args.metrics_every)
    try:
        pipeline.start()
        console.adopt_function_loggers()
        from bot.local.playground import Playground

        playground = Playground(pipeline).start()
        pipeline.ingress.on_answer = console.answered
        url = pipeline.ingress.url
        summaries.start()  # SIGUSR1 is taken before the banner names it (its default ends the process)
        console.say(
            f"Runbook Bot is running locally ({args.engine}); ready in {time.monotonic() - started:.1f}s"
        )
        console.say(f"  Slack request URL:  {url}")
        console.say(f"  Playground:         {playground.url}")
        console.say(f"  Slack stand-in:     {os.environ['SLACK_API_URL']}")
        console.say(f"  Embedded AWS:       {os.environ.get('AWS_ENDPOINT_URL')}")
        console.say(f"  Bot metrics:        {summaries.how_to_ask()}; JSON at {playground.url}api/metrics")
        console.say(f"  Logs:               {console.log_file}")
        console.say("Send a signed command (in another terminal):")
        console.say(f'  .venv/bin/runbook-bot send --url {url} "throttle partner-acme"')
        console.say("Each command, and each event of a run, prints here. Press Ctrl-C to stop.")
        threading.Event().wait()
    finally:
        console.say("stopping …")
        if playground is not None:
            playground.stop()
        summaries.stop()
        pipeline.stop()
        console.say("stopped")


def _seed_demo_here() -> None:
    """The demo partners' resources where the standard AWS variables point (the embedded AWS)."""
    import boto3

    from bot.demo import seed_demo

    seed_demo(boto3.session.Session())


def _serve(args: argparse.Namespace) -> int:
    from bot.config import read_slack_secrets
    from bot.exceptions import ConfigError

    if args.aws == "real" and not os.environ.get("EXECUTIONS_TABLE"):
        print(
            "EXECUTIONS_TABLE is not set: with --aws real it names the deployed stack's table",
            file=sys.stderr,
        )
        return 2
    try:
        read_slack_secrets()
    except ConfigError as error:
        print(f"{error}", file=sys.stderr)
        return 2
    console = Console(args.log_file or _default_log_file(f"serve-{args.port}"))
    engine = args.engine if args.aws == "embedded" else ""
    return console.run("serve", lambda: _run_serve(console, args), port=args.port, engine=engine)


def _run_serve(console: Console, args: argparse.Namespace) -> None:
    """The Slack-facing function over HTTP for a real Slack app, until a signal."""
    from bot.local.http import IngressServer
    from bot.local.pipeline import LocalPipeline, PipelineOptions
    from bot.local.template import load_template

    pipeline: LocalPipeline | None = None
    server: IngressServer | None = None
    summaries: MetricsSummaries | None = None
    try:
        if args.aws == "real":
            module, _, function = load_template().http_function()[1].rpartition(".")
            handler = getattr(importlib.import_module(module), function)
            server = IngressServer(handler, port=args.port).start()
            where = f"real AWS (table {os.environ['EXECUTIONS_TABLE']}); the deployed worker runs the steps"
        else:
            options = PipelineOptions(
                engine=args.engine,
                port=args.port,
                slack_stand_in=False,
                before_invoke=console.observe,
                before_serving=_seed_demo_here,
            )
            pipeline = LocalPipeline(options)
            summaries = MetricsSummaries(console, pipeline.metrics, args.metrics_every)
            pipeline.start()
            console.adopt_function_loggers()
            server = pipeline.ingress
            where = (
                f"embedded AWS ({args.engine}) with the demo partners; worker, publisher and sweeper run here"
            )
        console.adopt_function_loggers()
        server.on_answer = console.answered
        console.say(f"Serving the Slack request URL on {server.url} ({where}).")
        console.say(
            "Slack reaches it through a tunnel to this port (e.g. `cloudflared tunnel --url "
            f"http://127.0.0.1:{args.port}`); put the tunnel's https URL + /slack/events in slack-manifest.yaml."
        )
        console.say(f"Slack Web API: {os.environ.get('SLACK_API_URL') or 'https://slack.com/api/'}.")
        if summaries is not None:
            summaries.start()
            console.say(f"Bot metrics: {summaries.how_to_ask()}.")
        console.say(f"Logs: {console.log_file}. Ctrl-C stops.")
        threading.Event().wait()
    finally:
        if summaries is not None:
            summaries.stop()
        if pipeline is not None:
            pipeline.stop()
        elif server is not None:
            server.stop()
        console.say("stopped")


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
    from bot.drills.local import run_local_drill
    from bot.partners.faults import FaultSpec, FaultSpecError

    if args.faults is not None:
        try:
            FaultSpec.parse(args.faults)
        except FaultSpecError as error:
            print(f"--faults: {error}", file=sys.stderr)
            return 2
    console = Console(args.log_file or _default_log_file(f"drill-{args.runbook}-{args.partner}"))
    verdict: list[int] = []

    def drill() -> None:
        console.say(f"Drill of {args.runbook} for {args.partner} on the local pipeline ({args.engine}) …")
        console.say(f"  Logs: {console.log_file}")
        result = run_local_drill(
            args.runbook,
            args.partner,
            faults=args.faults,
            time_limit=args.time_limit,
            engine=args.engine,
            approve=not args.no_approve,
            on_records=console.observe,
            on_started=console.adopt_function_loggers,
        )
        for line in result.report.lines():
            console.say(line)
        if result.injected:
            console.say("  injected: " + ", ".join(f"{k} {v}" for k, v in result.injected.items()))
        console.say(f"  took {result.seconds:.1f}s; {result.channel_events} message(s) in the channel")
        verdict.append(0 if result.report.passed else 1)

    status = console.run("drill", drill, engine=args.engine)
    return status if status or not verdict else verdict[0]


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


# -- the local stack's console --------------------------------------------------------------------

# Libraries whose logs (and tracebacks) belong in the log file only, never on the console.
_BOT_LOGGERS = ("bot", "__main__")


class Console:
    """What `dev`, `serve` and `drill` print, one line per meaningful event; the rest to a log file.

    The console shows each command with its answer, each timeline event of a run (run started,
    step finished, approval requested and decided, run ended) as the pipeline commits it, and
    warnings of the bot's own code as one line. The log file gets everything: the functions'
    structured logs, the embedded AWS's, and every traceback.
    """

    def __init__(self, log_file: Path, out: TextIO | None = None) -> None:
        self.log_file = log_file
        self.out = out or sys.stdout
        self._lock = threading.Lock()
        self._printed: dict[str, int] = {}  # execution id -> last timeline seq printed
        self._file: logging.FileHandler | None = None
        self._warnings = _OneLineHandler(self)
        # Powertools puts a filter on the root's handlers that drops its loggers' records: the
        # functions' loggers get their own console handler, and are put back as they were after.
        self._function_warnings = _OneLineHandler(self)
        self._adopted: list[
            tuple[logging.Logger, logging.StreamHandler[TextIO] | None, TextIO | None, bool]
        ] = []

    # -- running a command ------------------------------------------------------------------

    def run(
        self, command: str, body: Callable[[], None], *, port: int | None = None, engine: str = ""
    ) -> int:
        """`body` with the console set up; its end, a signal, a busy port, a missing dependency or
        a crash each end it with one line. Returns the exit status (0: stopped as asked)."""
        from bot.local.aws import MissingDependency, check_dependencies

        try:
            if engine:
                check_dependencies(engine)
        except MissingDependency as error:
            self.error(command, str(error))
            return 2
        if port is not None and (busy := _port_problem(port)):
            self.error(command, busy)
            return 2
        self._install_logging()
        try:
            with _stopped_by_signals():
                body()
        except KeyboardInterrupt:
            return 0
        except MissingDependency as error:
            self.error(command, str(error))
            return 2
        except OSError as error:
            if port is not None and error.errno in {errno.EADDRINUSE, errno.EACCES}:
                self.error(
                    command, _port_problem(port) or f"cannot listen on 127.0.0.1:{port}: {error.strerror}"
                )
                return 2
            logger.exception("runbook-bot %s failed", command)
            self.error(command, f"{type(error).__name__}: {error}; details in {self.log_file}")
            return 1
        except Exception as error:
            logger.exception("runbook-bot %s failed", command)
            self.error(
                command, f"{type(error).__name__}: {_first_line(str(error))}; details in {self.log_file}"
            )
            return 1
        finally:
            self._remove_logging()
        return 0

    def say(self, line: str) -> None:
        with self._lock:
            print(line, file=self.out, flush=True)

    def say_lines(self, lines: Sequence[str]) -> None:
        """Lines that belong together, never interleaved with another event's line."""
        with self._lock:
            for line in lines:
                print(_clip(line), file=self.out, flush=True)

    def error(self, command: str, message: str) -> None:
        with self._lock:
            print(f"runbook-bot {command}: {message}", file=sys.stderr, flush=True)

    # -- what the pipeline tells it -------------------------------------------------------------

    def observe(self, consumer: str, records: list[dict[str, Any]]) -> None:
        """PipelineOptions.before_invoke: print the timeline events new in these stream records
        (both consumers see them, and records are redelivered: each event prints once)."""
        try:
            for record in records:
                self._print_new_events(record)
        except Exception:  # the console never fails a batch
            logger.exception("cannot print the events of a %s batch", consumer)

    def answered(self, event: dict[str, Any], response: dict[str, Any]) -> None:
        """IngressServer.on_answer: one line per slash command, and per request not answered 200."""
        body = str(event.get("body") or "")
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body).decode("utf-8", errors="replace")
        form = dict(urllib.parse.parse_qsl(body))
        status = int(response.get("statusCode") or 500)
        try:
            answer = str(json.loads(response.get("body") or "{}").get("text") or "")
        except (ValueError, AttributeError):
            answer = str(response.get("body") or "")
        if "command" in form:
            said = _plain(answer) if status == 200 and answer else f"HTTP {status}"
            who = f"{form.get('user_id', '?')} in {form.get('channel_id', '?')}"
            self.say(_clip(f"{_clock()} {form['command']} {form.get('text', '')} ({who}) → {said}"))
        elif status != 200:
            what = "button click" if "payload" in form else "request"
            self.say(f"{_clock()} {what} → HTTP {status}")

    def _print_new_events(self, record: dict[str, Any]) -> None:
        from bot.store.codec import from_attribute

        image = (record.get("dynamodb") or {}).get("NewImage") or {}
        if "execution_id" not in image or "timeline" not in image:
            return
        execution_id = str(from_attribute(image["execution_id"]))
        drill = " [drill]" if image.get("drill") and from_attribute(image["drill"]) else ""
        lines = []
        with self._lock:
            last = self._printed.get(execution_id, 0)
            for event in from_attribute(image["timeline"]):
                seq = int(event.get("seq") or 0)
                if seq <= last:
                    continue
                last = seq
                kind = str(event.get("kind") or "").replace("_", " ")
                step = f" {event['step_id']}" if event.get("step_id") else ""
                at = _clock(int(event.get("at_ms") or 0) / 1000)
                summary = _plain(str(event.get("summary") or ""))
                actor = str(event.get("actor") or "")
                if actor and actor not in summary:
                    summary += f" (by {'@' if actor[:1] in {'U', 'W'} else ''}{actor})"
                lines.append(_clip(f"{at} {execution_id}{drill} {kind}{step}: {summary}"))
            self._printed[execution_id] = last
            for line in lines:
                print(line, file=self.out, flush=True)

    # -- logging ----------------------------------------------------------------------------

    def _install_logging(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._file = logging.FileHandler(self.log_file, mode="w", encoding="utf-8")
        self._file.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
        )
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        root.addHandler(self._file)
        root.addHandler(self._warnings)
        logging.captureWarnings(True)
        threading.excepthook = self._thread_died

    def _remove_logging(self) -> None:
        root = logging.getLogger()
        for handler in (self._file, self._warnings):
            if handler is not None:
                root.removeHandler(handler)
        for adopted, first, stream, propagate in self._adopted:
            if first is not None and stream is not None:
                first.setStream(stream)
            adopted.removeHandler(self._function_warnings)
            adopted.propagate = propagate
        self._adopted.clear()
        threading.excepthook = threading.__excepthook__
        logging.captureWarnings(False)
        if self._file is not None:
            self._file.close()

    def adopt_function_loggers(self) -> None:
        """The Lambda functions' Powertools loggers write JSON to stdout, as in Lambda: here they
        write to the log file instead, and their warnings reach the console as one line each."""
        if self._file is None:
            return
        adopted = {entry[0] for entry in self._adopted}
        for candidate in list(logging.root.manager.loggerDict.values()):
            if not isinstance(candidate, logging.Logger) or not hasattr(candidate, "powertools_handler"):
                continue
            if candidate in adopted:
                continue
            first = candidate.handlers[0] if candidate.handlers else None
            if isinstance(first, logging.StreamHandler) and first.stream in {sys.stdout, sys.stderr}:
                # Powertools finds its handler as the first one: keep it there, with the file as stream.
                self._adopted.append(
                    (candidate, first, first.setStream(self._file.stream), candidate.propagate)
                )
            else:
                self._adopted.append((candidate, None, None, candidate.propagate))
            candidate.addHandler(self._function_warnings)
            candidate.propagate = False

    def _thread_died(self, died: threading.ExceptHookArgs) -> None:
        if died.exc_type is SystemExit:
            return
        name = died.thread.name if died.thread else "a thread"
        logger.error("%s stopped", name, exc_info=(died.exc_type, died.exc_value, died.exc_traceback))  # type: ignore[arg-type]


class MetricsSummaries:
    """The bot's own metrics on the console, as a few lines (`EmfAggregator.summary`): every
    `every` seconds if something was recorded since the last summary, at once on SIGUSR1, and a
    last time when the command stops (if anything was recorded at all)."""

    def __init__(self, console: Console, metrics: EmfAggregator, every: float) -> None:
        self.console = console
        self.metrics = metrics
        self.every = every
        self._asked = threading.Event()
        self._stopping = threading.Event()
        self._printed_version = 0
        self._thread: threading.Thread | None = None
        self._previous_handler: Any = None

    @staticmethod
    def signal_available() -> bool:
        return hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread()

    def how_to_ask(self) -> str:
        when = f"a summary every {self.every:g}s when it changed" if self.every else "a summary"
        if self.signal_available():
            return f"{when}, and at once on `kill -USR1 {os.getpid()}`"
        return when

    def start(self) -> MetricsSummaries:
        if self.signal_available():
            self._previous_handler = signal.signal(signal.SIGUSR1, lambda signum, frame: self.ask())
        self._thread = threading.Thread(target=self._run, name="metrics-summary", daemon=True)
        self._thread.start()
        return self

    def ask(self) -> None:
        """Print a summary now (a signal handler may call it: it only wakes the printing thread)."""
        self._asked.set()

    def stop(self) -> None:
        """Stop the periodic summary and print the last one."""
        self._stopping.set()
        self._asked.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._previous_handler is not None:
            signal.signal(signal.SIGUSR1, self._previous_handler)
            self._previous_handler = None
        if self.metrics.version:
            self.print_summary()

    def print_summary(self, *, only_if_changed: bool = False) -> None:
        version = self.metrics.version
        if only_if_changed and version == self._printed_version:
            return
        self._printed_version = version
        lines = self.metrics.summary(width=_CONSOLE_WIDTH - 9)
        self.console.say_lines([f"{_clock()} {lines[0]}", *lines[1:]])

    def _run(self) -> None:
        deadline = time.monotonic() + self.every if self.every else None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            asked = self._asked.wait(timeout)
            if self._stopping.is_set():
                return
            try:
                if asked:
                    self._asked.clear()
                    self.print_summary()
                else:
                    self.print_summary(only_if_changed=True)
            except Exception:  # the summary never stops the command
                logger.exception("cannot print the metrics summary")
            if deadline is not None and time.monotonic() >= deadline:
                deadline = time.monotonic() + self.every


class _OneLineHandler(logging.Handler):
    """Warnings and errors of the bot's own code (and of the functions), one line each; the
    traceback, if any, is in the log file."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.split(".")[0] in _BOT_LOGGERS or hasattr(
            logging.getLogger(record.name), "powertools_handler"
        )
        return own and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{_clock(record.created)} {record.levelname.lower()}: {_plain(record.getMessage())}"
            if record.exc_info and record.exc_info[1] is not None:
                error = record.exc_info[1]
                line += f" ({type(error).__name__}: {_first_line(str(error))}; traceback in {self.console.log_file})"
            self.console.say(_clip(line))
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP end the command through its `finally`, which stops every child
    (DynamoDB Local's JVM included); a second signal while it stops is ignored, not obeyed
    halfway. SIGINT is taken even where the shell ignores it (a background job)."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may take signals (a test calling main() from a thread)
        return
    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, on_signal) for signum in caught}
    try:
        yield
    finally:
        stopping.set()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _port_problem(port: int) -> str:
    """Why 127.0.0.1:`port` cannot be served (empty if it can), with what to do about it."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on 127.0.0.1 is in use (another `runbook-bot dev` or `serve`?): "
                    "stop that process, or choose another port with --port"
                )
            return f"cannot listen on 127.0.0.1:{port} ({error.strerror}): choose another port with --port"
    return ""


_SLACK_TOKEN = re.compile(r"<([@#!])?([^>|]*)(?:\|([^>]*))?>")


def _plain(text: str) -> str:
    """Slack mrkdwn as a console line: mentions and links as their labels, one line."""

    def token(match: re.Match[str]) -> str:
        sigil, target, label = match.group(1) or "", match.group(2), match.group(3)
        if label:
            return label if sigil != "@" or label.startswith("@") else f"@{label}"
        if sigil == "!":
            return "@" + target.split("^")[-1] if target.startswith("subteam^") else f"@{target}"
        return f"{sigil}{target}" if sigil else target

    text = _SLACK_TOKEN.sub(token, text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return " ".join(text.split())


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


_CONSOLE_WIDTH = 240


def _clip(line: str, width: int = _CONSOLE_WIDTH) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def _clock(epoch: float | None = None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(time.time() if epoch is None else epoch))


if __name__ == "__main__":
    raise SystemExit(main())
