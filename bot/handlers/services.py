"""What a function keeps between invocations, in one object built once per sandbox and passed down.

Every Lambda function of the bot holds exactly one `Services` (its table client and store, the
catalog, Slack's secrets, the partners' AWS sessions, the clock) in its module's `Sandbox`.
Nothing else in the bot keeps clients, secrets or sessions across calls: the core takes what it
needs as arguments. On Lambda the sandbox is filled at init (so a SnapStart snapshot holds a
ready world); in tests and the local pipeline it is filled on first use and `renew()`ed to start
afresh, as a new sandbox would.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.config import SecretCache, SlackSecrets, read_slack_secrets

if TYPE_CHECKING:
    from bot.catalog import Catalog
    from bot.engine.executor import Executor
    from bot.partners.sessions import PartnerSessions
    from bot.slack.home import HomePublisher
    from bot.slack.publisher import Publisher
    from bot.store.executions import ExecutionStore


@dataclass
class Services:
    """One function's world. Built by `Services.for_function`; the parts only some functions use
    (the executor, the publisher, the Bolt app) are built on first use and kept here too."""

    store: ExecutionStore
    catalog: Catalog
    secrets: SecretCache
    sessions: PartnerSessions
    clock: Callable[[], float] = time.time
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _executor: Executor | None = field(default=None, repr=False)
    _publisher: tuple[str, Publisher] | None = field(default=None, repr=False)
    _app: tuple[SlackSecrets, Any] | None = field(default=None, repr=False)
    _homes: tuple[Publisher, HomePublisher] | None = field(default=None, repr=False)

    @classmethod
    def for_function(cls, *, lean: bool = False, catalog: Catalog | None = None) -> Services:
        """The services of a function, from its environment (template.yaml sets it). `lean`: the
        ack path's DynamoDB client (no boto3 import: cold starts stay short); `catalog`: one
        already loaded (else it is loaded now)."""
        from bot.catalog import load_catalog
        from bot.partners.sessions import PartnerSessions
        from bot.store.executions import ExecutionStore, dynamodb_client

        if lean:
            from bot.store import lean as lean_client

            client: Any = lean_client.dynamodb()
        else:
            client = dynamodb_client()
        return cls(
            ExecutionStore(client),
            catalog or load_catalog(),
            SecretCache(read_slack_secrets),
            PartnerSessions(),
        )

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def catalog_now(self) -> Catalog:
        """The catalog, for code that takes a loader (it never changes within a sandbox)."""
        return self.catalog

    @property
    def executor(self) -> Executor:
        with self._lock:
            if self._executor is None:
                from bot.engine.executor import Executor

                self._executor = Executor(self.store, self.catalog, sessions=self.sessions.for_run)
            return self._executor

    def publisher(self) -> Publisher:
        """The timeline publisher for the current bot token: a new one when the token rotates."""
        token = self.secrets().bot_token
        with self._lock:
            if self._publisher is None or self._publisher[0] != token:
                self._publisher = (token, self._new_publisher(token))
            return self._publisher[1]

    def homes(self) -> HomePublisher:
        """The App Home publisher beside the timeline publisher (its client, its table), kept with
        it: its cache of user-group members lives as long as the sandbox and the token."""
        from bot.slack.home import HomePublisher

        publisher = self.publisher()
        with self._lock:
            if self._homes is None or self._homes[0] is not publisher:
                self._homes = (publisher, HomePublisher.beside(publisher))
            return self._homes[1]

    def _new_publisher(self, token: str) -> Publisher:
        from bot.slack.client import RetryBudget, slack_client
        from bot.slack.publisher import Publisher
        from bot.store.slack_posts import PostsStore

        budget = RetryBudget()
        return Publisher(
            slack_client(token, rate_limit_retries=10, budget=budget),
            PostsStore(self.store.client, self.store.table),
            self.catalog_now,
            budget=budget,
        )

    def app(self, secrets: SlackSecrets) -> Any:
        """The Bolt app signed with `secrets`: built once, and again when the secrets rotate."""
        with self._lock:
            if self._app is None or self._app[0] != secrets:
                self._app = (secrets, self._new_app(secrets))
            return self._app[1]

    def _new_app(self, secrets: SlackSecrets) -> Any:
        from bot.slack.app import build_app
        from bot.slack.commands import CommandService
        from bot.slack.decisions import DecisionService

        store = self.store

        def executor() -> Any:  # only approval clicks need it; imported then, not on the ack path
            return self.executor

        commands = CommandService(store, self.catalog_now, self.now_ms)
        return build_app(
            secrets,
            commands,
            lambda client, members: DecisionService(store, self.catalog_now, executor, members, self.now_ms),
        )

    def before_snapshot(self) -> None:
        """Before Lambda snapshots the sandbox (SnapStart): keep no secret and no open connection
        in the snapshot; every sandbox restored from it reads and opens its own."""
        self.secrets.cache_clear()
        with self._lock:
            self._app = self._publisher = self._homes = None
        close = getattr(self.store.client, "close", None)
        if close is not None:
            close()

    def after_restore(self) -> Services:
        """The services of a sandbox restored from a snapshot: the catalog (immutable, the part a
        snapshot saves time on) is kept; clients, credentials, secrets, sessions and owner ids are
        renewed, since every sandbox restored from one snapshot would otherwise share them."""
        import random

        random.seed()  # the snapshot holds the generator's state: each sandbox draws its own jitter
        return Services.for_function(lean=_is_lean(self.store.client), catalog=self.catalog)


def _is_lean(client: Any) -> bool:
    from bot.store.lean import LeanJsonClient

    return isinstance(client, LeanJsonClient)


class Sandbox:
    """The one thing a handler module keeps between invocations: its function's services.

    `warm()` fills it at init on Lambda; `renew()` empties it, so the next call builds a fresh
    one (tests, the local pipeline's fresh start); SnapStart's runtime hooks call
    `before_snapshot()` and `after_restore()`.
    """

    def __init__(self, build: Callable[[], Services]) -> None:
        self._build = build
        self._value: Services | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Services:
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value

    def warm(self) -> Services:
        return self()

    def renew(self) -> None:
        with self._lock:
            self._value = None

    def use(self, services: Services) -> None:
        """Serve `services` from now on (tests and the local pipeline hand in their own)."""
        with self._lock:
            self._value = services

    def built(self) -> Services | None:
        return self._value

    def before_snapshot(self) -> None:
        if self._value is not None:
            self._value.before_snapshot()

    def after_restore(self) -> None:
        with self._lock:
            if self._value is not None:
                self._value = self._value.after_restore()


def on_lambda() -> bool:
    """Running in a real Lambda sandbox (not tests, not the local pipeline)."""
    return bool(os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"))
