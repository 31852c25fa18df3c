"""The incident timeline in the channel: one parent message per run, one reply per event.

Exactly once, in order, whatever the stream and Slack do. Before posting events the publisher
claims them in its own item (`attempting_through`); a publisher that stopped after posting but
before recording finds its posts again by their message metadata (execution id + seq) and
does not post them twice. Slack's 429/5xx are retried in-process by the client; past that the
record fails and the stream delivers it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bot.slack import render
from bot.slack.approvals import approvers_text
from bot.store.model import EventKind, Execution, TimelineEvent
from bot.store.slack_posts import Posts, PostsStore

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from bot.catalog import Catalog

logger = logging.getLogger(__name__)
METADATA_TYPE = "runbook_timeline_event"
_DECISIONS = {EventKind.APPROVAL_GRANTED, EventKind.APPROVAL_REJECTED, EventKind.APPROVAL_EXPIRED}


class PublisherConflict(RuntimeError):
    """Another publisher moved this execution's posts first; the record is retried."""


@dataclass(frozen=True)
class PublishResult:
    posted: int
    recovered: int  # found already in the thread after an earlier publisher stopped
    parent_updated: bool


class Publisher:
    def __init__(
        self,
        slack: WebClient,
        posts: PostsStore,
        catalog: Callable[[], Catalog],
    ) -> None:
        self.slack = slack
        self.posts = posts
        self.catalog = catalog

    def publish(self, ex: Execution) -> PublishResult:
        state = self.posts.get(ex.execution_id)
        recovered = 0
        if not state.parent_ts:
            state = self._ensure_parent(ex, state)
        pending = [e for e in ex.timeline if e.seq > state.posted_seq]
        posted = 0
        if pending:
            through = pending[-1].seq
            claimed = self.posts.save(
                ex.execution_id,
                state,
                replace(state, attempting_through=max(through, state.attempting_through)),
            )
            if claimed is None:
                raise PublisherConflict(f"posts of {ex.execution_id} moved while publishing; retrying")
            already = self._already_posted(ex, state) if state.attempting_through > state.posted_seq else {}
            approval_ts = dict(state.approval_ts)
            for event in pending:
                ts = already.get(event.seq)
                if ts:
                    recovered += 1
                else:
                    ts = self._post_event(ex, claimed, event)
                    posted += 1
                if event.kind is EventKind.APPROVAL_REQUESTED and event.step_id:
                    approval_ts[event.step_id] = ts
                if event.kind in _DECISIONS and event.step_id in approval_ts:
                    self._close_approval(ex, claimed.channel, approval_ts[event.step_id], event)
            done = self.posts.save(
                ex.execution_id, claimed, replace(claimed, posted_seq=through, approval_ts=approval_ts)
            )
            if done is None:
                raise PublisherConflict(f"posts of {ex.execution_id} moved while publishing; retrying")
            state = done
        return PublishResult(posted, recovered, self._refresh_parent(ex, state))

    # -- the parent message ----------------------------------------------------------------

    def _ensure_parent(self, ex: Execution, state: Posts) -> Posts:
        channel = ex.channel or self._default_channel(ex)
        ts = self._find_parent(ex, channel) if state.parent_attempted else ""
        if not ts:
            attempted = self.posts.save(
                ex.execution_id, state, replace(state, channel=channel, parent_attempted=True)
            )
            if attempted is None:
                raise PublisherConflict(f"parent of {ex.execution_id} is being posted by another publisher")
            state = attempted
            message = self._parent(ex)
            answer = self.slack.chat_postMessage(
                channel=channel,
                text=message.text,
                blocks=message.blocks,
                unfurl_links=False,
                metadata={
                    "event_type": METADATA_TYPE,
                    "event_payload": {"execution_id": ex.execution_id, "seq": 0},
                },
            )
            ts = str(answer["ts"])
        with_parent = replace(
            state,
            channel=channel,
            parent_ts=ts,
            parent_attempted=True,
            parent_digest=_digest(self._parent(ex)),
        )
        if not self.posts.save(ex.execution_id, state, with_parent):
            raise PublisherConflict(f"parent of {ex.execution_id} was recorded by another publisher")
        return with_parent

    def _find_parent(self, ex: Execution, channel: str) -> str:
        """The parent we may have posted before a crash: only messages since the run began, every page."""
        oldest = f"{ex.created_at_ms / 1000 - 60:.6f}"  # a minute of slack for clock skew
        cursor = ""
        while True:
            history = self.slack.conversations_history(
                channel=channel, oldest=oldest, limit=200, include_all_metadata=True, cursor=cursor or None
            )
            for message in history.get("messages") or []:
                if _event_key(message) == (ex.execution_id, 0):
                    return str(message["ts"])
            cursor = ((history.get("response_metadata") or {}).get("next_cursor")) or ""
            if not history.get("has_more") or not cursor:
                return ""

    def _refresh_parent(self, ex: Execution, state: Posts) -> bool:
        message = self._parent(ex)
        digest = _digest(message)
        if digest == state.parent_digest:
            return False
        self.slack.chat_update(
            channel=state.channel, ts=state.parent_ts, text=message.text, blocks=message.blocks
        )
        # Best effort: a lost digest only costs one more chat.update next time.
        self.posts.save(ex.execution_id, state, replace(state, parent_digest=digest))
        return True

    def _parent(self, ex: Execution) -> render.Message:
        catalog = self.catalog()
        runbook = catalog.runbooks.get(ex.runbook)
        partner = catalog.partners.get(ex.partner)
        # As of the run's last transition, not the wall clock: the same state renders the same
        # message, so a redelivered record costs no chat.update (elapsed and SLA move with each step).
        return render.parent_message(
            ex,
            runbook.title if runbook else ex.runbook,
            partner.display_name if partner else ex.partner,
            ex.updated_at_ms,
        )

    # -- events ----------------------------------------------------------------------------

    def _post_event(self, ex: Execution, state: Posts, event: TimelineEvent) -> str:
        message = self._event_message(ex, event)
        answer = self.slack.chat_postMessage(
            channel=state.channel,
            thread_ts=state.parent_ts,
            text=message.text,
            blocks=message.blocks,
            unfurl_links=False,
            reply_broadcast=event.kind is EventKind.APPROVAL_REQUESTED,
            metadata={
                "event_type": METADATA_TYPE,
                "event_payload": {"execution_id": ex.execution_id, "seq": event.seq},
            },
        )
        return str(answer["ts"])

    def _event_message(self, ex: Execution, event: TimelineEvent) -> render.Message:
        catalog = self.catalog()
        runbook = catalog.runbooks.get(ex.runbook)
        step_title = ""
        if runbook and event.step_id:
            try:
                step = runbook.step(event.step_id)
                step_title = step.title or step.id
            except KeyError:
                step_title = event.step_id
        if event.kind is EventKind.APPROVAL_REQUESTED:
            partner = catalog.partners.get(ex.partner)
            approval = ex.approval
            effect = approval.effect if approval and approval.step_id == event.step_id else event.summary
            expires = int(event.figures.get("expires_at_ms") or (approval.expires_at_ms if approval else 0))
            return render.approval_request(
                ex,
                event.step_id,
                step_title,
                effect,
                partner.approvers if partner else (),
                expires,
                version=_approval_version(ex, event),
            )
        entry = catalog.errors.entry(event.error_code) if event.error_code else None
        return render.timeline_reply(ex, event, entry.meaning if entry else None, step_title=step_title)

    def _close_approval(self, ex: Execution, channel: str, ts: str, event: TimelineEvent) -> None:
        catalog = self.catalog()
        runbook = catalog.runbooks.get(ex.runbook)
        title = event.step_id
        if runbook:
            with contextlib.suppress(KeyError):
                title = runbook.step(event.step_id).title or event.step_id
        decision = {EventKind.APPROVAL_GRANTED: "approved", EventKind.APPROVAL_REJECTED: "rejected"}.get(
            event.kind, "expired"
        )
        effect = ex.approval.effect if ex.approval and ex.approval.step_id == event.step_id else ""
        message = render.approval_decided(
            ex, event.step_id, title, effect, decision, event.actor, event.at_ms
        )
        self.slack.chat_update(channel=channel, ts=ts, text=message.text, blocks=message.blocks)

    def _already_posted(self, ex: Execution, state: Posts) -> dict[int, str]:
        """Events of this run already in the thread (by metadata), found after a publisher stopped."""
        found: dict[int, str] = {}
        cursor = None
        while True:
            page = self.slack.conversations_replies(
                channel=state.channel,
                ts=state.parent_ts,
                include_all_metadata=True,
                limit=200,
                **({"cursor": cursor} if cursor else {}),
            )
            for message in page.get("messages") or []:
                key = _event_key(message)
                if key and key[0] == ex.execution_id and key[1] > 0:
                    found[key[1]] = str(message["ts"])
            cursor = ((page.get("response_metadata") or {}).get("next_cursor")) or None
            if not cursor:
                return found

    def _default_channel(self, ex: Execution) -> str:
        partner = self.catalog().partners.get(ex.partner)
        if partner and partner.channels:
            return partner.channels[0]
        raise ValueError(f"execution {ex.execution_id} has no channel and its partner names none")


def _approval_version(ex: Execution, event: TimelineEvent) -> int:
    """The run's version while it waits on this approval (what the buttons must carry)."""
    if ex.approval and ex.approval.step_id == event.step_id and not ex.approval.decision:
        return ex.version
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
