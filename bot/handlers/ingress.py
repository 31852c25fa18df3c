"""The Slack-facing Lambda: verify, parse, store, ack. Slash commands and button clicks.

The signature is checked here with the current signing secret before Bolt sees the request: a
mismatch re-reads the secret once (rate-limited) and, if the request verifies with a rotated
secret, rebuilds the app with it, so a rotation needs no redeploy. Bolt verifies again.

The function's world (lean table client, catalog, secrets, the Bolt app) is built at init on
Lambda, so a SnapStart snapshot holds it ready; SnapStart's runtime hooks keep secrets and
connections out of the snapshot and renew them in each restored sandbox.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.signature import Clock, SignatureVerifier

from bot.handlers.services import Sandbox, Services, on_lambda
from bot.slack.adapter import BadEvent, method_of, plain_response, to_bolt_request, to_lambda_response

STALE_SECONDS = 300  # Slack's own rule: older (or newer) requests may be replays
MAX_TIMESTAMP_DIGITS = 12

SANDBOX = Sandbox(lambda: Services.for_function(lean=True))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return answer(event, SANDBOX())


def answer(event: dict[str, Any], services: Services) -> dict[str, Any]:
    if method_of(event) != "POST":
        return plain_response(405, "Runbook Bot takes Slack's POST requests only at this URL.")
    try:
        request = to_bolt_request(event)
    except BadEvent as error:
        return plain_response(400, str(error))
    timestamp = request.headers.get("x-slack-request-timestamp", [""])[0]
    signature = request.headers.get("x-slack-signature", [""])[0]
    if not _epoch_seconds(timestamp):
        # Unsigned or forged: slack_sdk's verifier would raise on int() and answer 500.
        return plain_response(
            401, "Not a signed Slack request (x-slack-request-timestamp must be epoch seconds)."
        )
    if abs(Clock().now() - int(timestamp)) > STALE_SECONDS:
        return plain_response(401, "Stale Slack request: its timestamp is more than 5 minutes off.")
    secrets = _current_secrets(services, request.raw_body, timestamp, signature)
    if secrets is None:
        return plain_response(401, "The request's Slack signature does not match.")
    return to_lambda_response(services.app(secrets).dispatch(request))


def _epoch_seconds(timestamp: str) -> bool:
    """ASCII digits of a sane length: `isdigit` alone takes superscripts, which int() refuses."""
    return timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_TIMESTAMP_DIGITS


def _current_secrets(services: Services, body: str, timestamp: str, signature: str) -> Any:
    """The secrets the request is signed with: the cached ones, else freshly read ones (a
    rotation), else None (forged, or signed with a secret we no longer hold)."""
    secrets = services.secrets()
    if _signed_with(secrets.signing_secret, body, timestamp, signature):
        return secrets
    fresh = services.secrets.reread()
    if fresh is not None and _signed_with(fresh.signing_secret, body, timestamp, signature):
        return fresh
    return None


def _signed_with(secret: str, body: str, timestamp: str, signature: str) -> bool:
    return SignatureVerifier(secret).is_valid(body, timestamp, signature)


def warm(sandbox: Sandbox) -> None:
    """Build everything the first request needs: services, secrets, the Bolt app."""
    services = sandbox.warm()
    services.app(services.secrets())


def register_snapstart_hooks(sandbox: Sandbox) -> bool:
    """SnapStart's runtime hooks (the `snapshot_restore_py` the Lambda Python runtime provides):
    nothing unique to a sandbox (secrets, connections, credentials, owner ids) is shared by the
    sandboxes restored from one snapshot. False when the runtime has no hooks (not SnapStart)."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False

    def after_restore() -> None:
        sandbox.after_restore()
        warm(sandbox)

    register_before_snapshot(sandbox.before_snapshot)
    register_after_restore(after_restore)
    return True


if on_lambda():  # init, not the first request: a snapshot (or a warm sandbox) starts ready
    register_snapstart_hooks(SANDBOX)
    try:
        warm(SANDBOX)
    except Exception:  # e.g. Secrets Manager unreachable: the first request builds it, and says why
        logging.getLogger(__name__).warning("could not build the ingress at init", exc_info=True)
