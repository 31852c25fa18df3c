"""The sample events in events/, loaded as Lambda would receive them; Slack requests re-signed.

The files are static, so the Slack requests in them carry a signature over a timestamp that is
long stale (and made with the dev signing secret). `load_event(name, secret=...)` sets
`x-slack-request-timestamp` to now (or `timestamp`) and recomputes `x-slack-signature` over the
decoded body with `secret`, as Slack would: `v0=` + HMAC-SHA256(secret, f"v0:{ts}:{body}").

From the command line, for `sam local invoke IngressFunction -e -`:

    .venv/bin/python -m tests.events slash-command --secret "$SLACK_SIGNING_SECRET"
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.local.slack_requests import DEV_SIGNING_SECRET, signature

EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"
TIMESTAMP_HEADER = "x-slack-request-timestamp"
SIGNATURE_HEADER = "x-slack-signature"


def event_names() -> list[str]:
    """Every sample event, by file name without `.json`."""
    return sorted(path.stem for path in EVENTS_DIR.glob("*.json"))


def load_event(name: str, *, secret: str | None = None, timestamp: int | None = None) -> dict[str, Any]:
    """events/<name>.json; a Slack request in it is re-signed with `secret` when one is given."""
    event: dict[str, Any] = json.loads((EVENTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    if secret is not None and is_slack_request(event):
        event = resign(event, secret, timestamp)
    return event


def is_slack_request(event: dict[str, Any]) -> bool:
    """An HTTP API event carrying Slack's signature headers."""
    headers = {str(k).lower() for k in (event.get("headers") or {})}
    return "body" in event and SIGNATURE_HEADER in headers


def body_of(event: dict[str, Any]) -> str:
    """The request body as Slack sent it (base64 undone when the event says so)."""
    body = str(event.get("body") or "")
    return base64.b64decode(body).decode("utf-8") if event.get("isBase64Encoded") else body


def resign(event: dict[str, Any], secret: str, timestamp: int | None = None) -> dict[str, Any]:
    """A copy of `event` signed at `timestamp` (default: now) with `secret`; the body is kept
    byte for byte and re-encoded the way it came (base64 or plain)."""
    signed = copy.deepcopy(event)
    body = body_of(signed)
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {str(k).lower(): v for k, v in (signed.get("headers") or {}).items()}
    headers[TIMESTAMP_HEADER] = str(ts)
    headers[SIGNATURE_HEADER] = signature(secret, ts, body)
    signed["headers"] = headers
    signed["body"] = (
        base64.b64encode(body.encode("utf-8")).decode("ascii") if signed.get("isBase64Encoded") else body
    )
    context = signed.get("requestContext")
    if isinstance(context, dict):
        context["timeEpoch"] = ts * 1000
        context["time"] = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(ts))
    return signed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.events",
        description="Print a sample event from events/, with a Slack request signed for now.",
    )
    parser.add_argument("name", choices=event_names(), help="the file in events/, without .json")
    parser.add_argument(
        "--secret",
        default=DEV_SIGNING_SECRET,
        help="the signing secret the function verifies with (default: the dev secret of `runbook-bot dev`)",
    )
    parser.add_argument("--timestamp", type=int, default=None, help="epoch seconds (default: now)")
    args = parser.parse_args(argv)
    json.dump(load_event(args.name, secret=args.secret, timestamp=args.timestamp), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
