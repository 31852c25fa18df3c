"""The incident timeline in the channel: one parent message per run, one reply per event.

Exactly once, in order, whatever the stream and Slack do. Each event is claimed in the
publisher's own item (`attempting_through`) before it is posted and recorded with its `ts` right
after, so at most one post is ever unaccounted for. A post whose answer was lost (5xx, timeout,
dropped connection: Slack may have posted it) or that a stopped publisher never recorded is
looked for by its message metadata (execution id + seq) with one `conversations.replies` or
`conversations.history` call of at most 15 items, never re-sent blindly.

Pacing: runs posting in one channel take turns at Slack's pace (about a post a second); a run
whose turn is to come, or that Slack answered 429, waits in the due-index for the sweeper's nudge
at its turn: nothing is waited out in the stream lane (see TURN_POSTS).

Errors by kind: 5xx on calls that do not post are retried in-process by the client within the
function's time; past that the record fails and the stream delivers it again. Errors no retry can
fix (the bot is not in the channel, the channel is gone or archived, the token or a scope is
missing) never block the stream: the item records that the channel cannot be reached and why,
the requester is told once how to fix it (through the run's response_url while it lasts, else a
DM), and the timeline catches up in order when the run next changes. A message Slack refuses
(`invalid_blocks`, `msg_too_long`) is sent again as its text alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot.config import slack_api_url, slack_posts_per_second
from bot.slack import render
from bot.slack.approvals import approvers_text
from bot.slack.client import (
    CHANNEL_ERRORS,
    MESSAGE_ERRORS,
    RetryBudget,
    answer_lost,
    error_code,
    is_permanent,
    rate_limited,
)
from bot.store.model import EventKind, Execution, TimelineEvent
from bot.store.slack_posts import Posts, PostsStore

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from bot.catalog import Catalog

logger = logging.getLogger(__name__)
METADATA_TYPE = "runbook_timeline_event"
_DECISIONS = {EventKind.APPROVAL_GRANTED, EventKind.APPROVAL_REJECTED, EventKind.APPROVAL_EXPIRED}
_RUN_ENDS = {
    EventKind.RUN_SUCCEEDED: "not needed: the run succeeded",
    EventKind.RUN_FAILED: "closed: the run failed",
    EventKind.RUN_CANCELLED: "closed: the run was cancelled",
    EventKind.RUN_TIMED_OUT: "closed: the run timed out",
}
LOOKUP_ITEMS = 15  # what Slack gives apps outside the Marketplace per history/replies call
SEND_ATTEMPTS = 3  # a post whose answer was lost and that is not in the channel is sent again
CLOCK_SKEW_SECONDS = 2
PARENT_WINDOW_SECONDS = 70  # a post lands within the publishing function's time (60 s) of its send
RESPONSE_URL_SECONDS = 30 * 60  # Slack honours a response_url for 30 minutes
TEXT_ALONE_LIMIT = 3_000
_GONE_MESSAGE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
# Slack takes about one post per second per channel, with short bursts. Runs posting in one
# channel take turns (`ChannelPace`): a turn is at most TURN_POSTS posts, one interval apart; a run
# whose turn has not come leaves its events for the sweeper's nudge at its turn, so no stream lane
# ever sleeps through a busy channel's backlog, and a 429 only queues the run again.
# A turn never starts early: a run whose earlier turn came late (a nudge's stream record takes a
# moment) would post its burst just before the next one's, and Slack would answer 429.
TURN_POSTS = 3
_LOOKUPS = frozenset({"conversations_history", "conversations_replies"})  # 1 a minute, app-wide
UNREACHABLE_RETRY_SECONDS = 300  # a channel that refused is tried again this often, if nothing else changes


class PublisherConflict(RuntimeError):
    """Another publisher moved this execution's posts first; the record is retried."""


class SlackUnanswered(RuntimeError):
    """Slack never answered a post and it is not in the channel; the record is retried."""


class Paced(Exception):
    """Slack answered 429: what is left waits for the channel's next turn after Retry-After."""

    def __init__(self, retry_after: float, method: str = "") -> None:
        super().__init__(f"{method} rate limited for {retry_after:.1f}s")
        self.retry_after = retry_after
        self.method = method  # a 429 to chat.postMessage means Slack surely did not post


class ChannelUnreachable(Exception):
    """Slack refused in a way no retry fixes: the channel, the app or the message must change."""

    def __init__(self, code: str, needed: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.needed = needed


@dataclass(frozen=True)
class PublishResult:
    posted: int
    recovered: int  # found already in the thread (a lost answer, or a publisher that stopped)
    parent_updated: bool
    unreachable: str = ""  # why the channel refused (a Slack error code); "" when it took everything
    lookups: int = 0  # conversations.history/replies calls made to find posts (each ≤ 15 items)
    paced: bool = False  # events wait for the run's turn in its channel: the sweeper nudges it then
    rate_limited: bool = False  # Slack answered 429 (the run queued again after its Retry-After)


@dataclass
class _Tally:
    posted: int = 0
    recovered: int = 0
    lookups: int = 0


def post_json(url: str, body: dict[str, Any]) -> None:
    """POST to a response_url (Slack's hooks, not the Web API)."""
    request = urllib.request.Request(  # noqa: S310 - the URL is checked by _answerable
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        answer.read()


class Publisher:
    def __init__(
        self,
        slack: WebClient,
        posts: PostsStore,
        catalog: Callable[[], Catalog],
        *,
        clock: Callable[[], float] = time.time,
        respond: Callable[[str, dict[str, Any]], None] = post_json,
        budget: RetryBudget | None = None,
        posts_per_second: float | None = None,
    ) -> None:
        self.slack = slack
        # The time `slack`'s retries may take (the handler sets it); the client's own, so that the
        # publisher can forbid the client's waits on 429.
        self.budget = budget or getattr(slack, "retry_budget", None) or RetryBudget()
        self.interval_ms = max(1, round(1000 / (posts_per_second or slack_posts_per_second())))
        self.posts = posts
        self.catalog = catalog
        self.clock = clock
        self.respond = respond

    def publish(self, ex: Execution, response_url: str = "") -> PublishResult:
        """Bring the run's parent and thread up to date; `response_url` is the run's own, if any."""
        state = self.posts.get(ex.execution_id)
        was_unreachable = state.unreachable
        tally = _Tally()
        now_ms = int(self.clock() * 1000)
        if ex.version < state.seen_version:
            # A late duplicate of an older state: a newer one was published from already. Acting on
            # it would turn the parent back and could clear a wait the newer state still needs.
            return PublishResult(0, 0, False, "", 0)
        if state.paced_until_ms > now_ms:  # its turn has not come: ask Slack nothing before then
            self._wait_turn(ex, state, state.paced_until_ms)
            return PublishResult(0, 0, False, "", 0, paced=True)
        channel = state.channel or ex.channel or self._default_channel(ex)
        posts = _posts_needed(ex, state)
        calls = posts or _digest(self._parent(ex)) != state.parent_digest  # Slack is asked anything
        turn = self._turn(channel, state, posts, now_ms) if calls else now_ms
        if turn > now_ms:
            self._wait_turn(ex, state, turn)
            return PublishResult(0, 0, False, "", 0, paced=True)
        try:
            with self.budget.capped(0):  # a 429 is never waited out here: a stream lane must not sleep
                if not state.parent_ts:
                    state = self._ensure_parent(ex, state, tally)
                state = self._post_pending(
                    ex, state, tally, limit=TURN_POSTS - tally.posted - tally.recovered
                )
                refreshed = self._refresh_parent(ex, state)
        except ChannelUnreachable as refused:
            self._unreachable(ex, refused, response_url)
            return PublishResult(tally.posted, tally.recovered, False, refused.code, tally.lookups)
        except Paced as paced:
            current = self.posts.get(ex.execution_id)
            if paced.method == "chat_postMessage" and current.attempting_through > current.posted_seq:
                # A 429 means Slack did not post it: nothing to look for when the run resumes.
                current = self.posts.save(
                    ex.execution_id, current, replace(current, attempting_through=current.posted_seq)
                ) or self.posts.get(ex.execution_id)
            if paced.method == "chat_postMessage" and current.parent_attempted and not current.parent_ts:
                # Nor the parent: posting it again needs no lookup (1 a minute) first.
                current = self.posts.save(
                    ex.execution_id, current, replace(current, parent_attempted=False)
                ) or self.posts.get(ex.execution_id)
            now_ms = int(self.clock() * 1000)
            until_ms = now_ms + int(paced.retry_after * 1000)
            if paced.method in _LOOKUPS:  # only this run needs the lookup: the channel's posts go on
                turn = until_ms
            else:
                turn = self.posts.take_turn(
                    channel, now_ms, _posts_needed(ex, current), self.interval_ms, paced_until_ms=until_ms
                )
            self._wait_turn(ex, current, turn)
            return PublishResult(
                tally.posted, tally.recovered, False, "", tally.lookups, paced=True, rate_limited=True
            )
        if was_unreachable:
            self.posts.clear_channel(refreshed.channel)  # reachable again: /runbook there stops warning
        left = _posts_needed(ex, refreshed)
        if left:  # more than one turn's worth: the rest queues behind the channel's other runs
            turn = self.posts.take_turn(channel, int(self.clock() * 1000), left, self.interval_ms)
            self._wait_turn(ex, replace(refreshed, unreachable="", unreachable_since_ms=0), turn)
            return PublishResult(
                tally.posted, tally.recovered, refreshed is not state, "", tally.lookups, paced=True
            )
        if (
            refreshed.unreachable
            or refreshed.retry_at_ms
            or refreshed.paced_until_ms
            or refreshed.seen_version < ex.version
        ):
            self._save(
                ex,
                refreshed,
                replace(
                    refreshed,
                    unreachable="",
                    unreachable_since_ms=0,
                    retry_at_ms=0,
                    paced_until_ms=0,
                    seen_version=max(refreshed.seen_version, ex.version),
                ),
            )
        return PublishResult(tally.posted, tally.recovered, refreshed is not state, "", tally.lookups)

    def _turn(self, channel: str, state: Posts, posts: int, now_ms: int) -> int:
        """When the run may call Slack to post `posts` posts in `channel` (none: only update its
        messages): a run whose turn has come goes ahead of those queued after it, and so does an
        update, unless Slack has said wait; any other run queues."""
        pace = self.posts.pace(channel)
        if pace.paced_until_ms > now_ms and (state.paced_until_ms or not posts):
            return pace.paced_until_ms  # Slack said wait: first again when it may
        if state.paced_until_ms or not posts:  # the publish above returned while its turn was to come
            return now_ms
        return self.posts.take_turn(channel, now_ms, posts, self.interval_ms, pace=pace)

    def _wait_turn(self, ex: Execution, state: Posts, turn_ms: int) -> None:
        """Leave what is not yet in the channel for the run's turn: the sweeper nudges the run at
        `turn_ms` (the run's next change finds it waiting). Best effort: a lost race means another
        publisher is on it."""
        after = replace(
            state,
            seen_version=max(state.seen_version, ex.version),
            paced_until_ms=turn_ms,
            retry_at_ms=turn_ms,
        )
        if after != state and self.posts.save(ex.execution_id, state, after) is None:
            logger.info("posts moved while pacing", extra={"execution_id": ex.execution_id})

    def _save(self, ex: Execution, before: Posts, after: Posts) -> Posts:
        saved = self.posts.save(ex.execution_id, before, after)
        if saved is None:
            raise PublisherConflict(f"posts of {ex.execution_id} moved while publishing; retrying")
        return saved

    # -- the parent message ----------------------------------------------------------------

    def _ensure_parent(self, ex: Execution, state: Posts, tally: _Tally) -> Posts:
        channel = state.channel or ex.channel or self._default_channel(ex)
        ts = self._find_parent(ex, channel, state, tally) if state.parent_attempted else ""
        if ts:
            tally.recovered += 1
        else:
            state = self._save(
                ex,
                state,
                replace(
                    state,
                    channel=channel,
                    parent_attempted=True,
                    parent_attempt_at_ms=int(self.clock() * 1000),
                ),
            )
            attempted = state
            ts = self._post(
                channel,
                self._parent(ex),
                _metadata(ex, 0),
                lambda: self._find_parent(ex, channel, attempted, tally),
                tally,
            )
        with_parent = replace(
            state,
            channel=channel,
            parent_ts=ts,
            parent_attempted=True,
            last_ts=state.last_ts or ts,
            parent_digest=_digest(self._parent(ex)),
        )
        return self._save(ex, state, with_parent)

    def _find_parent(self, ex: Execution, channel: str, state: Posts, tally: _Tally) -> str:
        """The parent we may have posted: one history call over the time it can have landed in."""
        tally.lookups += 1
        if state.parent_attempt_at_ms:
            sent = state.parent_attempt_at_ms / 1000
            window = {
                "oldest": f"{sent - CLOCK_SKEW_SECONDS:.6f}",
                "latest": f"{sent + PARENT_WINDOW_SECONDS:.6f}",
            }
        else:  # recorded before attempts had a time: since the run began
            window = {"oldest": f"{ex.created_at_ms / 1000 - 60:.6f}"}
        history = self._call(
            self.slack.conversations_history,
            channel=channel,
            limit=LOOKUP_ITEMS,
            inclusive=True,
            include_all_metadata=True,
            **window,
        )
        for message in history.get("messages") or []:
            if _event_key(message) == (ex.execution_id, 0):
                return str(message["ts"])
        if history.get("has_more"):
            logger.warning(
                "parent not among the newest messages of its window; posting it again may show it twice",
                extra={"execution_id": ex.execution_id, "channel": channel},
            )
        return ""

    def _refresh_parent(self, ex: Execution, state: Posts) -> Posts:
        """The parent as of the run's state; `state` itself when it already was."""
        message = self._parent(ex)
        digest = _digest(message)
        if digest == state.parent_digest:
            return state
        self._update(state.channel, state.parent_ts, message)
        # Best effort: a lost digest only costs one more chat.update next time.
        return self.posts.save(ex.execution_id, state, replace(state, parent_digest=digest)) or replace(
            state, parent_digest=digest
        )

    def _parent(self, ex: Execution) -> render.Message:
        catalog = self.catalog()
        runbook = catalog.runbooks.get(ex.runbook)
        partner = catalog.partners.get(ex.partner)
        if ex.kind == "plan" and runbook:  # a plan is one message: every step with its mark
            from bot.slack.plan_render import plan_message

            return plan_message(ex, runbook, partner.display_name if partner else ex.partner)
        # As of the run's last transition, not the wall clock: the same state renders the same
        # message, so a redelivered record costs no chat.update (elapsed and SLA move with each step).
        return render.parent_message(
            ex,
            runbook.title if runbook else ex.runbook,
            partner.display_name if partner else ex.partner,
            ex.updated_at_ms,
            render.step_titles(runbook) if runbook else None,
        )

    # -- events ----------------------------------------------------------------------------

    def _post_pending(self, ex: Execution, state: Posts, tally: _Tally, *, limit: int) -> Posts:
        """Post the run's events after `posted_seq`, at most `limit` of them (the run's turn)."""
        pending = [e for e in ex.timeline if e.seq > state.posted_seq][: max(0, limit)]
        if not pending or ex.kind == "plan":  # a plan's events live in its one message, not a thread
            return state
        # Something claimed and never recorded: a publisher stopped, or Slack's answer was lost.
        already = self._find_replies(ex, state, tally) if state.attempting_through > state.posted_seq else {}
        if state.attempting_through < pending[0].seq:
            state = self._save(ex, state, replace(state, attempting_through=pending[0].seq))
        approval_ts = dict(state.approval_ts)
        for i, event in enumerate(pending):
            ts = already.get(event.seq, "")
            if ts:
                tally.recovered += 1
            else:
                ts = self._post_event(ex, state, event, tally)
            if event.kind is EventKind.APPROVAL_REQUESTED and event.step_id:
                approval_ts[event.step_id] = ts
            if event.kind is EventKind.APPROVAL_VOTED and event.step_id in approval_ts:
                # "1 of 2 approvals" and who: the approval message keeps its buttons for the rest.
                self._update(state.channel, approval_ts[event.step_id], self._approval_message(ex, event))
            if event.kind in _DECISIONS and event.step_id in approval_ts:
                self._close_approval(ex, state.channel, approval_ts.pop(event.step_id), event)
            if event.kind in _RUN_ENDS:  # nobody decided, and nobody need: the buttons go
                for step_id, open_ts in sorted(approval_ts.items()):
                    self._close_approval(ex, state.channel, open_ts, event, step_id=step_id)
                approval_ts.clear()
            following = pending[i + 1].seq if i + 1 < len(pending) else event.seq
            # One write records this post and claims the next.
            state = self._save(
                ex,
                state,
                replace(
                    state,
                    posted_seq=event.seq,
                    last_ts=ts,
                    attempting_through=max(following, state.attempting_through),
                    approval_ts=dict(approval_ts),
                    unreachable="",
                    unreachable_since_ms=0,
                ),
            )
        return state

    def _post_event(self, ex: Execution, state: Posts, event: TimelineEvent, tally: _Tally) -> str:
        before = self._post(
            state.channel,
            self._event_message(ex, event),
            _metadata(ex, event.seq),
            lambda: self._find_replies(ex, state, tally).get(event.seq, ""),
            tally,
            thread_ts=state.parent_ts,
            reply_broadcast=event.kind is EventKind.APPROVAL_REQUESTED,
        )
        return before

    def _find_replies(self, ex: Execution, state: Posts, tally: _Tally) -> dict[int, str]:
        """This run's replies after the last one recorded: one call, at most 15 items."""
        tally.lookups += 1
        page = self._call(
            self.slack.conversations_replies,
            channel=state.channel,
            ts=state.parent_ts,
            oldest=state.last_ts or state.parent_ts,
            limit=LOOKUP_ITEMS,
            include_all_metadata=True,
        )
        found: dict[int, str] = {}
        for message in page.get("messages") or []:
            key = _event_key(message)
            if key and key[0] == ex.execution_id and key[1] > 0:
                found[key[1]] = str(message["ts"])
        return found

    def _event_message(self, ex: Execution, event: TimelineEvent) -> render.Message:
        catalog = self.catalog()
        runbook = catalog.runbooks.get(ex.runbook)
        step_title = ""
        if runbook and event.step_id:
            try:
                step = runbook.step(event.step_id)
                step_title = step.label
            except KeyError:
                step_title = event.step_id
        if event.kind is EventKind.APPROVAL_REQUESTED:
            return self._approval_message(ex, event, step_title)
        if event.kind is EventKind.APPROVAL_REMINDER:
            partner = catalog.partners.get(ex.partner)
            return render.approval_reminder(ex, event, step_title, partner.approvers if partner else ())
        entry = catalog.errors.entry(event.error_code) if event.error_code else None
        reply = render.timeline_reply(ex, event, entry.meaning if entry else None, step_title=step_title)
        return render.with_export_button(reply, ex.execution_id) if event.kind in _RUN_ENDS else reply

    def _approval_message(self, ex: Execution, event: TimelineEvent, step_title: str = "") -> render.Message:
        """The approval message for `event`'s step, as the run stands now (votes so far)."""
        catalog = self.catalog()
        if not step_title:
            step_title = event.step_id
            runbook = catalog.runbooks.get(ex.runbook)
            if runbook:
                with contextlib.suppress(KeyError):
                    step_title = runbook.step(event.step_id).label
        partner = catalog.partners.get(ex.partner)
        approval = ex.approval if ex.approval and ex.approval.step_id == event.step_id else None
        effect = approval.effect if approval else event.summary
        expires = int(event.figures.get("expires_at_ms") or (approval.expires_at_ms if approval else 0))
        return render.approval_request(
            ex,
            event.step_id,
            step_title,
            effect,
            partner.approvers if partner else (),
            expires,
            version=_approval_version(ex, event),
            approval=approval,
        )

    def _close_approval(
        self, ex: Execution, channel: str, ts: str, event: TimelineEvent, *, step_id: str = ""
    ) -> None:
        """The approval message without its buttons, saying what became of it."""
        step_id = step_id or event.step_id
        catalog = self.catalog()
        runbook = catalog.runbooks.get(ex.runbook)
        title = step_id
        if runbook:
            with contextlib.suppress(KeyError):
                title = runbook.step(step_id).label
        decision = {
            EventKind.APPROVAL_GRANTED: "approved",
            EventKind.APPROVAL_REJECTED: "rejected",
            EventKind.APPROVAL_EXPIRED: "expired",
        }.get(event.kind) or _RUN_ENDS.get(event.kind, "closed")
        actor = event.actor if event.kind in _DECISIONS else ""
        effect = ex.approval.effect if ex.approval and ex.approval.step_id == step_id else ""
        message = render.approval_decided(
            ex, step_id, title, effect, decision, actor, event.at_ms, approval=ex.approval
        )
        self._update(channel, ts, message)

    # -- talking to Slack --------------------------------------------------------------------

    def _call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except SlackApiError as error:
            wait = rate_limited(error)
            if wait is not None:  # past the pacing allowance: the client did not wait it out
                raise Paced(wait, getattr(method, "__name__", "")) from error
            if is_permanent(error):
                needed = (
                    str(error.response.get("needed") or "") if isinstance(error.response.data, dict) else ""
                )
                raise ChannelUnreachable(error_code(error), needed) from error
            raise

    def _post(
        self,
        channel: str,
        message: render.Message,
        metadata: dict[str, Any],
        find: Callable[[], str],
        tally: _Tally,
        **extra: Any,
    ) -> str:
        """chat.postMessage exactly once: after a lost answer, look (`find`) before sending again."""
        for _ in range(SEND_ATTEMPTS):
            try:
                answer = self._call(
                    self.slack.chat_postMessage,
                    channel=channel,
                    text=message.text,
                    blocks=message.blocks,
                    unfurl_links=False,
                    metadata=metadata,
                    **extra,
                )
                tally.posted += 1
                return str(answer["ts"])
            except ChannelUnreachable as refused:
                if refused.code in MESSAGE_ERRORS and message.blocks:
                    logger.error(
                        "Slack refused a message; sending its text alone", extra={"error": refused.code}
                    )
                    message = _text_alone(message)
                    continue
                raise
            except Exception as error:
                if not answer_lost(error):
                    raise
                logger.warning(
                    "Slack's answer to a post was lost; looking for it", extra={"error": str(error)}
                )
                ts = find()
                if ts:
                    tally.recovered += 1
                    return ts
        raise SlackUnanswered(
            f"Slack did not answer {SEND_ATTEMPTS} posts to {channel}; the record is retried"
        )

    def _update(self, channel: str, ts: str, message: render.Message) -> None:
        for candidate in (message, _text_alone(message)):
            try:
                self._call(
                    self.slack.chat_update,
                    channel=channel,
                    ts=ts,
                    text=candidate.text,
                    blocks=candidate.blocks,
                )
                return
            except ChannelUnreachable as refused:
                if refused.code not in MESSAGE_ERRORS or not candidate.blocks:
                    raise
                logger.error("Slack refused an update; sending its text alone", extra={"error": refused.code})
            except SlackApiError as error:
                if error_code(error) not in _GONE_MESSAGE:
                    raise
                logger.warning(
                    "message to update is gone", extra={"channel": channel, "error": error_code(error)}
                )
                return

    # -- a channel that cannot be reached ------------------------------------------------------

    def _unreachable(self, ex: Execution, refused: ChannelUnreachable, response_url: str) -> None:
        state = self.posts.get(ex.execution_id)
        channel = state.channel or ex.channel
        logger.warning(
            "channel cannot be reached; the timeline waits",
            extra={"execution_id": ex.execution_id, "channel": channel, "error": refused.code},
        )
        told = state.requester_told or self._tell_requester(ex, channel, refused, response_url)
        if refused.code in CHANNEL_ERRORS:
            self.posts.mark_channel(channel, refused.code, int(self.clock() * 1000))
        now_ms = int(self.clock() * 1000)
        after = replace(
            state,
            channel=channel,
            unreachable=refused.code,
            unreachable_since_ms=state.unreachable_since_ms or now_ms,
            requester_told=told,
            retry_at_ms=now_ms + UNREACHABLE_RETRY_SECONDS * 1000,  # the sweeper tries again now and then
        )
        if after != state and self.posts.save(ex.execution_id, state, after) is None:
            logger.info(
                "posts moved while recording an unreachable channel", extra={"execution_id": ex.execution_id}
            )

    def _tell_requester(
        self, ex: Execution, channel: str, refused: ChannelUnreachable, response_url: str
    ) -> bool:
        text = unreachable_text(ex, channel, refused.code, refused.needed)
        age = self.clock() - ex.created_at_ms / 1000
        if response_url and age < RESPONSE_URL_SECONDS and _answerable(response_url):
            try:
                self.respond(
                    response_url, {"response_type": "ephemeral", "replace_original": False, "text": text}
                )
                return True
            except Exception:  # an expired or used-up response_url: a DM instead
                logger.warning(
                    "response_url refused; telling the requester by DM",
                    extra={"execution_id": ex.execution_id},
                )
        if not ex.requested_by.startswith(("U", "W")):
            return False  # an alarm started it: nobody to tell but the channel itself
        try:
            dm = self.slack.conversations_open(users=ex.requested_by)
            self.slack.chat_postMessage(channel=str(dm["channel"]["id"]), text=text, unfurl_links=False)
        except Exception as error:
            logger.warning(
                "could not tell the requester",
                extra={"execution_id": ex.execution_id, "error": error_code(error)},
            )
            return False
        return True

    def _default_channel(self, ex: Execution) -> str:
        partner = self.catalog().partners.get(ex.partner)
        if partner and partner.channels:
            return partner.channels[0]
        raise ValueError(f"execution {ex.execution_id} has no channel and its partner names none")


_FIXES = {
    "not_in_channel": "Invite the bot: type `/invite @runbook-bot` in <#{channel}>.",
    "channel_not_found": (
        "The channel does not exist or is private without the bot: invite @runbook-bot to <#{channel}>, "
        "or fix `channels` in the partner file."
    ),
    "is_archived": (
        "<#{channel}> is archived: unarchive it, or name a live channel in the partner file's `channels` "
        "and invite @runbook-bot there."
    ),
    "missing_scope": "The Slack app lacks the scope `{needed}`: add it to the app (slack-manifest.yaml) and reinstall it.",
    "token_revoked": (
        "The bot's Slack token is no longer valid: reinstall the app and store the new token in the bot's secret."
    ),
    "msg_too_long": "Slack refused the message itself; the timeline stays in the table: `/runbook timeline {execution}`.",
}
_FIXES["is_inactive"] = _FIXES["is_archived"]
_FIXES["invalid_blocks"] = _FIXES["msg_too_long"]
for _code in ("account_inactive", "invalid_auth", "not_authed"):
    _FIXES[_code] = _FIXES["token_revoked"]


def unreachable_text(ex: Execution, channel: str, code: str, needed: str = "") -> str:
    """What the requester reads: what is wrong, how to fix it, and that the run goes on."""
    fix = _FIXES.get(code, "Check the Slack app's installation and the partner file's `channels`.")
    return (
        f"Runbook Bot cannot post the timeline of run `{ex.execution_id}` ({ex.runbook} for {ex.partner}) "
        f"in <#{channel}>: Slack answers `{code}`. "
        + fix.format(channel=channel, needed=needed or "channels:history", execution=ex.execution_id)
        + " The run goes on; its timeline catches up in the channel when the run next changes."
    )


def _answerable(response_url: str) -> bool:
    """Slack's own hooks, or the Slack that SLACK_API_URL names (the local stand-in)."""
    url = urllib.parse.urlsplit(response_url)
    api = urllib.parse.urlsplit(slack_api_url())
    return (url.scheme == "https" and url.hostname == "hooks.slack.com") or (
        (url.scheme, url.netloc) == (api.scheme, api.netloc)
    )


def _posts_needed(ex: Execution, state: Posts) -> int:
    """The posts the run's turn must hold: its parent if not yet posted, then its waiting events
    (a plan's live in its one message), at most a turn's worth."""
    events = 0 if ex.kind == "plan" else sum(1 for e in ex.timeline if e.seq > state.posted_seq)
    return min(TURN_POSTS, events + (0 if state.parent_ts else 1))


def _text_alone(message: render.Message) -> render.Message:
    text = (
        message.text if len(message.text) <= TEXT_ALONE_LIMIT else message.text[: TEXT_ALONE_LIMIT - 1] + "…"
    )
    return render.Message(text or "(a timeline event Slack could not show)")


def _metadata(ex: Execution, seq: int) -> dict[str, Any]:
    return {"event_type": METADATA_TYPE, "event_payload": {"execution_id": ex.execution_id, "seq": seq}}


def _approval_version(ex: Execution, event: TimelineEvent) -> int:
    """The run's version while it waits on this approval (what the buttons must carry)."""
    if ex.approval and ex.approval.step_id == event.step_id and not ex.approval.decision:
        return ex.approval.version or ex.version
    return -1  # already decided or moved on: the buttons would be refused as stale anyway


def _event_key(message: dict[str, Any]) -> tuple[str, int] | None:
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != METADATA_TYPE:
        return None
    payload = metadata.get("event_payload") or {}
    try:
        return str(payload["execution_id"]), int(payload["seq"])
    except (KeyError, TypeError, ValueError):
        return None


def _digest(message: render.Message) -> str:
    body = json.dumps({"text": message.text, "blocks": message.blocks}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def approvers_line(ex: Execution, catalog: Catalog) -> str:
    partner = catalog.partners.get(ex.partner)
    return approvers_text(partner) if partner else ""
