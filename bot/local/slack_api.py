"""A local stand-in of Slack's Web API, on 127.0.0.1, for `SLACK_API_URL`. As strict as Slack.

Answers the methods the bot calls in Slack's documented shapes, keeps conversations with messages
and threads in order, records every call, and refuses what Slack refuses:
- scopes: each method needs the scopes Slack's OpenAPI spec names (`WEB_API_METHODS`); the token
  holds those `slack-manifest.yaml` declares, else `missing_scope` with `needed` and `provided`;
- membership: the bot is a member of the demo partners' channels (runbooks/partners/*.yaml) and
  of DMs it opens; `C0GENERAL` exists without it (`not_in_channel`), `C0ACMEOLD` is archived
  (`is_archived`), any other id is `channel_not_found`;
- Block Kit: every message's blocks parse with `slack_sdk.models.blocks` within Slack's limits
  (50 blocks, 3,000 characters of section text, ...), else `invalid_blocks`; text over 40,000
  characters is `msg_too_long`;
- rate limits: per-method tiers (2: 20/min, 3: 50/min, 4: 100/min, with bursts of a minute's
  worth), `chat.postMessage` about one per second per channel with short bursts, and for apps
  outside the Marketplace `conversations.history`/`replies` at 1 request per minute and 15
  items; over a limit the answer is HTTP 429 with `Retry-After`.

A fault switch (`fail`) makes any method answer any error, before its effect or after it (the
answer lost, as when Slack posts and then answers 500 or the connection drops). `time_scale`
runs the limits faster than real time: at 0.02 a minute of Slack's limits passes in 1.2 s, and
`Retry-After` carries the scaled seconds with decimals (real Slack sends whole seconds). The
default comes from `SLACK_STAND_IN_TIME_SCALE` (1: real time). Deterministic under a seed.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import random
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST_PATH = ROOT / "slack-manifest.yaml"
PARTNERS_DIR = ROOT / "runbooks" / "partners"
OUTSIDE_CHANNEL = "C0GENERAL"  # exists; the bot was never invited
ARCHIVED_CHANNEL = "C0ACMEOLD"  # the bot was a member; the channel is archived
BOT_USER = "U0RUNBOOKBOT"
MAX_TEXT = 40_000
MAX_BLOCKS = 50
HISTORY_ITEMS_OUTSIDE_MARKETPLACE = 15
TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
POSTS_PER_SECOND_PER_CHANNEL = 1.0
POST_BURST = 4


@dataclass(frozen=True)
class WebApiMethod:
    """What Slack's OpenAPI spec (slackapi/slack-api-specs, web-api/slack_web_openapi_v2.json)
    says a method needs from a bot token, and its rate-limit tier (0: Slack's special limits).

    `scopes` are granular bot scopes; the spec's `chat:write:bot` is `chat:write` for bot tokens.
    Where the scope depends on the conversation (`conversations.history`: `channels:history` for
    public channels, `groups:history` for private ones, `im:history` for DMs), `scopes` lists the
    ones the bot needs for the conversations it uses: its partners' channels, public or private."""

    scopes: tuple[str, ...]
    tier: int
    errors: frozenset[str] = frozenset()  # the method's own errors in the spec


_COMMON_ERRORS = frozenset(
    {
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "missing_scope",
        "ratelimited",
        "fatal_error",
        "internal_error",
        "request_timeout",
    }
)
_BLOCK_ERRORS = frozenset({"invalid_blocks", "msg_too_long", "no_text"})

WEB_API_METHODS: dict[str, WebApiMethod] = {
    "auth.test": WebApiMethod((), 0),
    "chat.postMessage": WebApiMethod(
        ("chat:write",),
        0,
        frozenset({"channel_not_found", "not_in_channel", "is_archived", "thread_not_found"}) | _BLOCK_ERRORS,
    ),
    "chat.update": WebApiMethod(
        ("chat:write",),
        3,
        frozenset({"channel_not_found", "is_inactive", "message_not_found", "cant_update_message"})
        | _BLOCK_ERRORS,
    ),
    "chat.postEphemeral": WebApiMethod(
        ("chat:write",),
        4,
        frozenset({"channel_not_found", "is_archived", "user_not_in_channel"}) | _BLOCK_ERRORS,
    ),
    "conversations.history": WebApiMethod(
        ("channels:history", "groups:history"), 3, frozenset({"channel_not_found", "not_in_channel"})
    ),
    "conversations.replies": WebApiMethod(
        ("channels:history", "groups:history"),
        3,
        frozenset({"channel_not_found", "not_in_channel", "thread_not_found"}),
    ),
    "conversations.open": WebApiMethod(("im:write",), 3, frozenset({"user_not_found", "channel_not_found"})),
    "usergroups.users.list": WebApiMethod(("usergroups:read",), 2, frozenset({"no_such_subteam"})),
    "users.info": WebApiMethod(("users:read",), 4, frozenset({"user_not_found"})),
    # Newer than the OpenAPI spec: scopes, tiers and errors from Slack's method pages (and
    # slack-ruby/slack-api-ref); `not_in_channel` is what Slack answers for a channel the bot is not in.
    "files.getUploadURLExternal": WebApiMethod(
        ("files:write",),
        4,
        frozenset(
            {"invalid_arguments", "missing_argument", "file_upload_size_restricted", "alt_txt_too_large"}
        ),
    ),
    "files.completeUploadExternal": WebApiMethod(
        ("files:write",),
        4,
        frozenset(
            {
                "invalid_arguments",
                "file_not_found",
                "invalid_channel",
                "not_in_channel",
                "posting_to_channel_denied",
            }
        ),
    ),
    # No scope (the spec: "Requires scope: `none`"); the errors are docs.slack.dev's for views.open.
    "views.open": WebApiMethod(
        (),
        4,
        frozenset(
            {
                "invalid_arguments",
                "invalid_trigger_id",
                "expired_trigger_id",
                "exchanged_trigger_id",
                "view_too_large",
            }
        ),
    ),
    # No scope; the errors are the spec's (slackapi/slack-api-specs, docs.slack.dev) for views.update.
    "views.update": WebApiMethod(
        (),
        4,
        frozenset({"invalid_arguments", "hash_conflict", "not_found", "view_too_large"}),
    ),
    # No scope (the spec: `none`); tier 4. The errors are the method page's: a bad user_id or view
    # is invalid_arguments, a stale hash hash_conflict, a home when the app's Home tab is off
    # not_enabled, a view over 250 kB view_too_large.
    "views.publish": WebApiMethod(
        (),
        4,
        frozenset({"invalid_arguments", "hash_conflict", "not_enabled", "view_too_large"}),
    ),
}
UPLOAD_URL_SECONDS = (
    600.0  # how long an upload URL takes bytes (scaled by time_scale); Slack's is short-lived
)
MAX_UPLOAD_BYTES = 1 << 30  # Slack's 1 GB file limit
CHANNEL_ID = re.compile(r"[CGDZ][A-Z0-9]{8,}")  # what files.completeUploadExternal accepts as channel_id
TRIGGER_SECONDS = 3.0  # a trigger_id is valid this long after the interaction, and once
VIEW_BYTES = 250_000  # views.open: view_too_large beyond 250 kB
USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_TRIGGER_FORMAT = r"\d+\.\d+\.[0-9a-f]+"  # Slack: "132456.7890123.abcdef"
_HISTORY_SCOPE = {"C": "channels:history", "G": "groups:history", "D": "im:history"}


@dataclass(frozen=True)
class Call:
    method: str
    args: dict[str, Any]
    status: int
    ok: bool
    at: float
    error: str = ""


@dataclass
class Fault:
    """One switch of `SlackStandIn.fail`: `error` (answered with HTTP 200, `ok: false`) or
    `status` (429, 5xx), or `disconnect` (the connection closes unanswered); `lost` performs the
    call first, so the effect happens and only the answer is lost."""

    method: str
    error: str = ""
    status: int = 200
    disconnect: bool = False
    lost: bool = False
    times: int | None = 1  # None: until cleared
    channel: str = ""
    retry_after: float = 1.0
    skip: int = 0  # calls that go through before this fault starts


@dataclass
class Upload:
    """A file from files.getUploadURLExternal: its bytes arrive at `ticket`'s URL before it expires;
    files.completeUploadExternal then shares it (once)."""

    file_id: str
    ticket: str
    filename: str
    length: int
    expires_at: float  # time.monotonic()
    title: str = ""
    content: bytes | None = None
    shared_in: str = ""  # channel, once completed
    thread_ts: str = ""


@dataclass
class Conversation:
    id: str
    name: str
    member: bool = True
    archived: bool = False
    user: str = ""  # the other person of a DM
    messages: list[dict[str, Any]] = field(default_factory=list)  # top-level, oldest first
    replies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # thread_ts -> replies


class _Disconnect(Exception):
    """Close the connection without an answer."""


class _Bucket:
    """A token bucket in simulated seconds."""

    def __init__(self, per_second: float, burst: float) -> None:
        self.per_second, self.burst = per_second, burst
        self.tokens, self.at = burst, time.monotonic()

    def take(self, scale: float) -> float:
        """Seconds (simulated) to wait before a token is free; 0 and a token taken when free."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) / scale * self.per_second)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second


def manifest_scopes(path: Path = MANIFEST_PATH) -> tuple[str, ...]:
    manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    return tuple(manifest["oauth_config"]["scopes"]["bot"])


def home_tab_enabled(path: Path = MANIFEST_PATH) -> bool:
    """The manifest turns the app's Home tab on (views.publish of a home is not_enabled otherwise)."""
    manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    return bool(((manifest.get("features") or {}).get("app_home") or {}).get("home_tab_enabled"))


def partner_channels(directory: Path = PARTNERS_DIR) -> list[str]:
    found: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        for channel in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("channels") or []:
            if str(channel) not in found:
                found.append(str(channel))
    return found


class SlackStandIn:
    def __init__(
        self,
        token: str,
        *,
        fault_rate: float = 0.0,
        latency_ms: int = 0,
        seed: int = 0,
        usergroups: dict[str, list[str]] | None = None,
        retry_after: int = 0,
        scopes: tuple[str, ...] | None = None,
        member_of: list[str] | None = None,
        time_scale: float | None = None,
        rate_limits: bool = True,
        marketplace: bool = False,
    ) -> None:
        self.token = token
        self.fault_rate = fault_rate
        self.latency_ms = latency_ms
        self.retry_after = retry_after
        self.usergroups = {k: list(v) for k, v in (usergroups or {}).items()}
        self.scopes = tuple(manifest_scopes() if scopes is None else scopes)
        self.time_scale = float(
            time_scale if time_scale is not None else os.environ.get("SLACK_STAND_IN_TIME_SCALE") or 1.0
        )
        self.rate_limits = rate_limits
        self.marketplace = marketplace
        self.calls: list[Call] = []
        self.responses: list[dict[str, Any]] = []  # what the bot sent to response_urls
        self.faults: list[Fault] = []
        self.files: dict[str, Upload] = {}  # by file id: what files.getUploadURLExternal issued
        self._member_of = list(partner_channels() if member_of is None else member_of)
        self._rng = random.Random(seed)
        self._channels: dict[str, Conversation] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.RLock()
        self._seq = 0
        self._triggers: dict[str, tuple[float, str, bool]] = {}  # trigger_id -> (issued, user, used)
        self.views: dict[str, dict[str, Any]] = {}  # view id -> the open modal, with its user
        self.homes: dict[str, dict[str, Any]] = {}  # user -> the home view published for them
        self.home_tab_enabled = home_tab_enabled()
        self.trigger_seconds = TRIGGER_SECONDS  # real seconds, never scaled: the bot's time box is real
        self.changed = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._workspace()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="slack-stand-in", daemon=True).start()
        return self.base_url

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    def response_url(self, name: str = "local") -> str:
        """A response_url that lands here (Slack's are https://hooks.slack.com/...)."""
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/{name}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.responses.clear()
            self.faults.clear()
            self.files.clear()
            self._channels.clear()
            self._buckets.clear()
            self._triggers.clear()
            self.views.clear()
            self.homes.clear()
            self._workspace()

    # -- the workspace, as tests arrange it ----------------------------------------------------------

    def add_channel(
        self, channel: str, *, member: bool = True, archived: bool = False, name: str = ""
    ) -> None:
        with self._lock:
            self._channels[channel] = Conversation(
                channel, name or channel.lower(), member=member, archived=archived
            )

    def invite(self, channel: str) -> None:
        """Someone typed `/invite @runbook-bot` in the channel."""
        with self._lock:
            self._channels.setdefault(channel, Conversation(channel, channel.lower())).member = True

    def remove(self, channel: str) -> None:
        """Someone removed the bot from the channel."""
        with self._lock:
            self._channels.setdefault(channel, Conversation(channel, channel.lower())).member = False

    def archive(self, channel: str) -> None:
        with self._lock:
            self._channels.setdefault(channel, Conversation(channel, channel.lower())).archived = True

    def say(self, channel: str, text: str, *, user: str = "U0SOMEONE", at: float | None = None) -> str:
        """A person's message in the channel (no API call, no limits); `at` sets its time."""
        with self._lock:
            ts = self._next_ts() if at is None else f"{at:.6f}"
            message = {"type": "message", "user": user, "ts": ts, "text": text}
            conversation = self._channels[channel]
            bisect.insort(conversation.messages, message, key=_ts)
            return ts

    def fail(
        self,
        method: str,
        error: str = "",
        *,
        status: int = 200,
        disconnect: bool = False,
        lost: bool = False,
        times: int | None = 1,
        channel: str = "",
        retry_after: float = 1.0,
        skip: int = 0,
    ) -> None:
        """Make `method` (or "*": any) answer `error`, `status` or a dropped connection, `times`
        times after `skip` matching calls went through. Faults queue: the next starts counting its
        `skip` when the one before it is used up.

        Refuses an error code Slack does not document for the method, so tests stay realistic."""
        if error and method != "*":
            known = WEB_API_METHODS[method].errors | _COMMON_ERRORS
            if error not in known:
                raise ValueError(f"Slack's {method} never answers {error!r}; it answers {sorted(known)}")
        with self._lock:
            self.faults.append(
                Fault(method, error, status, disconnect, lost, times, channel, retry_after, skip)
            )

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    # -- interactions: triggers and modals -----------------------------------------------------------

    def trigger(self, user: str, *, age: float = 0.0) -> str:
        """A trigger_id as Slack puts in an interaction's payload (a click, a slash command): valid
        for `trigger_seconds` and for one views.open. `age` makes it that many seconds old."""
        import uuid

        with self._lock:
            trigger_id = f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}"
            self._triggers[trigger_id] = (time.monotonic() - age, user, False)
            return trigger_id

    def open_views(self, user: str = "") -> list[dict[str, Any]]:
        """Modals open now (for `user`), oldest first, as Slack holds them (id, hash, state)."""
        with self._lock:
            return [dict(v) for v in self.views.values() if not user or v["user"] == user]

    def submission(self, view_id: str, values: dict[str, str], *, team_id: str = "T0LOCAL") -> dict[str, Any]:
        """The `view_submission` payload Slack sends when the user submits an open modal; `values`
        maps input block ids to what was typed or picked (an option's value), over what the user
        already picked in the modal (`choose`)."""
        with self._lock:
            view = dict(self.views[view_id])
            entered = {**view.get("entered", {}), **values}
        user = view.pop("user")
        view.pop("entered", None)
        view.pop("errors", None)
        return {
            "type": "view_submission",
            "team": {"id": team_id, "domain": "local"},
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team_id},
            "api_app_id": "A0RUNBOOKBOT",
            "token": "deprecated-verification-token",
            "trigger_id": self.trigger(user),
            "view": {**view, "state": {"values": _view_state(view, entered)}},
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def choose(self, view_id: str, block_id: str, value: str, *, team_id: str = "T0LOCAL") -> dict[str, Any]:
        """The user picks `value` in the select of input block `block_id`: Slack keeps it in the
        view's state and, for a block with `dispatch_action`, sends this `block_actions` payload
        (the view with its id, hash and state; the action with its selected option)."""
        with self._lock:
            current = self.views[view_id]
            block = next(
                (
                    b
                    for b in current.get("blocks") or []
                    if b.get("block_id") == block_id and b.get("type") == "input"
                ),
                None,
            )
            if block is None:
                raise ValueError(f"modal {view_id} has no input block {block_id}")
            element = block["element"]
            option = _option(element, value)
            if element.get("type") in _SELECTS and option is None:
                raise ValueError(f"{value!r} is not an option of {block_id}")
            current.setdefault("entered", {})[block_id] = value
            view = {k: v for k, v in current.items() if k not in {"user", "entered", "errors"}}
            user = current["user"]
            entered = dict(current["entered"])
        view["state"] = {"values": _view_state(view, entered)}
        action: dict[str, Any] = {
            "type": element.get("type"),
            "action_id": element.get("action_id", block_id),
            "block_id": block_id,
            "action_ts": f"{time.time():.6f}",
        }
        if option is not None:
            action["selected_option"] = option
        else:
            action["value"] = value
        return {
            "type": "block_actions",
            "team": {"id": team_id, "domain": "local"},
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team_id},
            "api_app_id": "A0RUNBOOKBOT",
            "token": "deprecated-verification-token",
            "container": {"type": "view", "view_id": view_id},
            "trigger_id": self.trigger(user),
            "view": view,
            "actions": [action] if block.get("dispatch_action") else [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    # -- the Events API and the App Home ---------------------------------------------------------

    def home_opened(
        self, user: str, *, event_id: str = "", tab: str = "home", team_id: str = "T0LOCAL"
    ) -> dict[str, Any]:
        """The `event_callback` Slack sends when `user` opens the app's Home tab (`app_home_opened`):
        the outer envelope with its event_id, and `view` when a home was published for them."""
        import uuid

        with self._lock:
            home = self.homes.get(user)
            view = {k: v for k, v in home.items() if k != "user"} if home else None
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user,
            "channel": "D" + user[1:],
            "tab": tab,
            "event_ts": f"{time.time():.6f}",
        }
        if view is not None:
            event["view"] = view
        return {
            "token": "deprecated-verification-token",
            "team_id": team_id,
            "api_app_id": "A0RUNBOOKBOT",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": team_id, "user_id": BOT_USER, "is_bot": True}],
        }

    @staticmethod
    def url_verification(challenge: str) -> dict[str, Any]:
        """What Slack sends once to a new Events API request URL: the app answers the challenge."""
        return {"token": "deprecated-verification-token", "challenge": challenge, "type": "url_verification"}

    def home_click(
        self, user: str, action_id: str, value: str = "", *, team_id: str = "T0LOCAL"
    ) -> dict[str, Any]:
        """`user` clicks a button of the home published for them: Slack's `block_actions` with the
        home view as container (no channel, no response_url) and a fresh trigger_id. Raises
        ValueError when no such button is on their home (nobody could click it)."""
        with self._lock:
            home = self.homes.get(user)
            if home is None:
                raise ValueError(f"no home was published for {user}")
            found = next(
                (
                    (block, element)
                    for block in home.get("blocks") or []
                    if block.get("type") == "actions"
                    for element in block.get("elements") or []
                    if element.get("action_id") == action_id and (not value or element.get("value") == value)
                ),
                None,
            )
            if found is None:
                raise ValueError(
                    f"{user}'s home has no {action_id} button" + (f" with value {value}" if value else "")
                )
            block, element = found
            view = {k: v for k, v in home.items() if k != "user"}
        return {
            "type": "block_actions",
            "team": {"id": team_id, "domain": "local"},
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team_id},
            "api_app_id": "A0RUNBOOKBOT",
            "token": "deprecated-verification-token",
            "container": {"type": "view", "view_id": view["id"]},
            "trigger_id": self.trigger(user),
            "view": view,
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block.get("block_id", ""),
                    "text": element.get("text"),
                    "value": element.get("value", ""),
                    "action_ts": f"{time.time():.6f}",
                }
            ],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def home_of(self, user: str) -> dict[str, Any] | None:
        """The home view published for `user` (as Slack shows it), or None."""
        with self._lock:
            home = self.homes.get(user)
            return {k: v for k, v in home.items() if k != "user"} if home else None

    def answer_submission(self, view_id: str, answer: dict[str, Any] | None) -> dict[str, Any]:
        """What Slack does with the app's answer to a view_submission: an empty answer closes the
        modal, `errors` keeps it open with the messages under the fields, `update` replaces it,
        `clear` closes every view. Returns the modal as it now stands ({} once closed)."""
        answer = answer or {}
        action = answer.get("response_action", "")
        with self._lock:
            current = self.views.get(view_id)
            if current is None:
                return {}
            if action == "errors":
                errors = dict(answer.get("errors") or {})
                inputs = {b.get("block_id") for b in current.get("blocks") or [] if b.get("type") == "input"}
                strays = sorted(set(errors) - inputs)
                if strays:
                    raise ValueError(f"Slack would refuse errors for blocks that are not inputs: {strays}")
                current["errors"] = errors
                result = dict(current)
            elif action == "update":
                view = dict(answer.get("view") or {})
                problems = _invalid_view(view)
                if problems:
                    raise ValueError(f"Slack would refuse the updated view: {problems}")
                self.views[view_id] = {**self._shown_view(view, current["user"]), "id": view_id}
                result = dict(self.views[view_id])
            elif action == "clear":
                user = current["user"]
                for vid in [k for k, v in self.views.items() if v["user"] == user]:
                    del self.views[vid]
                result = {}
            else:
                del self.views[view_id]
                result = {}
            self.changed.notify_all()
            return result

    def close_view(self, view_id: str) -> None:
        """The user closed a modal (Cancel, ×): Slack drops it and, without `notify_on_close`,
        tells the app nothing."""
        with self._lock:
            self.views.pop(view_id, None)
            self.changed.notify_all()

    # -- what tests and the playground read ----------------------------------------------------------

    def messages(self, channel: str) -> list[dict[str, Any]]:
        with self._lock:
            conversation = self._channels.get(channel)
            return [dict(m) for m in conversation.messages] if conversation else []

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """Like conversations.replies: the parent first, then its replies in order."""
        with self._lock:
            conversation = self._channels.get(channel)
            if conversation is None:
                return []
            parent = [dict(m) for m in conversation.messages if m["ts"] == ts]
            return parent + [dict(r) for r in conversation.replies.get(ts, [])]

    def dms(self, user: str) -> list[dict[str, Any]]:
        """Messages the bot sent to `user` in their DM."""
        with self._lock:
            return [dict(m) for c in self._channels.values() if c.user == user for m in c.messages]

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True

    # -- the methods ---------------------------------------------------------------------------------

    def _call(
        self, method: str, args: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        with self._lock:
            if self.fault_rate and method != "auth.test" and self._rng.random() < self.fault_rate:
                if self._rng.random() < 0.5:
                    return self._record(
                        method,
                        args,
                        429,
                        {"ok": False, "error": "ratelimited"},
                        {"Retry-After": str(self.retry_after)},
                    )
                status = self._rng.choice([500, 502, 503])
                return self._record(method, args, status, {"ok": False, "error": "internal_error"})
            fault = self._fault(method, args, lost=False)
            if fault:
                return self._faulted(method, args, fault)
            if not token:
                return self._record(method, args, 200, {"ok": False, "error": "not_authed"})
            if token != self.token:
                return self._record(method, args, 200, {"ok": False, "error": "invalid_auth"})
            spec = WEB_API_METHODS.get(method)
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if spec is None or handler is None:
                return self._record(method, args, 200, {"ok": False, "error": "unknown_method"})
            missing = self._missing_scope(method, spec, args)
            if missing:
                return self._record(method, args, 200, missing)
            wait = self._rate_limited(method, spec, args)
            if wait:
                return self._record(
                    method, args, 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": wait}
                )
            body = handler(args)
            self.changed.notify_all()
            lost = self._fault(method, args, lost=True) if body.get("ok") else None
            if lost:
                return self._faulted(method, args, lost)
            return self._record(method, args, 200, body)

    def _fault(self, method: str, args: dict[str, Any], *, lost: bool) -> Fault | None:
        """The fault for this call: one that refuses it, or (`lost`) one that loses its answer
        after the effect; a lost-answer fault counts only calls that took effect."""
        for fault in self.faults:
            if fault.method not in {method, "*"} or fault.lost != lost:
                continue
            if fault.channel and fault.channel != str(args.get("channel") or ""):
                continue
            if fault.skip > 0:
                fault.skip -= 1
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
            return fault
        return None

    def _faulted(
        self, method: str, args: dict[str, Any], fault: Fault
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if fault.disconnect:
            self._record(method, args, 0, {"ok": False, "error": "disconnected"})
            raise _Disconnect
        status = fault.status
        error = fault.error or ("ratelimited" if status == 429 else "internal_error" if status >= 500 else "")
        body: dict[str, Any] = {"ok": False, "error": error}
        if error == "missing_scope":
            body.update(needed=WEB_API_METHODS[method].scopes[0], provided=",".join(self.scopes))
        headers = {"Retry-After": self._retry_after(fault.retry_after)} if status == 429 else {}
        return self._record(method, args, status, body, headers)

    def _missing_scope(self, method: str, spec: WebApiMethod, args: dict[str, Any]) -> dict[str, Any] | None:
        needed = spec.scopes
        if method in {"conversations.history", "conversations.replies"}:
            kind = self._kind(str(args.get("channel") or ""))
            needed = (_HISTORY_SCOPE.get(kind, "channels:history"),)
        for scope in needed:
            if scope not in self.scopes:
                return {
                    "ok": False,
                    "error": "missing_scope",
                    "needed": scope,
                    "provided": ",".join(self.scopes),
                }
        return None

    def _kind(self, channel: str) -> str:
        conversation = self._channels.get(channel)
        if conversation is not None and conversation.user:
            return "D"
        return channel[:1]

    def _rate_limited(self, method: str, spec: WebApiMethod, args: dict[str, Any]) -> str:
        """The Retry-After header if this call is over the method's limit, else ""."""
        if not self.rate_limits or method == "auth.test":
            return ""
        if method == "chat.postMessage":
            key = (method, str(args.get("channel") or ""))
            per_second, burst = POSTS_PER_SECOND_PER_CHANNEL, float(POST_BURST)
        elif method == "views.publish":  # tier 4, counted per user whose home is published
            per_minute = TIER_PER_MINUTE[spec.tier]
            key, per_second, burst = (
                (method, str(args.get("user_id") or "")),
                per_minute / 60,
                float(per_minute),
            )
        elif method in {"conversations.history", "conversations.replies"} and not self.marketplace:
            key, per_second, burst = (method, ""), 1 / 60, 1.0
        else:
            per_minute = TIER_PER_MINUTE[spec.tier]
            key, per_second, burst = (method, ""), per_minute / 60, float(per_minute)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(per_second, burst)
        wait = bucket.take(self.time_scale)
        return self._retry_after(wait) if wait else ""

    def _retry_after(self, seconds: float) -> str:
        if self.time_scale == 1.0:
            return str(max(1, math.ceil(seconds)))
        return f"{seconds * self.time_scale:.3f}"

    def _record(
        self,
        method: str,
        args: dict[str, Any],
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.calls.append(
            Call(method, args, status, bool(body.get("ok")), time.time(), str(body.get("error", "")))
        )
        return status, body, headers or {}

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://local.slack.com/",
            "team": "Local",
            "user": "runbook-bot",
            "team_id": "T0LOCAL",
            "user_id": BOT_USER,
            "bot_id": "B0RUNBOOKBOT",
        }

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel") or "")
        if USER_ID.fullmatch(channel):  # Slack: a user's id posts in the app's DM with them (Messages tab)
            channel = self._m_conversations_open({"users": channel})["channel"]["id"]
            args = {**args, "channel": channel}
        conversation, refused = self._writable(channel, not_member="not_in_channel", archived="is_archived")
        if refused:
            return refused
        invalid = _invalid_message(args)
        if invalid:
            return invalid
        message = self._message(args)
        thread_ts = args.get("thread_ts")
        if thread_ts:
            parent = next((m for m in conversation.messages if m["ts"] == thread_ts), None)
            if parent is None:
                return {"ok": False, "error": "thread_not_found"}
            message["thread_ts"] = thread_ts
            conversation.replies.setdefault(thread_ts, []).append(message)
            parent["reply_count"] = len(conversation.replies[thread_ts])
            parent["thread_ts"] = thread_ts
        else:
            bisect.insort(conversation.messages, message, key=_ts)
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        conversation, refused = self._writable(
            channel, not_member="channel_not_found", archived="is_inactive"
        )
        if refused:
            return refused
        invalid = _invalid_message(args)
        if invalid:
            return invalid
        everything = [
            *conversation.messages,
            *(r for replies in conversation.replies.values() for r in replies),
        ]
        for message in everything:
            if message["ts"] == ts:
                if message.get("user") != BOT_USER:
                    return {"ok": False, "error": "cant_update_message"}
                message["text"] = args.get("text", message.get("text", ""))
                if "blocks" in args:
                    message["blocks"] = _json(args["blocks"]) or []
                message["edited"] = {"user": BOT_USER, "ts": self._next_ts()}
                return {"ok": True, "channel": channel, "ts": ts, "text": message["text"], "message": message}
        return {"ok": False, "error": "message_not_found"}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel") or "")
        _, refused = self._writable(channel, not_member="channel_not_found", archived="is_archived")
        if refused:
            return refused
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        invalid = _invalid_message(args)
        if invalid:
            return invalid
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("users") or "").split(",")[0].strip()
        if not user.startswith(("U", "W")):
            return {"ok": False, "error": "user_not_found"}
        channel = "D" + user[1:]
        if channel not in self._channels:
            self._channels[channel] = Conversation(channel, "", user=user)
        return {"ok": True, "channel": {"id": channel}}

    def _m_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        conversation, refused = self._readable(str(args.get("channel") or ""))
        if refused:
            return refused
        limit = self._history_limit(args, 100)
        oldest = float(args.get("oldest") or 0)
        latest = float(args.get("latest") or "inf")
        start = int(args.get("cursor") or 0)
        newest_first = [m for m in reversed(conversation.messages) if oldest < float(m["ts"]) <= latest]
        page = newest_first[start : start + limit]
        more = start + limit < len(newest_first)
        return {
            "ok": True,
            "messages": [self._shown(m, args) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        _, refused = self._readable(channel)
        if refused:
            return refused
        thread = self.thread(channel, ts)
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        oldest = float(args.get("oldest") or 0)
        # Like Slack: the parent comes first on every page; `oldest` narrows the replies.
        replies = [m for m in thread[1:] if float(m["ts"]) > oldest]
        limit = self._history_limit(args, 1000)
        start = int(args.get("cursor") or 0)
        page = [thread[0], *replies[start : start + max(0, limit - 1)]]
        more = start + limit - 1 < len(replies)
        return {
            "ok": True,
            "messages": [self._shown(m, args) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit - 1) if more else ""},
        }

    def _m_usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = str(args.get("usergroup") or "")
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.usergroups[group])}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user") or "")
        return {"ok": True, "user": {"id": user, "name": user.lower(), "real_name": user, "tz": "UTC"}}

    def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        filename, raw_length = str(args.get("filename") or ""), args.get("length")
        missing = [
            name for name, value in (("filename", filename), ("length", raw_length)) if value in (None, "")
        ]
        if missing:
            return _invalid_arguments(*(f"missing required field: {name}" for name in missing))
        try:
            length = int(str(raw_length))
        except ValueError:
            return _invalid_arguments("must be an integer [json-pointer:/length]")
        if length <= 0:
            return {"ok": False, "error": "missing_argument"}
        if length > MAX_UPLOAD_BYTES:
            return {"ok": False, "error": "file_upload_size_restricted"}
        if len(str(args.get("alt_txt") or "")) > 1000:
            return {"ok": False, "error": "alt_txt_too_large"}
        assert self._server is not None
        file_id = "F" + secrets.token_hex(5).upper()
        ticket = secrets.token_urlsafe(24)
        self.files[file_id] = Upload(
            file_id, ticket, filename, length, time.monotonic() + UPLOAD_URL_SECONDS * self.time_scale
        )
        port = self._server.server_address[1]
        return {"ok": True, "upload_url": f"http://127.0.0.1:{port}/upload/v1/{ticket}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        raw = args.get("files")
        if raw in (None, ""):
            return _invalid_arguments("missing required field: files")
        given = _json(raw)
        if (
            not isinstance(given, list)
            or not given
            or not all(isinstance(f, dict) and f.get("id") for f in given)
        ):
            return _invalid_arguments("must be an array of objects with an id [json-pointer:/files]")
        channel = str(args.get("channel_id") or "")
        if not channel and args.get("channels"):
            channels = [c.strip() for c in str(args["channels"]).split(",") if c.strip()]
            if args.get("thread_ts") and len(channels) != 1:
                return _invalid_arguments("thread_ts needs exactly one channel [json-pointer:/channels]")
            channel = channels[0] if channels else ""
        if channel and not CHANNEL_ID.fullmatch(channel):
            return _invalid_arguments(
                "input must match regex pattern: ^[CGDZ][A-Z0-9]{8,}$ [json-pointer:/channel_id]"
            )
        uploads = [self.files.get(str(f["id"])) for f in given]
        if any(u is None or u.content is None or u.shared_in for u in uploads):
            return {"ok": False, "error": "file_not_found"}
        conversation = self._channels.get(channel) if channel else None
        if channel:
            if conversation is None:
                return {"ok": False, "error": "invalid_channel"}
            if conversation.archived:
                return {"ok": False, "error": "posting_to_channel_denied"}
            if not conversation.member:
                return {"ok": False, "error": "not_in_channel"}
        thread_ts = str(args.get("thread_ts") or "")
        if thread_ts and (
            conversation is None or not any(m["ts"] == thread_ts for m in conversation.messages)
        ):
            return _invalid_arguments(
                "thread_ts must be the ts of a message in the channel [json-pointer:/thread_ts]"
            )
        shown = []
        for upload, wanted in zip(uploads, given, strict=True):
            assert upload is not None and upload.content is not None
            upload.title = str(wanted.get("title") or upload.filename)
            upload.shared_in, upload.thread_ts = channel, thread_ts
            shown.append(
                {
                    "id": upload.file_id,
                    "name": upload.filename,
                    "title": upload.title,
                    "size": len(upload.content),
                }
            )
        if conversation is not None:  # Slack shares the files as a message of the bot's
            message = self._message({"text": str(args.get("initial_comment") or "")})
            message["files"] = shown
            if thread_ts:
                message["thread_ts"] = thread_ts
                conversation.replies.setdefault(thread_ts, []).append(message)
                parent = next(m for m in conversation.messages if m["ts"] == thread_ts)
                parent["reply_count"] = len(conversation.replies[thread_ts])
                parent["thread_ts"] = thread_ts
            else:
                bisect.insort(conversation.messages, message, key=_ts)
        return {"ok": True, "files": [{"id": f["id"], "title": f["title"]} for f in shown]}

    def _upload(self, ticket: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """The upload URL: raw bytes or a multipart form with the file; exactly `length` bytes."""
        with self._lock:
            upload = next((u for u in self.files.values() if u.ticket == ticket), None)
            if upload is None or upload.content is not None:
                return 404, b"upload URL unknown or used"
            if time.monotonic() > upload.expires_at:
                return 404, b"upload URL expired: ask files.getUploadURLExternal for a new one"
            data = (
                _multipart_file(body, content_type)
                if content_type.startswith("multipart/form-data")
                else body
            )
            if data is None:
                return 400, b"multipart form without a file part"
            if len(data) != upload.length:
                return (
                    400,
                    f"length mismatch: files.getUploadURLExternal said {upload.length} bytes, got {len(data)}".encode(),
                )
            upload.content = data
            self.changed.notify_all()
            return 200, f"OK - {len(data)}".encode()

    def uploaded(self, channel: str = "", thread_ts: str = "") -> list[Upload]:
        """Files shared (completed), in `channel` and `thread_ts` when given."""
        with self._lock:
            return [
                u
                for u in self.files.values()
                if u.shared_in
                and (not channel or u.shared_in == channel)
                and (not thread_ts or u.thread_ts == thread_ts)
            ]

    def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        import re

        trigger_id = str(args.get("trigger_id") or "")
        if not trigger_id:
            return _arguments_error("missing required field: trigger_id")
        if not re.fullmatch(_TRIGGER_FORMAT, trigger_id):
            return {"ok": False, "error": "invalid_trigger_id"}
        issued = self._triggers.get(trigger_id)
        if issued is None:
            return {"ok": False, "error": "invalid_trigger_id"}
        at, user, used = issued
        if used:
            return {"ok": False, "error": "exchanged_trigger_id"}
        if time.monotonic() - at > self.trigger_seconds:
            return {"ok": False, "error": "expired_trigger_id"}
        view, refused = _view_argument(args, _invalid_view)
        if refused:
            return refused
        self._triggers[trigger_id] = (at, user, True)
        view_id = f"V{self._next_ts().replace('.', '')[-10:]}"
        self.views[view_id] = {**self._shown_view(view, user), "id": view_id}
        shown = dict(self.views[view_id])
        shown.pop("user")
        return {"ok": True, "view": shown}

    def _m_views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view_id = str(args.get("view_id") or "")
        external_id = str(args.get("external_id") or "")
        if bool(view_id) == bool(external_id):
            return _arguments_error("exactly one of view_id and external_id is required")
        if view_id:
            current = self.views.get(view_id)
        else:
            current = next((v for v in self.views.values() if v.get("external_id") == external_id), None)
        if current is None:
            return {"ok": False, "error": "not_found"}
        given_hash = str(args.get("hash") or "")
        if given_hash and given_hash != current["hash"]:
            return {"ok": False, "error": "hash_conflict"}
        view, refused = _view_argument(args, _invalid_view)
        if refused:
            return refused
        vid = str(current["id"])
        # Slack keeps what the user entered in input blocks whose block_id and action_id stay.
        kept = {
            block_id: value
            for block_id, value in (current.get("entered") or {}).items()
            if _element_id(view, block_id) is not None
            and _element_id(view, block_id) == _element_id(current, block_id)
        }
        self.views[vid] = {**self._shown_view(view, current["user"]), "id": vid, "entered": kept}
        self.changed.notify_all()
        shown = {k: v for k, v in self.views[vid].items() if k not in {"user", "entered"}}
        shown["state"] = {"values": _view_state(shown, kept)}
        return {"ok": True, "view": shown}

    def _m_views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user_id") or "")
        if not user:
            return _arguments_error("missing required field: user_id")
        if not USER_ID.fullmatch(user):
            return _arguments_error("invalid `user_id`")
        view, refused = _view_argument(args, _invalid_home)
        if refused:
            return refused
        if not self.home_tab_enabled:
            return {"ok": False, "error": "not_enabled"}
        current = self.homes.get(user)
        given_hash = str(args.get("hash") or "")
        if given_hash and (current is None or given_hash != current["hash"]):
            return {"ok": False, "error": "hash_conflict"}
        view_id = current["id"] if current else f"V{self._next_ts().replace('.', '')[-10:]}"
        self.homes[user] = {**self._shown_view(view, user), "id": view_id}
        shown = dict(self.homes[user])
        shown.pop("user")
        return {"ok": True, "view": shown}

    def _shown_view(self, view: dict[str, Any], user: str) -> dict[str, Any]:
        """A view as Slack keeps and shows it: its fields plus Slack's own (hash, state, ids)."""
        return {
            **view,
            "team_id": "T0LOCAL",
            "app_id": "A0RUNBOOKBOT",
            "bot_id": "B0RUNBOOKBOT",
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{self._rng.getrandbits(32):08x}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "previous_view_id": None,
            "root_view_id": None,
            "user": user,
        }

    def _hook(self, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """A POST to a response_url: Slack answers 200 "ok" and shows the message to the user."""
        with self._lock:
            self.responses.append({"hook": name, **body})
            self.changed.notify_all()
        return 200, {"ok": True}, {}

    # -- helpers -----------------------------------------------------------------------------------------

    def _writable(
        self, channel: str, *, not_member: str, archived: str
    ) -> tuple[Conversation, dict[str, Any] | None]:
        conversation = self._channels.get(channel)
        if conversation is None:
            return Conversation(channel, ""), {"ok": False, "error": "channel_not_found"}
        if conversation.archived:
            return conversation, {"ok": False, "error": archived}
        if not conversation.member:
            return conversation, {"ok": False, "error": not_member}
        return conversation, None

    def _readable(self, channel: str) -> tuple[Conversation, dict[str, Any] | None]:
        conversation = self._channels.get(channel)
        if conversation is None:
            return Conversation(channel, ""), {"ok": False, "error": "channel_not_found"}
        if not conversation.member:
            return conversation, {"ok": False, "error": "not_in_channel"}
        return conversation, None

    def _history_limit(self, args: dict[str, Any], default: int) -> int:
        limit = max(1, min(int(args.get("limit") or default), 999))
        return limit if self.marketplace else min(limit, HISTORY_ITEMS_OUTSIDE_MARKETPLACE)

    def _workspace(self) -> None:
        for channel in self._member_of:
            self._channels[channel] = Conversation(channel, channel.lower())
        self._channels.setdefault(OUTSIDE_CHANNEL, Conversation(OUTSIDE_CHANNEL, "general", member=False))
        self._channels.setdefault(
            ARCHIVED_CHANNEL, Conversation(ARCHIVED_CHANNEL, "acme-ops-old", archived=True)
        )

    def _message(self, args: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER,
            "bot_id": "B0RUNBOOKBOT",
            "ts": self._next_ts(),
            "text": str(args.get("text") or ""),
        }
        if args.get("blocks"):
            message["blocks"] = _json(args["blocks"])
        metadata = _json(args.get("metadata"))
        if metadata:
            message["metadata"] = metadata
        return message

    @staticmethod
    def _shown(message: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        shown = dict(message)
        if str(args.get("include_all_metadata", "")).lower() not in {"1", "true"}:
            shown.pop("metadata", None)
        return shown

    def _next_ts(self) -> str:
        """Like Slack's: epoch seconds with a unique 6-digit suffix, increasing with real time."""
        self._seq = max(int(time.time() * 1_000_000), self._seq + 1)
        return f"{self._seq // 1_000_000}.{self._seq % 1_000_000:06d}"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Request(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                self._answer(parsed.path, dict(urllib.parse.parse_qsl(parsed.query)))

            def do_POST(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                if parsed.path.startswith("/upload/v1/"):
                    status, answer = stand_in._upload(
                        parsed.path.removeprefix("/upload/v1/"),
                        self.rfile.read(length) if length else b"",
                        self.headers.get("content-type") or "",
                    )
                    self.send_response(status)
                    self.send_header("content-type", "text/plain; charset=utf-8")
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                raw = self.rfile.read(length).decode("utf-8") if length else ""
                if "json" in (self.headers.get("content-type") or ""):
                    args = json.loads(raw or "{}")
                else:
                    args = dict(urllib.parse.parse_qsl(raw))
                args.update(dict(urllib.parse.parse_qsl(parsed.query)))
                self._answer(parsed.path, args)

            def _answer(self, path: str, args: dict[str, Any]) -> None:
                try:
                    if path.startswith("/hooks/"):
                        status, body, headers = stand_in._hook(path.removeprefix("/hooks/"), args)
                    else:
                        method = path.rsplit("/", 1)[-1]
                        auth = self.headers.get("authorization") or ""
                        token = auth.removeprefix("Bearer ").strip() or args.pop("token", None)
                        status, body, headers = stand_in._call(method, args, token)
                except _Disconnect:
                    self.close_connection = True
                    return
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json; charset=utf-8")
                self.send_header("content-length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Request


def _invalid_message(args: dict[str, Any]) -> dict[str, Any] | None:
    """Slack's checks of a message: some text or blocks, text within 40,000 characters, blocks that
    parse as Block Kit within its limits."""
    text = str(args.get("text") or "")
    raw_blocks = args.get("blocks")
    blocks = _json(raw_blocks) if raw_blocks else None
    if not text and not blocks:
        return {"ok": False, "error": "no_text"}
    if len(text) > MAX_TEXT:
        return {"ok": False, "error": "msg_too_long"}
    if raw_blocks and not isinstance(blocks, list):
        return _invalid_blocks("blocks must be a JSON array")
    problems: list[str] = []
    if blocks and len(blocks) > MAX_BLOCKS:
        problems.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    problems += _block_problems(blocks or [], "/blocks")
    return _invalid_blocks(*problems) if problems else None


def _block_problems(blocks: list[Any], pointer: str) -> list[str]:
    """Each block checked as Slack does (slack_sdk's Block models), located by its JSON pointer."""
    from slack_sdk.errors import SlackObjectFormationError
    from slack_sdk.models.blocks import Block

    problems: list[str] = []
    for i, raw in enumerate(blocks):
        try:
            block = Block.parse(raw) if isinstance(raw, dict) else None
            if block is None:
                problems.append(f"unknown or missing block type [json-pointer:{pointer}/{i}/type]")
                continue
            block.validate_json()
        except (SlackObjectFormationError, KeyError, TypeError, ValueError) as error:
            problems.append(f"{error} [json-pointer:{pointer}/{i}]")
    return problems


def _view_argument(
    args: dict[str, Any], problems_of: Callable[[dict[str, Any]], list[str]]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The `view` argument of views.open, views.update and views.publish as Slack checks it:
    given, at most 250 kB, a JSON object, its blocks valid. Else the error answer to return."""
    raw = args.get("view")
    if raw is None:
        return {}, _arguments_error("missing required field: view")
    if len((raw if isinstance(raw, str) else json.dumps(raw)).encode()) > VIEW_BYTES:
        return {}, {"ok": False, "error": "view_too_large"}
    view = _json(raw)
    if not isinstance(view, dict):
        return {}, _arguments_error("view must be a JSON object [json-pointer:/view]")
    problems = problems_of(view)
    if problems:
        return {}, _arguments_error(*problems)
    return view, None


def _view_size_problems(view: dict[str, Any], blocks: list[Any]) -> list[str]:
    """The limits a modal and a home share: private_metadata 3,000 and callback_id 255
    characters, 1-100 blocks (slack_sdk's View limits)."""
    from slack_sdk.models.views import View

    problems: list[str] = []
    for name, limit in (
        ("private_metadata", View.private_metadata_max_length),
        ("callback_id", View.callback_id_max_length),
    ):
        if len(str(view.get(name) or "")) > limit:
            problems.append(f"must be less than {limit + 1} characters [json-pointer:/view/{name}]")
    if not 0 < len(blocks) <= View.blocks_max_length:
        problems.append(
            f"must contain between 1 and {View.blocks_max_length} blocks [json-pointer:/view/blocks]"
        )
    return problems


def _invalid_view(view: dict[str, Any]) -> list[str]:
    """Slack's checks of a modal: slack_sdk's View limits (title and button texts 24 characters,
    1-100 blocks, private_metadata 3,000, callback_id 255), every block valid, a title, and a
    submit button when the modal has input blocks."""
    from slack_sdk.models.views import View

    problems: list[str] = []
    if view.get("type") != "modal":
        problems.append("must be modal [json-pointer:/view/type]")
    if not (view.get("title") or {}).get("text"):
        problems.append("missing required field: title [json-pointer:/view/title]")
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        return [*problems, "must provide an array [json-pointer:/view/blocks]"]
    if any(isinstance(b, dict) and b.get("type") == "input" for b in blocks) and not view.get("submit"):
        problems.append("a view with input blocks requires a submit button [json-pointer:/view/submit]")
    limits = {
        ("title", "text"): View.title_max_length,
        ("submit", "text"): View.submit_max_length,
        ("close", "text"): View.close_max_length,
    }
    for (name, key), limit in limits.items():
        text = (view.get(name) or {}).get(key) or ""
        if len(text) > limit:
            problems.append(f"must be less than {limit + 1} characters [json-pointer:/view/{name}/{key}]")
    problems += _view_size_problems(view, blocks)
    problems += _block_problems(blocks, "/view/blocks")
    return problems


def _invalid_home(view: dict[str, Any]) -> list[str]:
    """Slack's checks of a published home: type `home`, 1-100 valid blocks, private_metadata 3,000
    and callback_id 255 characters; no title or buttons (a home has none)."""
    problems: list[str] = []
    if view.get("type") != "home":
        problems.append("must be home [json-pointer:/view/type]")
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        return [*problems, "must provide an array [json-pointer:/view/blocks]"]
    problems += _view_size_problems(view, blocks)
    ids = [b.get("block_id") for b in blocks if isinstance(b, dict) and b.get("block_id")]
    if len(ids) != len(set(ids)):
        problems.append("block_id must be unique in a view [json-pointer:/view/blocks]")
    problems += _block_problems(blocks, "/view/blocks")
    return problems


_SELECTS = {"static_select", "radio_buttons"}


def _element_id(view: dict[str, Any], block_id: str) -> str | None:
    for block in view.get("blocks") or []:
        if block.get("type") == "input" and block.get("block_id") == block_id:
            return str(block["element"].get("action_id", block_id))
    return None


def _option(element: dict[str, Any], value: str) -> dict[str, Any] | None:
    return next((dict(o) for o in element.get("options") or [] if o.get("value") == value), None)


def _view_state(view: dict[str, Any], entered: dict[str, str]) -> dict[str, Any]:
    """`view.state.values` as Slack sends it: every input block, by block id then action id, with
    what the user entered, else the element's initial value (a select: its option, or null)."""
    state: dict[str, Any] = {}
    for block in view.get("blocks") or []:
        if block.get("type") != "input" or not block.get("block_id"):
            continue
        element = block["element"]
        kind = element.get("type")
        typed = entered.get(block["block_id"])
        if kind in _SELECTS:
            option = _option(element, typed) if typed else element.get("initial_option")
            value: dict[str, Any] = {"type": kind, "selected_option": option or None}
        elif kind == "checkboxes":  # `typed`: the checked options' values, comma-separated
            picked = [_option(element, v) for v in (typed or "").split(",") if v]
            chosen = [o for o in picked if o] if typed is not None else element.get("initial_options") or []
            value = {"type": kind, "selected_options": chosen}
        else:
            initial = element.get("initial_value")
            value = {"type": kind, "value": typed if typed is not None else initial}
            if value["value"] == "":
                value["value"] = None
        state[block["block_id"]] = {element.get("action_id", block["block_id"]): value}
    return state


def _arguments_error(*problems: str) -> dict[str, Any]:
    return {
        "ok": False,
        "error": "invalid_arguments",
        "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]},
    }


def _invalid_blocks(*problems: str) -> dict[str, Any]:
    return {
        "ok": False,
        "error": "invalid_blocks",
        "errors": list(problems),
        "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]},
    }


def _invalid_arguments(*problems: str) -> dict[str, Any]:
    return {
        "ok": False,
        "error": "invalid_arguments",
        "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]},
    }


def _multipart_file(body: bytes, content_type: str) -> bytes | None:
    """The first file part of a multipart/form-data body (Slack takes `-F file=@…` too)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        b"content-type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    for part in message.iter_parts() if message.is_multipart() else []:
        if part.get_filename() is not None or part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else b""
    return None


def _ts(message: dict[str, Any]) -> float:
    return float(message["ts"])


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value
