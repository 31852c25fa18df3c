"""A local stand-in of Slack's Web API, on 127.0.0.1, for `SLACK_API_URL`.

Answers the methods the bot calls in Slack's documented shapes, keeps channels with messages and
threads in order, records every call, and injects what real Slack does: latency, 429 with
Retry-After, 5xx. Deterministic under a seed.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Call:
    method: str
    args: dict[str, Any]
    status: int
    ok: bool
    at: float
    error: str = ""


@dataclass
class _Channel:
    messages: list[dict[str, Any]] = field(default_factory=list)  # top-level, oldest first
    replies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # thread_ts -> replies


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
    ) -> None:
        self.token = token
        self.fault_rate = fault_rate
        self.latency_ms = latency_ms
        self.retry_after = retry_after
        self.usergroups = {k: list(v) for k, v in (usergroups or {}).items()}
        self.calls: list[Call] = []
        self._rng = random.Random(seed)
        self._channels: dict[str, _Channel] = {}
        self._lock = threading.RLock()
        self._seq = 0
        self.changed = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None

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

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self._channels.clear()

    # -- what tests and the playground read ----------------------------------------------------------

    def messages(self, channel: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in self._channel(channel).messages]

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """Like conversations.replies: the parent first, then its replies in order."""
        with self._lock:
            ch = self._channel(channel)
            parent = [dict(m) for m in ch.messages if m["ts"] == ts]
            return parent + [dict(r) for r in ch.replies.get(ts, [])]

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
            if token != self.token:
                return self._record(
                    method, args, 200, {"ok": False, "error": "invalid_auth" if token else "not_authed"}
                )
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                return self._record(method, args, 200, {"ok": False, "error": "unknown_method"})
            body = handler(args)
            self.changed.notify_all()
            return self._record(method, args, 200, body)

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
            "user_id": "U0RUNBOOKBOT",
            "bot_id": "B0RUNBOOKBOT",
        }

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        message = self._message(args)
        ch = self._channel(channel)
        thread_ts = args.get("thread_ts")
        if thread_ts:
            parent = next((m for m in ch.messages if m["ts"] == thread_ts), None)
            if parent is None:
                return {"ok": False, "error": "thread_not_found"}
            message["thread_ts"] = thread_ts
            ch.replies.setdefault(thread_ts, []).append(message)
            parent["reply_count"] = len(ch.replies[thread_ts])
            parent["thread_ts"] = thread_ts
        else:
            ch.messages.append(message)
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        ch = self._channel(channel)
        for message in [*ch.messages, *(r for replies in ch.replies.values() for r in replies)]:
            if message["ts"] == ts:
                message["text"] = args.get("text", message.get("text", ""))
                if "blocks" in args:
                    message["blocks"] = _json(args["blocks"]) or []
                message["edited"] = {"user": "U0RUNBOOKBOT", "ts": self._next_ts()}
                return {"ok": True, "channel": channel, "ts": ts, "text": message["text"], "message": message}
        return {"ok": False, "error": "message_not_found"}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        ch = self._channel(str(args.get("channel") or ""))
        limit = min(int(args.get("limit") or 100), 999)
        oldest = float(args.get("oldest") or 0)
        start = int(args.get("cursor") or 0)
        newest_first = [m for m in reversed(ch.messages) if float(m["ts"]) > oldest]
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
        thread = self.thread(channel, ts)
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        limit = int(args.get("limit") or 1000)
        start = int(args.get("cursor") or 0)
        page = thread[start : start + limit]
        more = start + limit < len(thread)
        return {
            "ok": True,
            "messages": [self._shown(m, args) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _m_usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = str(args.get("usergroup") or "")
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.usergroups[group])}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user") or "")
        return {"ok": True, "user": {"id": user, "name": user.lower(), "real_name": user, "tz": "UTC"}}

    # -- helpers -----------------------------------------------------------------------------------------

    def _message(self, args: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "user": "U0RUNBOOKBOT",
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

    def _channel(self, channel: str) -> _Channel:
        return self._channels.setdefault(channel, _Channel())

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
                raw = self.rfile.read(length).decode("utf-8") if length else ""
                if "json" in (self.headers.get("content-type") or ""):
                    args = json.loads(raw or "{}")
                else:
                    args = dict(urllib.parse.parse_qsl(raw))
                args.update(dict(urllib.parse.parse_qsl(parsed.query)))
                self._answer(parsed.path, args)

            def _answer(self, path: str, args: dict[str, Any]) -> None:
                method = path.rsplit("/", 1)[-1]
                auth = self.headers.get("authorization") or ""
                token = auth.removeprefix("Bearer ").strip() or args.pop("token", None)
                status, body, headers = stand_in._call(method, args, token)
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


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value
