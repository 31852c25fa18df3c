"""Per-partner AWS sessions: the partner's region, and its account through STS when it has a role."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from bot.partners.model import Partner

if TYPE_CHECKING:
    from bot.drills.faults import FaultInjector

REFRESH_BEFORE_SECONDS = 300


class PartnerSession:
    """boto3 clients for one partner, cached per service; assumed-role credentials refreshed early."""

    def __init__(self, partner: Partner, injector: FaultInjector | None = None) -> None:
        self.partner = partner
        self.injector = injector  # a drill's faults, installed on every DynamoDB client
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


_SESSIONS: dict[tuple[str, tuple[tuple[str, float], ...]], PartnerSession] = {}


def session_for(partner: Partner, faults: dict[str, float] | None = None) -> PartnerSession:
    """The partner's cached session; a drill's faults get a session (and clients) of their own."""
    key = (partner.name, tuple(sorted((faults or {}).items())))
    session = _SESSIONS.get(key)
    if session is None or session.partner != partner:
        injector = None
        if faults:
            from bot.drills.faults import FaultInjector, FaultSpec

            injector = FaultInjector(FaultSpec.from_dict(faults), seed=partner.name)
        session = _SESSIONS[key] = PartnerSession(partner, injector)
    return session


def forget_sessions() -> None:
    """Drop every cached session and client (a fresh sandbox; new endpoints or credentials)."""
    _SESSIONS.clear()
