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
        if _opens_start_form(command):
            _open_start_form(ack, commands, click_client, command)
            return
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
    _app_home(app, commands, click_client)
    _history_and_export_buttons(app, commands)
    _plan_button(app, commands, click_client)
    _start_form_listeners(app, commands, click_client)
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
        if not result.decided and result.explanation and user_id:
            _tell_clicker(click_client, channel, user_id, result.explanation)

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


def _tell_clicker(client: WebClient, channel: str, user_id: str, text: str) -> None:
    """Why a click changed nothing: ephemeral in the channel, or by DM (the app's Messages tab)
    for a click in the App Home, which has no channel."""
    try:
        if channel:
            client.chat_postEphemeral(channel=channel, user=user_id, text=text)
        else:
            client.chat_postMessage(channel=user_id, text=f"Your click in Runbook Bot's Home: {text}")
    except Exception:  # Slack slow or rate-limited: the refusal is lost, the decision is not
        logger.warning("could not tell the clicker why nothing changed", extra={"user": user_id})


def _app_home(app: App, commands: CommandService, click_client: WebClient) -> None:
    """The Events API's `app_home_opened` and the home's *Start a runbook* button. Bolt answers
    `url_verification` with the challenge and verifies every event_callback's signature; a retry
    of an event (same event_id) changes nothing; the home itself is published by the timeline
    consumer from the request item written here (no Slack call on the ack path)."""
    from bot.slack.home import START_ACTION
    from bot.store.homes import HomeStore

    homes = HomeStore(commands.store.client, commands.store.table)

    @app.event("app_home_opened")
    def home_opened(body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("tab") != "home":
            return  # the Messages tab: nothing to publish
        user_id = str(event.get("user") or "")
        event_id = str(body.get("event_id") or "")
        now_ms = commands.now_ms()
        if not user_id or not homes.first_delivery(event_id, now_ms):
            logger.info("event delivered before; nothing to do", extra={"event_id": event_id})
            return
        try:
            homes.opened(user_id, now_ms)
        except Exception:
            homes.forget_delivery(event_id)  # Slack's retry of this event is handled, not dropped
            raise

    @app.action(START_ACTION)
    def home_start(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        from bot.slack.start_form import FormChoice, start_view

        user_id = str((body.get("user") or {}).get("id") or "")
        try:
            view = start_view(commands.catalog(), FormChoice("", from_home=True))
            click_client.views_open(trigger_id=str(body.get("trigger_id") or ""), view=view)
        except Exception as error:
            why = error_code(error) if isinstance(error, SlackApiError) else type(error).__name__
            logger.warning("could not open the start form from the home", extra={"error": why})
            _tell_clicker(
                click_client,
                "",
                user_id,
                f"the start form could not open (`{why}`); nothing was started. Click *Start a runbook* "
                "again, or type `/runbook` in a partner's channel",
            )


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


def _opens_start_form(command: dict[str, Any]) -> bool:
    from bot.exceptions import CommandError
    from bot.slack.grammar import StartForm, parse

    try:
        return isinstance(parse(str(command.get("text") or "")), StartForm)
    except CommandError:
        return False


def _open_start_form(ack: Ack, commands: CommandService, client: WebClient, command: dict[str, Any]) -> None:
    """`/runbook` alone: the start form opens with the command's trigger_id, on the time-boxed
    client (the trigger is good for 3 seconds, once). If Slack does not open it, the command's
    answer says why and how to start a run without the form."""
    from bot.slack.start_form import FormChoice, start_view

    channel = str(command.get("channel_id") or "")
    try:
        catalog = commands.catalog()
        view = start_view(catalog, FormChoice(channel))
        client.views_open(trigger_id=str(command.get("trigger_id") or ""), view=view)
    except Exception as error:
        why = error_code(error) if isinstance(error, SlackApiError) else type(error).__name__
        logger.warning("could not open the start form", extra={"error": why})
        late = why in {"expired_trigger_id", "exchanged_trigger_id", "invalid_trigger_id"}
        reason = (
            "Slack gives an app 3 seconds to open a form after a command, and that time passed"
            if late
            else "Slack did not open it"
        )
        ack(
            response_type="ephemeral",
            text=f"The start form could not open ({reason}: `{why}`); nothing was started. Run `/runbook` "
            "again, or type the run: `/runbook &lt;runbook&gt; &lt;partner&gt; [key=value ...]` "
            "(`/runbook list` shows what this channel may run).",
        )
        return
    ack()


def _start_form_listeners(app: App, commands: CommandService, client: WebClient) -> None:
    """The start form: a runbook or partner picked updates it (views.update with the view's hash,
    Slack's guard against an older update landing last); its submission starts the run."""
    from bot.slack.commands import start_from_form
    from bot.slack.start_form import (
        PARTNER_BLOCK,
        RUNBOOK_BLOCK,
        START_CALLBACK,
        FormChoice,
        read_choice,
        start_view,
    )

    @app.action(RUNBOOK_BLOCK)
    @app.action(PARTNER_BLOCK)
    def form_choice(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        view = body.get("view") or {}
        choice = read_choice(view)
        picked = str((action.get("selected_option") or {}).get("value") or "")
        if action.get("action_id") == RUNBOOK_BLOCK:
            choice = FormChoice(choice.channel, picked, choice.partner, choice.from_home)
        else:
            choice = FormChoice(choice.channel, choice.runbook, picked, choice.from_home)
        try:
            client.views_update(
                view_id=str(view.get("id") or ""),
                hash=str(view.get("hash") or ""),
                view=start_view(commands.catalog(), choice),
            )
        except SlackApiError as error:
            # hash_conflict: a later pick updated the form first; that one's form stands.
            logger.info("start form not updated", extra={"error": error_code(error)})
        except Exception:
            logger.warning("could not update the start form", exc_info=True)

    @app.view(START_CALLBACK)
    def form_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        user_id = str((body.get("user") or {}).get("id") or "")
        team_id = str((body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id") or "")
        try:
            answer = start_from_form(commands, view, user_id, team_id, str(body.get("trigger_id") or ""))
        except Exception:
            logger.exception("start form failed", extra={"user": user_id})
            ack(
                response_action="errors",
                errors={RUNBOOK_BLOCK: "Runbook Bot hit an internal error; nothing was started. Try again."},
            )
            return
        if answer.errors:
            ack(response_action="errors", errors=answer.errors)
            return
        started = answer.started or render.refusal("Started.")
        try:
            client.chat_postEphemeral(
                channel=answer.channel, user=user_id, text=started.text, blocks=started.blocks
            )
        except Exception:  # e.g. not_in_channel, Slack slow: the form itself says the run started
            logger.warning("could not tell the requester their run started", extra={"user": user_id})
            ack(response_action="update", view=render.form_started(started.text))
            return
        ack()  # the form closes; the run's message appears in the channel


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
