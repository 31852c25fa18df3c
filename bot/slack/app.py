"""The Bolt app: verifies every request (signature, 5-minute timestamp), then small listeners.

No Slack call happens at import, init or first request: `authorize` hands Bolt the bot token
directly instead of letting it call `auth.test`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config import SlackSecrets
from bot.exceptions import RunbookBotError
from bot.slack import render
from bot.slack.client import error_code, slack_client
from bot.slack.commands import CommandService, Invocation
from bot.slack.decisions import DIALOG_CALLBACK, DecisionResult, DecisionService, Submission, unsaid
from bot.slack.plan_render import RUN_PLAN_ACTION
from bot.slack.plan_runs import PlanStart, start_from_plan
from bot.slack.render import NOTE_BLOCK

logger = logging.getLogger(__name__)
GROUP_CACHE_SECONDS = 300
GROUP_LOOKUP_SECONDS = 1.2  # a click's whole answer must stay inside Slack's 3 seconds
CLICK_REPLY_SECONDS = 1


def build_app(
    secrets: SlackSecrets,
    commands: CommandService,
    decisions: Callable[[WebClient, Callable[[str], frozenset[str]]], DecisionService],
) -> App:
    client = slack_client(secrets.bot_token)
    # Bolt warns that SLACK_BOT_TOKEN is unused when `authorize` is given: that is the point.
    bolt_logger = logging.getLogger("bot.slack.bolt")
    bolt_logger.setLevel(logging.ERROR)

    def authorize(**_: Any) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=None, team_id=None, bot_token=secrets.bot_token)

    app = App(
        signing_secret=secrets.signing_secret,
        client=client,
        authorize=authorize,
        process_before_response=True,
        request_verification_enabled=True,
        token_verification_enabled=False,
        url_verification_enabled=True,
        ssl_check_enabled=True,
        logger=bolt_logger,
    )
    members = group_members(client)
    commands.members_of = members
    decider = decisions(client, members)
    # Refusals to a click go out on a client that never sleeps on Retry-After and gives up fast:
    # the click's HTTP answer waits for the listener, and Slack wants it within 3 seconds.
    click_client = WebClient(token=secrets.bot_token, base_url=client.base_url, timeout=CLICK_REPLY_SECONDS)
    click_client.retry_handlers = []

    @app.command("/runbook")
    def runbook_command(ack: Ack, command: dict[str, Any]) -> None:
        try:
            message = commands.answer(Invocation.from_payload(command))
        except Exception:
            logger.exception("runbook command failed", extra={"text": command.get("text")})
            ack(
                response_type="ephemeral",
                text="Runbook Bot hit an internal error; nothing was started. Try again.",
            )
            return
        ack(response_type="ephemeral", text=message.text, blocks=message.blocks)

    _approval_listeners(app, decider, click_client)
    _history_and_export_buttons(app, commands)
    _plan_button(app, commands, click_client)
    return app


def _approval_listeners(app: App, decider: DecisionService, click_client: WebClient) -> None:
    """Clicks on the approval message's buttons, and the submitted reason/comment dialog."""

    @app.action("approve")
    @app.action("approve_comment")
    @app.action("reject")
    def approval_click(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        user_id = str((body.get("user") or {}).get("id") or "")
        channel = str(
            (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
        )
        action_id = str(action.get("action_id") or "")
        approve = action_id != "reject"
        value = str(action.get("value") or "")
        try:
            if action_id == "approve":
                result = decider.decide(user_id, value, approve=True)
            else:
                result = _with_dialog(decider, click_client, body, user_id, value, approve=approve)
        except MembershipUnknown as unknown:
            result = DecisionResult(False, str(unknown))
        except Exception:  # never a 500 to Slack: the click changed nothing, say so
            logger.exception("approval click failed", extra={"user": user_id})
            result = DecisionResult(False, "Runbook Bot hit an internal error; nothing changed. Try again.")
        if not result.decided and result.explanation and channel and user_id:
            try:
                click_client.chat_postEphemeral(channel=channel, user=user_id, text=result.explanation)
            except Exception:  # Slack slow or rate-limited: the refusal is lost, the decision is not
                logger.warning("could not tell the clicker why nothing changed", extra={"user": user_id})

    @app.view(DIALOG_CALLBACK)
    def decision_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        user_id = str((body.get("user") or {}).get("id") or "")
        values = ((view.get("state") or {}).get("values") or {}).get(NOTE_BLOCK) or {}
        note = str((values.get(NOTE_BLOCK) or {}).get("value") or "")
        try:
            outcome = decider.submit(user_id, str(view.get("private_metadata") or ""), note)
        except MembershipUnknown as unknown:
            outcome = Submission(False, refusal=str(unknown))
        except Exception:
            logger.exception("approval dialog failed", extra={"user": user_id})
            outcome = Submission(
                False, refusal="Runbook Bot hit an internal error; nothing changed. Try again."
            )
        if outcome.decided:
            ack()  # the dialog closes; the thread shows the decision
        elif outcome.field_error:
            ack(response_action="errors", errors={NOTE_BLOCK: outcome.field_error})
        else:
            ack(response_action="update", view=render.dialog_refused(outcome.refusal))


def _with_dialog(
    decider: DecisionService,
    client: WebClient,
    body: dict[str, Any],
    user_id: str,
    value: str,
    *,
    approve: bool,
) -> DecisionResult:
    """Reject and "Approve with comment": open the dialog with the click's trigger_id, the one
    Slack call a click may make, on the time-boxed client. If Slack does not open it (the trigger
    expired, Slack is slow or down), the click decides without the words and the timeline says so."""
    dialog = decider.dialog(user_id, value, approve=approve)
    if dialog.view is None:
        return DecisionResult(False, dialog.refusal)
    try:
        client.views_open(trigger_id=str(body.get("trigger_id") or ""), view=dialog.view)
        return DecisionResult(False, "")  # nothing decided yet: the dialog's submission decides
    except Exception as error:
        why = error_code(error) if isinstance(error, SlackApiError) else type(error).__name__
        logger.warning("could not open the decision dialog; deciding without it", extra={"error": why})
        result = decider.decide(user_id, value, approve=approve, note=unsaid(approve, why))
        if not result.decided:  # the click's one Slack call is spent: no ephemeral on top
            logger.warning("the click changed nothing", extra={"user": user_id, "why": result.explanation})
        return DecisionResult(result.decided, "")


def _plan_button(app: App, commands: CommandService, click_client: WebClient) -> None:
    """Run this plan: starts the run a plan describes (no partner AWS call on the click path)."""

    @app.action(RUN_PLAN_ACTION)
    def run_plan_click(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        user_id = str((body.get("user") or {}).get("id") or "")
        channel = str(
            (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
        )
        try:
            result = start_from_plan(commands, user_id, channel, str(action.get("value") or ""))
        except Exception:  # never a 500 to Slack: say that nothing was started
            logger.exception("run plan click failed", extra={"user": user_id})
            result = PlanStart(False, "Runbook Bot hit an internal error; nothing was started. Try again.")
        if channel and user_id:
            try:
                click_client.chat_postEphemeral(channel=channel, user=user_id, text=result.text)
            except Exception:  # the run (if any) goes on; its thread says so in the channel
                logger.warning("could not tell the clicker what the plan started", extra={"user": user_id})


def _history_and_export_buttons(app: App, commands: CommandService) -> None:
    """*More* under a history page and *Export evidence* under an ended run: each answers the
    clicker alone (the click's response_url), after checking their rights again."""

    @app.action("history_more")
    def history_more(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        ack()
        user_id, channel = _clicker(body)
        try:
            message = commands.more_history(str(action.get("value") or ""), user_id, channel)
        except RunbookBotError as refused:  # e.g. the approvers' group could not be read in time
            message = render.refusal(str(refused))
        except Exception:
            logger.exception("history page failed", extra={"user": user_id})
            message = render.refusal("Runbook Bot hit an internal error reading the history; try again.")
        _answer_clicker(respond, message)

    @app.action("export_evidence")
    def export_evidence(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        ack()
        user_id, channel = _clicker(body)
        try:
            message = commands.export_click(
                str(action.get("value") or ""), user_id, channel, str(body.get("response_url") or "")
            )
        except RunbookBotError as refused:
            message = render.refusal(str(refused))
        except Exception:
            logger.exception("export click failed", extra={"user": user_id})
            message = render.refusal("Runbook Bot hit an internal error; nothing was exported. Try again.")
        _answer_clicker(respond, message)


def _clicker(body: dict[str, Any]) -> tuple[str, str]:
    user_id = str((body.get("user") or {}).get("id") or "")
    channel = str(
        (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
    )
    return user_id, channel


def _answer_clicker(respond: Respond, message: render.Message) -> None:
    try:
        respond(text=message.text, blocks=message.blocks, response_type="ephemeral", replace_original=False)
    except Exception:  # Slack slow: the click changed nothing it should not have, and says so next time
        logger.warning("could not answer a click through its response_url")


class MembershipUnknown(RunbookBotError):
    """A user group's members could not be read in time; the click is refused, nothing changed."""


def group_members(
    client: WebClient, timeout_s: float = GROUP_LOOKUP_SECONDS
) -> Callable[[str], frozenset[str]]:
    """Members of a Slack user group, cached per sandbox for a few minutes.

    A lookup is time-boxed: `usergroups.users.list` is tier 2 and may answer 429 with a long
    Retry-After, while a click must be answered within Slack's 3 seconds. A lookup that does not
    finish in time raises MembershipUnknown ("try again in a moment"); it goes on in the
    background and fills the cache for the next click.
    """
    cache: dict[str, tuple[float, frozenset[str]]] = {}
    pending: dict[str, Future[frozenset[str]]] = {}
    lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="usergroups")

    def fetch(group_id: str) -> frozenset[str]:
        try:
            users = frozenset(client.usergroups_users_list(usergroup=group_id).get("users") or [])
        except SlackApiError as error:
            status = error.response.status_code if error.response is not None else 0
            if status == 429 or status >= 500:
                raise
            # A group Slack does not know (no_such_subteam, a missing scope): nobody is in it, for
            # now; asking again on every click would only burn a tier-2 budget.
            logger.warning(
                "user group has no members we can read", extra={"group": group_id, "error": str(error)}
            )
            users = frozenset()
        with lock:
            cache[group_id] = (time.monotonic(), users)
            pending.pop(group_id, None)
        return users

    def members_of(group_id: str) -> frozenset[str]:
        with lock:
            hit = cache.get(group_id)
            if hit and time.monotonic() - hit[0] < GROUP_CACHE_SECONDS:
                return hit[1]
            future = pending.get(group_id)
            if future is None or future.done():
                future = pending[group_id] = pool.submit(fetch, group_id)
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            raise MembershipUnknown(
                "Slack is slow to say who is in the approvers' group right now; nothing changed. "
                "Try again in a moment"
            ) from None
        except Exception:
            with lock:
                pending.pop(group_id, None)
            logger.warning("could not read user group members", extra={"group": group_id})
            raise MembershipUnknown(
                "Slack did not say who is in the approvers' group; nothing changed. Try again in a moment"
            ) from None

    return members_of
