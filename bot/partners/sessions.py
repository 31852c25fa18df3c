"""Per-partner AWS sessions: the partner's region, and its account through STS when it has a role."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from bot.exceptions import ActionError
from bot.partners.model import Partner

if TYPE_CHECKING:
    from bot.partners.faults import FaultInjector

REFRESH_BEFORE_SECONDS = 300


class DrillGuard:
    """Refuses, before it is sent, any request of a drill that names a production resource.

    The drill's partner view already resolves every table and store to its drill target; this
    is the second lock on the door: whatever a runbook or an action names, a drill's clients
    cannot reach a production table, queue or metric.
    """

    def __init__(self, production: frozenset[str]) -> None:
        self.production = production

    def install(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build", self.check)

    def check(self, params: dict[str, Any], model: Any = None, **_: Any) -> None:
        touched = sorted(self.production & set(_resource_names(params)))
        if touched:
            operation = getattr(model, "name", "a request")
            raise ActionError(
                "DrillTouchesProduction",
                f"a drill tried {operation} on production {', '.join(touched)}; refused before it was "
                "sent. Drills act only on the partner's drill_target resources",
                retryable=False,
            )


# Operations a plan may send: they read and change nothing. Everything else (PutItem, UpdateTable,
# ExecuteStatement, and SQS ReceiveMessage, which hides what it reads and counts a receive) is refused.
READ_PREFIXES = ("Describe", "Get", "List", "Query", "Scan", "BatchGet", "TransactGet")


class PlanGuard:
    """Refuses, before it is sent, every request of a plan that is not a read.

    A plan previews the steps that would change something instead of running them; this is the
    lock on the door behind that: whatever an action tries, a plan's clients cannot write to a
    partner resource, change its capacity, or receive (and so hide) a queue's messages.
    """

    def install(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build", self.check)

    def check(self, params: dict[str, Any], model: Any = None, **_: Any) -> None:
        operation = str(getattr(model, "name", "") or "")
        if not operation.startswith(READ_PREFIXES):
            raise ActionError(
                "PlanRefusesWrite",
                f"a plan tried {operation or 'a request'}, which is not a read; refused before it was "
                "sent. A plan changes nothing: start the run (Run this plan) to make changes",
                retryable=False,
            )


def _resource_names(value: Any) -> list[str]:
    """Every table, queue and metric-dimension name a request's parameters carry."""
    names: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in {"TableName", "QueueName", "GlobalTableName"} and isinstance(item, str):
                names.append(item)
            elif key == "QueueUrl" and isinstance(item, str):
                names.append(item.rstrip("/").rsplit("/", 1)[-1])
            elif key == "RequestItems" and isinstance(item, dict):
                names += [str(k) for k in item]
            elif key == "Name" and item == "TableName" and isinstance(value.get("Value"), str):
                names.append(value["Value"])
            else:
                names += _resource_names(item)
    elif isinstance(value, list):
        for item in value:
            names += _resource_names(item)
    return names


class PartnerSession:
    """boto3 clients for one partner, cached per service; assumed-role credentials refreshed early."""

    def __init__(
        self,
        partner: Partner,
        injector: FaultInjector | None = None,
        guard: DrillGuard | PlanGuard | None = None,
    ) -> None:
        self.partner = partner
        self.injector = injector  # a drill's faults, installed on every DynamoDB client
        self.guard = guard  # a drill's refusal of production resources, a plan's of writes, on every client
        self._clients: dict[str, Any] = {}
        self._session: Any = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        with self._lock:
            if self.partner.role_arn and time.time() > self._expires_at - REFRESH_BEFORE_SECONDS:
                self._session, self._clients = None, {}
            if self._session is None:
                self._session = self._new_session()
            if service not in self._clients:
                from botocore.config import Config

                self._clients[service] = self._session.client(
                    service,
                    region_name=self.partner.region,
                    config=Config(
                        retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10
                    ),
                )
                if self.guard is not None:
                    self.guard.install(self._clients[service])
                if self.injector is not None and service == "dynamodb":
                    self.injector.install(self._clients[service])
            return self._clients[service]

    def _new_session(self) -> Any:
        import boto3

        if not self.partner.role_arn:
            return boto3.session.Session()
        answer = boto3.client("sts").assume_role(
            RoleArn=self.partner.role_arn,
            RoleSessionName=f"runbook-bot-{self.partner.name}"[:64],
            DurationSeconds=3600,
        )
        creds = answer["Credentials"]
        self._expires_at = creds["Expiration"].timestamp()
        return boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )


class PartnerSessions:
    """The partner sessions of one function's services, cached per partner, drill and faults.

    A drill gets a session (and clients) of its own: the partner's drill view (raises
    DrillTargetMissing when something has no drill target), its faults, and a guard that refuses
    every production resource. A plan gets one whose guard refuses every request but reads. An
    edited partner file (a new `Partner`) gets a new session.
    """

    def __init__(self) -> None:
        self._cache: dict[
            tuple[str, bool, bool, tuple[tuple[str, float], ...]], tuple[Partner, PartnerSession]
        ] = {}
        self._lock = threading.Lock()

    def get(
        self,
        partner: Partner,
        faults: dict[str, float] | None = None,
        *,
        drill: bool = False,
        plan: bool = False,
    ) -> PartnerSession:
        key = (partner.name, drill, plan, tuple(sorted((faults or {}).items())))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == partner:
                return cached[1]
            session = _new_session(partner, faults, drill, plan)
            self._cache[key] = (partner, session)
            return session

    def for_run(self, partner: Partner, ex: Any) -> PartnerSession:
        """The session a run's steps use: its drill's, with the drill's faults; a plan's, that
        only reads; or production's."""
        if getattr(ex, "kind", "run") == "plan":
            return self.get(partner, plan=True)
        return self.get(partner, ex.drill_faults if ex.drill else None, drill=ex.drill)


def _new_session(
    partner: Partner, faults: dict[str, float] | None, drill: bool, plan: bool = False
) -> PartnerSession:
    if plan:
        return PartnerSession(partner, None, PlanGuard())
    injector = None
    if faults:
        from bot.partners.faults import FaultInjector, FaultSpec

        injector = FaultInjector(FaultSpec.from_dict(faults), seed=partner.name)
    if drill:
        return PartnerSession(partner.for_drill(), injector, DrillGuard(partner.production_resources()))
    return PartnerSession(partner, injector)
