"""The playground: a Slack-like channel in the browser for the local pipeline.

Commands typed in the composer go through the real ingress handler as signed HttpApi events;
buttons send signed `block_actions` payloads; a modal the bot opens (views.open on the stand-in)
shows over the page and its Submit sends a signed `view_submission` (errors show under fields); the
page shows what the bot posted to the Slack stand-in (Block Kit rendered), every Web API call it
made, and the bot's own metrics (the EMF lines its functions log, under the names the dashboard
charts); it lets you switch users and fire a
CloudWatch alarm. The App Home tab shows the home the bot published for the selected user
(views.publish on the stand-in): opening it delivers a signed `app_home_opened` event, its
buttons send signed `block_actions` from the home, and the bot's DMs to the user show below it.
Loopback only.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any

from bot.local.http import LoopbackServer

logger = logging.getLogger(__name__)

USERS = [
    {"id": "U0DEVONCALL", "name": "dev-oncall", "role": "requester (on-call engineer)"},
    {"id": "U0ACMELEAD", "name": "acme-lead", "role": "approver for partner-acme"},
    {"id": "U0ACMESRE", "name": "acme-sre", "role": "approver for partner-acme"},
    {"id": "U0GLOBEXLEAD", "name": "globex-lead", "role": "approver for partner-globex"},
    {"id": "U0STRANGER", "name": "stranger", "role": "not an approver"},
]


class Playground:
    def __init__(self, pipeline: Any, port: int = 0, host: str = "127.0.0.1") -> None:
        self.pipeline = pipeline
        self._server = LoopbackServer((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = str(self._server.server_address[0]), self._server.server_address[1]
        return f"http://{host}:{port}/"

    def start(self) -> Playground:
        self._thread = threading.Thread(target=self._server.serve_forever, name="playground", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- the JSON the page reads and posts -----------------------------------------------------

    def state(self) -> dict[str, Any]:
        slack = self.pipeline.slack
        channels = {}
        for channel in self.channels():
            messages = []
            for message in slack.messages(channel):
                replies = slack.thread(channel, message["ts"])
                messages.append({**message, "replies": [r for r in replies if r.get("ts") != message["ts"]]})
            channels[channel] = messages
        calls = [
            {
                "method": c.method,
                "ok": c.ok,
                "status": c.status,
                "at": c.at,
                "args": {
                    k: v for k, v in c.args.items() if k in {"channel", "thread_ts", "ts", "text", "user"}
                },
            }
            for c in slack.calls[-200:]
        ]
        ephemerals = [
            {
                "channel": c.args.get("channel"),
                "user": c.args.get("user"),
                "text": c.args.get("text"),
                "at": c.at,
            }
            for c in slack.calls
            if c.method == "chat.postEphemeral" and c.ok
        ]
        # What clicks answered through their response_url (history's More, Export evidence):
        # the pipeline's hooks are named <channel>-<user>.
        ephemerals += [
            {
                "channel": r["hook"].partition("-")[0],
                "user": r["hook"].partition("-")[2],
                "text": r.get("text"),
                "blocks": r.get("blocks") or [],
            }
            for r in list(slack.responses)
            if r.get("text") and "-" in str(r.get("hook"))
        ]
        views = [
            {
                k: v
                for k, v in view.items()
                if k in {"id", "hash", "user", "title", "submit", "close", "blocks", "errors"}
            }
            for view in slack.open_views()
        ]
        homes = {user["id"]: slack.home_of(user["id"]) for user in USERS}
        dms = {user["id"]: slack.dms(user["id"])[-20:] for user in USERS}
        return {
            "channels": channels,
            "calls": calls,
            "users": USERS,
            "ephemerals": ephemerals[-50:],
            "views": views,
            "homes": {
                k: {"blocks": v.get("blocks") or [], "hash": v.get("hash")} for k, v in homes.items() if v
            },
            "dms": dms,
        }

    def metrics(self) -> dict[str, Any]:
        """The pipeline's metrics: every series with its statistics, and the console's summary."""
        aggregator = self.pipeline.metrics
        snapshot = aggregator.snapshot()
        return {**snapshot.as_json(), "summary": aggregator.summary()}

    def channels(self) -> list[str]:
        from bot.catalog import load_catalog

        found: list[str] = []
        for partner in load_catalog().partners.values():
            for channel in partner.channels:
                if channel not in found:
                    found.append(channel)
        return found or ["C0ACMEOPS"]

    def command(self, text: str, user: str, channel: str) -> dict[str, Any]:
        response = self.pipeline.command(
            text.removeprefix("/runbook").strip(), user_id=user, channel_id=channel
        )
        return _answer(response)

    def click(self, action_id: str, value: str, user: str, channel: str, message_ts: str) -> dict[str, Any]:
        response = self.pipeline.click(
            action_id, value, user_id=user, channel_id=channel, message_ts=message_ts
        )
        return {"status": response["statusCode"]}

    def submit(self, view_id: str, values: dict[str, str]) -> dict[str, Any]:
        """Submit an open modal: its view_submission goes through the ingress; the modal closes,
        is replaced, or shows the bot's errors under its fields, as Slack does."""
        if view_id not in {v["id"] for v in self.pipeline.slack.open_views()}:
            raise ValueError(f"no open modal {view_id}")
        result = self.pipeline.submit_view(view_id, {str(k): str(v) for k, v in values.items()})
        return {"status": result["status"], "view": result["view"]}

    def choose(self, view_id: str, block_id: str, value: str) -> dict[str, Any]:
        """Pick an option in an open modal's select: with `dispatch_action`, its block_actions
        goes through the ingress and the bot updates the modal (views.update)."""
        if view_id not in {v["id"] for v in self.pipeline.slack.open_views()}:
            raise ValueError(f"no open modal {view_id}")
        return {"status": self.pipeline.choose(view_id, block_id, value)["statusCode"]}

    def open_home(self, user: str) -> dict[str, Any]:
        """`user` opens the App Home tab: Slack's signed `app_home_opened` through the ingress;
        the timeline consumer publishes the home a moment later."""
        return {"status": self.pipeline.open_home(user)["statusCode"]}

    def home_click(self, user: str, action_id: str, value: str) -> dict[str, Any]:
        """A button on `user`'s published home (ValueError when their home has none such)."""
        return {"status": self.pipeline.home_click(user, action_id, value)["statusCode"]}

    def close(self, view_id: str) -> dict[str, Any]:
        self.pipeline.slack.close_view(view_id)
        return {"status": 200}

    def alarm(self, name: str) -> dict[str, Any]:
        result = self.pipeline.fire_alarm(name)
        return {"status": 200, "result": result, "text": alarm_outcome(name, result)}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        playground = self

        class Request(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path in {"/", "/index.html"}:
                    page = resources.files("bot.local").joinpath("static/playground.html").read_bytes()
                    self._send(200, page, "text/html; charset=utf-8")
                elif self.path.startswith("/api/state"):
                    self._json(200, playground.state())
                elif self.path.split("?")[0] == "/api/metrics":
                    self._json(200, playground.metrics())
                else:
                    self._json(404, {"error": f"no such page {self.path}"})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                try:
                    data = json.loads(self.rfile.read(length) or b"{}")
                    if self.path == "/api/command":
                        result = playground.command(
                            str(data["text"]), str(data["user"]), str(data["channel"])
                        )
                    elif self.path == "/api/click":
                        result = playground.click(
                            str(data["action_id"]),
                            str(data["value"]),
                            str(data["user"]),
                            str(data["channel"]),
                            str(data.get("message_ts", "")),
                        )
                    elif self.path == "/api/submit":
                        result = playground.submit(str(data["view_id"]), dict(data.get("values") or {}))
                    elif self.path == "/api/choose":
                        result = playground.choose(
                            str(data["view_id"]), str(data["block_id"]), str(data["value"])
                        )
                    elif self.path == "/api/home":
                        result = playground.open_home(str(data["user"]))
                    elif self.path == "/api/home_click":
                        result = playground.home_click(
                            str(data["user"]), str(data["action_id"]), str(data.get("value", ""))
                        )
                    elif self.path == "/api/close":
                        result = playground.close(str(data["view_id"]))
                    elif self.path == "/api/alarm":
                        result = playground.alarm(str(data["name"]))
                    else:
                        self._json(404, {"error": f"no such endpoint {self.path}"})
                        return
                except (KeyError, ValueError) as error:
                    self._json(400, {"error": f"bad request: {error}"})
                    return
                except Exception as error:
                    logger.exception("playground request failed")
                    self._json(500, {"error": f"{type(error).__name__}: {error}"})
                    return
                self._json(200, result)

            def _json(self, status: int, payload: Any) -> None:
                self._send(status, json.dumps(payload, default=str).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.send_header("cache-control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("playground %s", format % args)

        return Request


def alarm_outcome(name: str, result: dict[str, Any]) -> str:
    """What the alarm function did, in words: the runs it started, or why it started none."""
    starts = result.get("starts") or []
    if not starts:
        return (
            f"Alarm `{name}` (ALARM) matches no partner's `alarms` pattern: nothing started. "
            "The partner files map alarm name patterns to runbooks."
        )
    lines = []
    for start in starts:
        what = f"`{start.get('runbook')}` for `{start.get('partner')}`"
        if start.get("started"):
            lines.append(f"Alarm `{name}` started {what}: execution `{start.get('execution_id')}`.")
        else:
            active = start.get("active_execution_id") or "another run"
            lines.append(
                f"Alarm `{name}`: nothing started. {what} is already running as `{active}`; an alarm "
                "never starts a second run while one is active on the partner's table "
                f"(`/runbook status {active}`)."
            )
    return "\n".join(lines)


def _answer(response: dict[str, Any]) -> dict[str, Any]:
    status = int(response.get("statusCode", 500))
    try:
        body = json.loads(response.get("body") or "{}")
    except ValueError:
        body = {"text": response.get("body")}
    return {"status": status, "text": body.get("text", ""), "blocks": body.get("blocks") or []}
