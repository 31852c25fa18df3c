"""The whole pipeline on one machine, as template.yaml deploys it.

Embedded AWS (moto's server or AWS DynamoDB Local) on loopback, the tables and queues created
from template.yaml, the stream consumers fed real stream records in Lambda's event format, the
scheduled functions on their timers, the Slack stand-in, and the Slack-facing function over HTTP.
Every handler runs in this process exactly as Lambda would call it.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot import metrics
from bot.local.emf import EmfAggregator
from bot.local.lambda_context import LambdaContext
from bot.local.slack_requests import (
    DEV_BOT_TOKEN,
    DEV_SIGNING_SECRET,
    block_actions_body,
    event_headers,
    http_api_event,
    signed_headers,
    slash_command_body,
    view_submission_body,
)

logger = logging.getLogger(__name__)
TABLE_PREFIX = "runbook-bot"
DEMO_USERGROUPS = {"S0ACMEONCALL": ["U0ACMEONCALL"]}


@dataclass
class PipelineOptions:
    engine: str = "moto"  # moto | ddblocal
    port: int = 0  # ingress HTTP port (0: any free port)
    slack_fault_rate: float = 0.0
    slack_latency_ms: int = 0
    duplicate_rate: float = 0.0  # stream records delivered more than once
    max_duplicates: int = 2  # extra deliveries of a duplicated record (1 to this many)
    split_rate: float = 0.0  # batches split in two invocations
    seed: int = 0
    sweep_interval: float = 1.0  # seconds between sweeper runs (Lambda: rate(1 minute))
    ttl_interval: float = 1.0  # seconds between deletions of expired items (DynamoDB's TTL, emulated)
    publisher: bool = True  # run the timeline publisher (the Slack side)
    slack_stand_in: bool = True  # False: talk to the Slack that SLACK_API_URL and the secrets name
    worker_crash_rate: float = 0.0  # the worker dies before a batch, between effect and commit, or after
    bot_throttle_rate: float = 0.0  # DynamoDB throttles this share of the bot's own table requests
    before_invoke: Callable[[str, list[dict[str, Any]]], None] | None = None
    # Runs once everything but the ingress is up, before the ingress serves its port (bound
    # already: a request that comes meanwhile waits and is answered after): `dev` seeds here.
    before_serving: Callable[[], object] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


class SimulatedCrash(BaseException):
    """The worker's sandbox dies (out of memory, timeout): nothing in the bot catches it."""


class WorkerCrashes:
    """Kills the worker at random points: before a batch, between a step's effect and its commit
    (the executor's crash hook), or after the batch's commits but before Lambda hears back."""

    def __init__(self, rate: float, seed: int) -> None:
        import random

        self.rate = rate
        self.rng = random.Random(seed)
        self.count: dict[str, int] = {"before-batch": 0, "after-effect": 0, "after-batch": 0}
        self.lock = threading.Lock()

    def maybe(self, point: str) -> None:
        with self.lock:
            if self.rng.random() >= self.rate:
                return
            self.count[point] += 1
        raise SimulatedCrash(point)

    def at(self, point: str, *_: Any) -> None:
        self.maybe(point)

    def around(self, handler: Callable[[dict[str, Any], Any], Any]) -> Callable[[dict[str, Any], Any], Any]:
        def crashing(event: dict[str, Any], context: Any) -> Any:
            self.maybe("before-batch")
            response = handler(event, context)
            self.maybe("after-batch")
            return response

        return crashing

    @property
    def total(self) -> int:
        return sum(self.count.values())


def fresh_sandboxes() -> None:
    """Every function starts in a fresh sandbox: its services (clients, catalog, secrets, partner
    sessions) are built anew on next use, from the environment as it is now. A new sandbox is a
    new process too: boto3's default session, which keeps the credentials it first resolved (and
    DynamoDB Local keeps one database per access key), starts again from the environment."""
    boto3: Any = sys.modules.get("boto3")
    if boto3 is not None:
        boto3.DEFAULT_SESSION = None
    for module in _handler_modules():
        module.SANDBOX.renew()


def _handler_modules() -> list[Any]:
    from bot.handlers import alarm, ingress, sweeper, timeline, worker

    return [alarm, ingress, sweeper, timeline, worker]


def _resolve(handler: str) -> Callable[[dict[str, Any], Any], Any]:
    module, _, function = handler.rpartition(".")
    resolved: Callable[[dict[str, Any], Any], Any] = getattr(importlib.import_module(module), function)
    return resolved


class LocalPipeline:
    def __init__(self, options: PipelineOptions | None = None) -> None:
        self.options = options or PipelineOptions()
        self.aws: Any = None
        self.slack: Any = None
        self.ingress: Any = None
        self.deliveries: dict[str, Any] = {}
        self.tables: dict[str, str] = {}
        self.queues: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._saved_env: dict[str, str | None] = {}
        self._observer_store: Any = None
        # The bot's own metrics, from the EMF lines the functions log (dev's summary, the playground).
        self.metrics = EmfAggregator()
        self._stop_metrics: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalPipeline:
        """Brings everything up; if any part fails, what did start is stopped again (threads,
        servers, the embedded AWS, the environment) before the error goes on."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> LocalPipeline:
        from bot.local.aws import EmbeddedAws
        from bot.local.http import IngressServer
        from bot.local.slack_api import POSTS_PER_SECOND_PER_CHANNEL, SlackStandIn
        from bot.local.template import create_queues, create_tables, load_template

        o = self.options
        # The ingress port first: a port in use fails before anything starts, and no connection
        # the pipeline makes meanwhile can take the port as its own ephemeral source port.
        self.ingress = IngressServer(port=o.port)
        self.aws = EmbeddedAws(engine=o.engine)
        self.aws.start()
        self._set_env(self.aws.env())
        template = load_template()
        self.template = template
        self.tables = create_tables(self.aws.client("dynamodb"), template, self._name_for)
        self.queues = create_queues(self.aws.client("sqs"), template, self._name_for)
        slack_env: dict[str, str] = {}
        if o.slack_stand_in:
            self.slack = SlackStandIn(
                token=DEV_BOT_TOKEN,
                fault_rate=o.slack_fault_rate,
                latency_ms=o.slack_latency_ms,
                seed=o.seed,
                usergroups=DEMO_USERGROUPS,
            )
            slack_env = {
                "SLACK_API_URL": self.slack.start(),
                "SLACK_SIGNING_SECRET": DEV_SIGNING_SECRET,
                "SLACK_BOT_TOKEN": DEV_BOT_TOKEN,
                # The stand-in's clock may run fast: runs take turns in a channel at its pace.
                "SLACK_POSTS_PER_SECOND": f"{POSTS_PER_SECOND_PER_CHANNEL / self.slack.time_scale:g}",
            }
        self._set_env(
            {
                "EXECUTIONS_TABLE": self.tables["ExecutionsTable"],
                **slack_env,
                "POWERTOOLS_SERVICE_NAME": "runbook-bot",
                "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
                "SWEEP_EVERY_SECONDS": f"{o.sweep_interval:g}",
                **o.extra_env,
            }
        )
        fresh_sandboxes()
        self._stop_metrics = metrics.listen(self.metrics.observe)
        from bot.local.ttl import TtlReaper

        self.ttl = TtlReaper(self.aws.client("dynamodb"), self.tables["ExecutionsTable"])
        self._inject_bot_faults()
        self._start_stream_consumers()
        self._every(o.ttl_interval, self.ttl.sweep, "ttl")
        self._every(o.sweep_interval, self.sweep_once, "sweeper")
        self.ingress.handler = _resolve(template.http_function()[1])
        if o.before_serving is not None:
            o.before_serving()
        self.ingress.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._observer_store = None
        for delivery in self.deliveries.values():
            delivery.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.ingress:
            self.ingress.stop()
        if self.slack:
            self.slack.stop()
        if self.aws:
            self.aws.stop()
        if self._stop_metrics is not None:
            self._stop_metrics()
            self._stop_metrics = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        fresh_sandboxes()

    def __enter__(self) -> LocalPipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what a person (or a test) does ------------------------------------------------------

    def command(
        self,
        text: str,
        *,
        user_id: str = "U0DEVONCALL",
        channel_id: str = "C0ACMEOPS",
        base64_body: bool = False,
        secret: str = DEV_SIGNING_SECRET,
        timestamp: int | None = None,
        trigger_id: str | None = None,
    ) -> dict[str, Any]:
        """A signed `/runbook <text>` through the ingress handler; returns the Lambda response."""
        # The stand-in's own hook: a response_url must never point at the real Slack from here.
        hook = self.slack.response_url(f"{channel_id}-{user_id}") if self.slack is not None else ""
        if trigger_id is None and self.slack is not None:
            trigger_id = self.slack.trigger(user_id)  # as Slack issues it: `/runbook` alone opens a form
        body = slash_command_body(
            text, user_id=user_id, channel_id=channel_id, trigger_id=trigger_id, response_url=hook
        )
        event = http_api_event(body, signed_headers(secret, body, timestamp), base64_body=base64_body)
        return dict(self.ingress.invoke(event))

    def click(
        self, action_id: str, value: str, *, user_id: str, channel_id: str = "C0ACMEOPS", message_ts: str = ""
    ) -> dict[str, Any]:
        # The click's response_url lands on the stand-in, as the command's does; the stand-in issues
        # its trigger_id, so a views.open with it is checked as Slack would.
        hook = self.slack.response_url(f"{channel_id}-{user_id}") if self.slack is not None else ""
        trigger_id = self.slack.trigger(user_id) if self.slack is not None else ""
        body = block_actions_body(
            action_id,
            value,
            user_id=user_id,
            channel_id=channel_id,
            message_ts=message_ts,
            response_url=hook,
            trigger_id=trigger_id,
        )
        return dict(self.ingress.invoke(http_api_event(body, signed_headers(DEV_SIGNING_SECRET, body))))

    def submit_view(self, view_id: str, values: dict[str, str]) -> dict[str, Any]:
        """The user submits an open modal (`values`: input block id -> text): a signed
        `view_submission` through the ingress; Slack then closes, updates or annotates the modal
        as the answer says. Returns {"status", "answer", "view": the modal as it now stands}."""
        import json

        assert self.slack is not None, "modals need the Slack stand-in"
        body = view_submission_body(self.slack.submission(view_id, values))
        response = dict(self.ingress.invoke(http_api_event(body, signed_headers(DEV_SIGNING_SECRET, body))))
        raw = response.get("body") or ""
        answer = json.loads(raw) if raw.strip().startswith("{") else {}
        view = self.slack.answer_submission(view_id, answer) if response["statusCode"] == 200 else {}
        return {"status": response["statusCode"], "answer": answer, "view": view}

    def choose(self, view_id: str, block_id: str, value: str) -> dict[str, Any]:
        """The user picks `value` in a modal's select (block `block_id`): Slack's `block_actions`
        through the ingress, signed. Returns the Lambda response; the modal, as the bot's
        views.update left it, is in `self.slack.open_views()`."""
        assert self.slack is not None, "modals need the Slack stand-in"
        body = view_submission_body(self.slack.choose(view_id, block_id, value))
        return dict(self.ingress.invoke(http_api_event(body, signed_headers(DEV_SIGNING_SECRET, body))))

    def deliver_event(
        self, payload: dict[str, Any], *, retry_num: int = 0, secret: str = DEV_SIGNING_SECRET
    ) -> dict[str, Any]:
        """An Events API request (`url_verification` or an `event_callback`, e.g. the stand-in's
        `home_opened`), signed, through the ingress; `retry_num` makes it Slack's n-th retry."""
        import json

        body = json.dumps(payload)
        return dict(
            self.ingress.invoke(http_api_event(body, event_headers(secret, body, retry_num=retry_num)))
        )

    def open_home(self, user_id: str, *, event_id: str = "") -> dict[str, Any]:
        """`user_id` opens the app's Home tab: Slack's `app_home_opened` through the ingress."""
        assert self.slack is not None, "the App Home needs the Slack stand-in"
        return self.deliver_event(self.slack.home_opened(user_id, event_id=event_id))

    def home_click(self, user_id: str, action_id: str, value: str = "") -> dict[str, Any]:
        """`user_id` clicks a button on the home published for them, signed, through the ingress."""
        assert self.slack is not None, "the App Home needs the Slack stand-in"
        body = view_submission_body(self.slack.home_click(user_id, action_id, value))
        return dict(self.ingress.invoke(http_api_event(body, signed_headers(DEV_SIGNING_SECRET, body))))

    def fire_alarm(self, alarm_name: str, state: str = "ALARM") -> dict[str, Any]:
        from bot.local.events import alarm_state_change

        logical_id, handler = self.template.alarm_function()
        result: dict[str, Any] = _resolve(handler)(
            alarm_state_change(alarm_name, state), LambdaContext(logical_id, timeout_seconds=30)
        )
        return result

    def sweep_once(self) -> None:
        logical_id = "SweeperFunction"
        for scheduled in self.template.scheduled_functions():
            logical_id = scheduled.logical_id
            _resolve(scheduled.handler)(
                {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
                LambdaContext(logical_id, timeout_seconds=60),
            )

    def execution(self, execution_id: str) -> Any:
        return self._observer().get(execution_id)

    def _observer(self) -> Any:
        """Tests' and benches' own view of the executions table, one per pipeline: a new boto3
        client per read cost the polling thread tens of ms of CPU, and the GIL the functions need
        (bench/scale at 500 runs spent most of its hour building clients)."""
        from bot.store.executions import ExecutionStore

        if self._observer_store is None:
            self._observer_store = ExecutionStore()
        return self._observer_store

    def wait_for(self, execution_id: str, statuses: set[str], timeout: float = 30.0) -> Any:
        """Poll until the run reaches one of `statuses` (names of Status); returns the execution."""
        deadline = time.monotonic() + timeout
        ex = None
        while time.monotonic() < deadline:
            ex = self.execution(execution_id)
            if ex is not None and ex.status.value in statuses:
                return ex
            time.sleep(0.05)
        raise TimeoutError(
            f"{execution_id} did not reach {sorted(statuses)} in {timeout}s; it is "
            f"{ex.status.value if ex else 'missing'}"
        )

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every stream consumer has caught up, nothing is in flight, and no run's
        timeline waits for its turn in Slack (a paced publisher waits for the sweeper's nudge)."""
        deadline = time.monotonic() + timeout
        while True:
            caught_up = all(
                delivery.drain(max(0.1, deadline - time.monotonic())) for delivery in self.deliveries.values()
            )
            if caught_up and not self.timelines_waiting():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def timelines_waiting(self) -> int:
        """Runs whose timeline events wait for their turn in Slack within the next minute (a paced
        channel; an unreachable one is tried again only every few minutes, so it is not waited for),
        and App Homes waiting out Slack's Retry-After."""
        if not self.options.publisher:
            return 0
        soon = int(time.time() * 1000) + 60_000
        return sum(1 for due in self._observer().due(soon, limit=1000) if due.kind in {"publish", "home"})

    # -- internals ---------------------------------------------------------------------------

    def _start_stream_consumers(self) -> None:
        from bot.local.streams import StreamDelivery

        ddb = self.aws.client("dynamodb")
        o = self.options
        for consumer in self.template.stream_consumers():
            if consumer.logical_id == "TimelineFunction" and not o.publisher:
                continue
            table = self.tables[consumer.table_logical_id]
            stream_arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
            hook = o.before_invoke
            before: Callable[[list[dict[str, Any]]], None] | None = None
            if hook is not None:
                before = functools.partial(hook, consumer.logical_id)
            handler = _resolve(consumer.handler)
            if self.crashes is not None and consumer.handler.startswith("bot.handlers.worker."):
                handler = self.crashes.around(handler)
            delivery = StreamDelivery(
                self.aws.client("dynamodbstreams"),
                stream_arn,
                consumer,
                handler=handler,
                sqs_client=self.aws.client("sqs"),
                on_failure_queue_url=self.queues.get(consumer.on_failure_queue_logical_id or ""),
                duplicate_rate=o.duplicate_rate,
                max_duplicates=o.max_duplicates,
                split_rate=o.split_rate,
                seed=o.seed,
                before_invoke=before,
                removed_by_service=self.ttl.removed_by_service,
            )
            delivery.start()
            self.deliveries[consumer.logical_id] = delivery

    def _inject_bot_faults(self) -> None:
        """Chaos on the bot itself: its own table throttled, its worker killed mid-step."""
        o = self.options
        self.bot_faults: Any = None
        self.crashes: WorkerCrashes | None = None
        if o.bot_throttle_rate:
            from bot.partners.faults import FaultInjector, FaultSpec
            from bot.store.lean import LeanJsonClient

            self.bot_faults = FaultInjector(
                FaultSpec(throttle=o.bot_throttle_rate), tables={self.tables["ExecutionsTable"]}, seed=o.seed
            )
            for module in _handler_modules():  # every boto3 client of the bot's table (not the ack path's)
                client = module.SANDBOX().store.client
                if not isinstance(client, LeanJsonClient):
                    self.bot_faults.install(client)
        if o.worker_crash_rate:
            from bot.handlers import worker

            self.crashes = WorkerCrashes(o.worker_crash_rate, o.seed)
            worker.SANDBOX().executor.crash_hook = self.crashes.at

    def _every(self, seconds: float, task: Callable[[], object], name: str) -> None:
        def loop() -> None:  # at a fixed rate, as a schedule fires: a long run does not push the next
            next_at = time.monotonic() + seconds
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                next_at = max(next_at + seconds, time.monotonic())
                try:
                    task()
                except Exception:
                    logger.exception("%s failed", name)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    @staticmethod
    def _name_for(logical_id: str) -> str:
        return f"{TABLE_PREFIX}-{logical_id}"
