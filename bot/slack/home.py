"""App Home: what waits for a person, what their partners are running, and what they ran.

`home_view` is pure: a `HomeData` in, a `home` view out (Slack's limit of 100 blocks kept). The
approval rows carry the channel's own buttons (action ids `approve`, `approve_comment`, `reject`
and the same value), so a click from the home goes through exactly the channel's checks
(bot.slack.approvals.refusal): partner approvers only, never the requester, quorum, version.

`HomeService` gathers the data (history-index queries, never a scan) and says whose homes a
run's change concerns; `HomePublisher` runs in the timeline consumer, claims a request item
(bot.store.homes) and publishes with `views.publish`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.engine.durations import format_duration
from bot.slack import render
from bot.slack.approvals import ButtonValue, is_approver, refusal
from bot.store.model import Execution, Status
from bot.text import escape

if TYPE_CHECKING:
    from bot.catalog import Catalog
    from bot.store.executions import ExecutionStore
    from bot.store.history import HistoryStore, RunSummary
    from bot.store.homes import HomeRequest, HomeStore

logger = logging.getLogger(__name__)

START_ACTION = "home_start"  # the home's *Start a runbook* button: opens the start form
MAX_VIEW_BLOCKS = 100  # Slack: a home view holds at most 100 blocks
MAX_WAITING = 10  # approval rows (3 blocks each)
MAX_ACTIVE = 15
MAX_RECENT = 10
MAX_PARTNERS = 10  # partners whose active runs one home reads (one Query each)
ACTIVE_SINCE_MS = 7 * 24 * 3600 * 1000  # a run active longer than this is shown by /runbook history
RECENT_SINCE_MS = 30 * 24 * 3600 * 1000
# Homes one run's change may republish: views.publish is tier 4 (100+ a minute for the app), and
# one change must leave room for the next runs and for people opening their homes.
FANOUT_CAP = 20
GROUP_CACHE_SECONDS = 300  # usergroups.users.list is tier 2 (20 a minute): expansions are cached
GROUP_RETRY_SECONDS = 30  # ... and a group Slack did not expand is asked again this soon
ACTIVE = frozenset({Status.PENDING, Status.RUNNING, Status.AWAITING_APPROVAL, Status.APPROVED})


@dataclass(frozen=True)
class Waiting:
    """A run whose pending approval this person may decide now."""

    ex: Execution
    step_title: str
    approvers: tuple[str, ...]


@dataclass(frozen=True)
class HomeData:
    user_id: str
    waiting: tuple[Waiting, ...] = ()
    active: tuple[Execution, ...] = ()
    recent: tuple[RunSummary, ...] = ()
    partners: tuple[str, ...] = ()  # display names of the partners they approve for
    note: str = ""  # what could not be read (a group Slack did not expand, a query that failed)


def home_view(data: HomeData, now_ms: int) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        render.header("Runbook Bot"),
        {
            "type": "actions",
            "block_id": "home_start",
            "elements": [
                {
                    "type": "button",
                    "action_id": START_ACTION,
                    "style": "primary",
                    "text": {"type": "plain_text", "text": "Start a runbook", "emoji": True},
                    "value": "start",
                }
            ],
        },
        render.context(
            f"Updated {render.date_token(now_ms, '{time}')}"
            + (
                f" · You approve for {escape(', '.join(data.partners))}"
                if data.partners
                else " · No partner names you as an approver"
            )
            + (f" · {escape(data.note)}" if data.note else "")
        ),
        {"type": "divider"},
        render.header(f"Waiting for your approval ({len(data.waiting)})"),
    ]
    if not data.waiting:
        blocks.append(render.section("Nothing waits for you."))
    for waiting in data.waiting[:MAX_WAITING]:
        blocks += _approval_row(waiting)
    blocks += [{"type": "divider"}, render.header(f"Your partners' active runs ({len(data.active)})")]
    if not data.active:
        blocks.append(render.section("No active runs."))
    blocks += [_active_row(ex, now_ms) for ex in data.active[:MAX_ACTIVE]]
    blocks += [{"type": "divider"}, render.header("Your recent runs")]
    if not data.recent:
        blocks.append(render.section("You have not started a run in the last 30 days."))
    blocks += [_recent_row(run) for run in data.recent[:MAX_RECENT]]
    return {
        "type": "home",
        "callback_id": "runbook_home",
        "blocks": blocks[:MAX_VIEW_BLOCKS],
    }


def _approval_row(waiting: Waiting) -> list[dict[str, Any]]:
    """The channel's approval message for this run (its buttons and values), with block ids made
    unique in the home (several runs may wait at a step of the same name)."""
    ex = waiting.ex
    assert ex.approval is not None
    message = render.approval_request(
        ex,
        ex.approval.step_id,
        waiting.step_title,
        ex.approval.effect,
        waiting.approvers,
        ex.approval.expires_at_ms,
        version=ex.version,
        approval=ex.approval,
    )
    rows = []
    for i, original in enumerate(message.blocks):
        block = dict(original)
        if block.get("type") == "actions":
            block["block_id"] = f"home_approval:{ex.execution_id}"
        elif block.get("type") == "section":
            text = dict(block["text"])
            where = f" in <#{ex.channel}>" if ex.channel else ""
            text["text"] = render._clip(
                f"*{escape(ex.runbook)}* for *{escape(ex.partner)}*{where}, started by "
                f"{render.mention(ex.requested_by)}\n{text['text']}",
                render.SECTION_LIMIT,
            )
            block["text"] = text
        rows.append({**block, "block_id": block.get("block_id") or f"home_{i}:{ex.execution_id}"[:255]})
    return rows


def _active_row(ex: Execution, now_ms: int) -> dict[str, Any]:
    done, total = render.steps_done(ex)
    drill = f"`{escape(render.drill_label(ex))}` " if ex.drill else ""
    plan = "plan of " if ex.kind == "plan" else ""
    where = f" in <#{ex.channel}>" if ex.channel else ""
    return render.section(
        f"{drill}{render.STATUS_EMOJI[ex.status]} *{plan}{escape(ex.runbook)}* for *{escape(ex.partner)}*"
        f"{where} · `{ex.execution_id}`\n{render.progress_bar(done, total)} · {ex.status.value}"
        f" · {render.sla_text(ex, now_ms)} · started by {render.mention(ex.requested_by)} "
        f"{render.date_token(ex.created_at_ms, '{time}')}"
    )


def _recent_row(run: RunSummary) -> dict[str, Any]:
    drill = "`[DRILL]` " if run.drill else ""
    plan = "plan of " if run.kind == "plan" else ""
    took = format_duration(run.duration_ms / 1000)
    error = f" ({escape(run.error_code)})" if run.error_code else ""
    return render.section(
        f"{drill}{render.STATUS_EMOJI[run.status]} *{plan}{escape(run.runbook)}* for *{escape(run.partner)}* · "
        f"`{run.execution_id}` · {run.status.value}{error} · {took} · "
        f"{render.date_token(run.created_at_ms)}"
    )


# -- gathering ------------------------------------------------------------------------------------


class GroupCache:
    """Members of Slack user groups, for the timeline consumer: `usergroups.users.list` is tier 2,
    so each group is read at most once per GROUP_CACHE_SECONDS per sandbox. A group that cannot be
    read counts as empty until the next read (the home says so)."""

    def __init__(
        self, read: Callable[[str], Iterable[str]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.read = read
        self.clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()
        self.unread: set[str] = set()

    def __call__(self, group_id: str) -> frozenset[str]:
        with self._lock:
            hit = self._cache.get(group_id)
            if hit and self.clock() - hit[0] < GROUP_CACHE_SECONDS:
                return hit[1]
        try:
            members = frozenset(self.read(group_id))
            self.unread.discard(group_id)
        except Exception:
            logger.warning("could not read user group members", extra={"group": group_id})
            self.unread.add(group_id)
            with self._lock:  # asked again after GROUP_RETRY_SECONDS, not a whole cache window
                self._cache[group_id] = (
                    self.clock() - GROUP_CACHE_SECONDS + GROUP_RETRY_SECONDS,
                    frozenset(),
                )
            return frozenset()
        with self._lock:
            self._cache[group_id] = (self.clock(), members)
        return members


class HomeService:
    def __init__(
        self,
        store: ExecutionStore,
        history: HistoryStore,
        catalog: Callable[[], Catalog],
        members_of: Callable[[str], frozenset[str]],
    ) -> None:
        self.store = store
        self.history = history
        self.catalog = catalog
        self.members_of = members_of

    def gather(self, user_id: str, now_ms: int) -> HomeData:
        """Everything `user_id`'s home shows, read now."""
        catalog = self.catalog()
        theirs = [p for p in catalog.partners.values() if is_approver(user_id, p, self.members_of)]
        theirs.sort(key=lambda p: p.name)
        recent = self.history.requester_runs(user_id, now_ms - RECENT_SINCE_MS, limit=MAX_RECENT).runs
        names = [p.name for p in theirs] + sorted({r.partner for r in recent} - {p.name for p in theirs})
        active: list[Execution] = []
        for name in names[:MAX_PARTNERS]:
            if len(active) >= 2 * MAX_ACTIVE:  # reads stay bounded however many partners
                break
            active += self._active_runs(name, now_ms)
        active.sort(key=lambda ex: ex.created_at_ms, reverse=True)
        waiting = tuple(w for w in (self._waiting(user_id, ex, now_ms) for ex in active) if w is not None)
        unread: set[str] = getattr(self.members_of, "unread", set())
        note = "Slack did not say who is in some approver groups; try again later" if unread else ""
        return HomeData(
            user_id,
            waiting,
            tuple(active),
            recent,
            tuple(p.display_name for p in theirs),
            note,
        )

    def _active_runs(self, partner: str, now_ms: int) -> list[Execution]:
        from bot.store.history import HistoryFilter

        page = self.history.partner_runs(
            HistoryFilter(partner, now_ms - ACTIVE_SINCE_MS, statuses=ACTIVE), limit=MAX_ACTIVE
        )
        runs = [self.store.get(run.execution_id, consistent=False) for run in page.runs]
        return [ex for ex in runs if ex is not None and ex.status in ACTIVE]

    def _waiting(self, user_id: str, ex: Execution, now_ms: int) -> Waiting | None:
        if ex.status is not Status.AWAITING_APPROVAL or ex.approval is None:
            return None
        catalog = self.catalog()
        partner = catalog.partners.get(ex.partner)
        runbook = catalog.runbooks.get(ex.runbook)
        if partner is None or runbook is None:
            return None
        button = ButtonValue(ex.execution_id, ex.approval.step_id, ex.version)
        if refusal(user_id, ex, button, partner, self.members_of, now_ms) is not None:
            return None
        title = ex.approval.step_id
        try:
            step = runbook.step(ex.approval.step_id)
            title = step.label
        except KeyError:
            pass
        return Waiting(ex, title, partner.approvers)

    def concerned(self, ex: Execution) -> list[str]:
        """Whose homes a change of `ex` may change: its requester, then the partner's approvers
        (user groups expanded), at most FANOUT_CAP people."""
        partner = self.catalog().partners.get(ex.partner)
        people: list[str] = [ex.requested_by] if ex.requested_by.startswith(("U", "W")) else []
        if partner is not None:
            people += [a for a in partner.approvers if not a.startswith("S")]
            for group in (a for a in partner.approvers if a.startswith("S")):
                people += sorted(self.members_of(group))
        return list(dict.fromkeys(people))[:FANOUT_CAP]


def home_changed(old: Execution | None, new: Execution) -> bool:
    """A change that changes what someone can do from their home: a run starts or stops waiting
    for an approval, an approval gains a vote, or the run ends."""
    if old is None:
        return new.status is Status.AWAITING_APPROVAL
    if old.status is not new.status:
        return (
            Status.AWAITING_APPROVAL in {old.status, new.status}
            or new.status.terminal
            or new.status is Status.APPROVED
        )
    if new.status is Status.AWAITING_APPROVAL and old.approval and new.approval:
        return (
            len(old.approval.votes) != len(new.approval.votes) or old.approval.step_id != new.approval.step_id
        )
    return False


class HomePublisher:
    """Publishes requested homes (views.publish) and asks for refreshes, in the timeline consumer."""

    def __init__(
        self,
        slack: Any,
        homes: HomeStore,
        service: HomeService,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.slack = slack
        self.homes = homes
        self.service = service
        self.clock = clock

    @classmethod
    def beside(cls, publisher: Any) -> HomePublisher:
        """A home publisher on the timeline publisher's Slack client and table."""
        from bot.store.executions import ExecutionStore
        from bot.store.history import HistoryStore
        from bot.store.homes import HomeStore

        client, table = publisher.posts.client, publisher.posts.table
        slack = publisher.slack
        members = GroupCache(lambda group: slack.usergroups_users_list(usergroup=group).get("users") or [])
        return cls(
            slack,
            HomeStore(client, table),
            HomeService(
                ExecutionStore(client, table), HistoryStore(client, table), publisher.catalog, members
            ),
            clock=publisher.clock,
        )

    def handle(self, request: HomeRequest) -> str:
        """`published`, `failed` (Slack refused; recorded on the item), `waiting` (Slack answered
        429: the sweeper asks again after its Retry-After), or `skipped` (another consumer has it,
        or it was published already)."""
        from slack_sdk.errors import SlackApiError

        from bot.slack.client import error_code, rate_limited
        from bot.store.homes import FAILED, PUBLISHED

        now_ms = int(self.clock() * 1000)
        view_hash = self.homes.claim(request, now_ms)
        if view_hash is None:
            return "skipped"
        view = home_view(self.service.gather(request.user_id, now_ms), now_ms)
        budget = getattr(self.slack, "retry_budget", None)
        try:
            # With the hash of the home last published: two consumers publishing one person's home
            # at once (a refresh and an opening, on two shards) never leave the older view last.
            # A 429 is not waited out in the stream lane (the budget allows no pause).
            with budget.capped(0) if budget is not None else contextlib.nullcontext():
                answer = self.slack.views_publish(user_id=request.user_id, view=view, hash=view_hash or None)
        except SlackApiError as error:
            code = error_code(error)
            status = error.response.status_code if error.response is not None else 0
            wait = rate_limited(error)
            if wait is not None:  # the sweeper asks for it again after Slack's Retry-After
                self.homes.defer(request, int(self.clock() * 1000 + wait * 1000))
                return "waiting"
            if status >= 500:
                self.homes.release(request)  # Slack busy: the record's retry claims it again
                raise
            self.homes.finish(request, FAILED, code, now_ms)
            if code == "hash_conflict":  # another publish landed since the claim: publish anew
                self.homes.refresh(request.user_id, request.execution_id, int(self.clock() * 1000))
                return "conflict"
            logger.warning("home not published", extra={"user": request.user_id, "error": code})
            return "failed"
        self.homes.published(request.user_id, str((answer.get("view") or {}).get("hash") or ""))
        self.homes.finish(request, PUBLISHED, "", int(self.clock() * 1000))
        return "published"

    def refresh_for(self, old: Execution | None, new: Execution, skip: Iterable[str] = ()) -> set[str]:
        """Ask for the homes a run's change concerns to be republished (not those in `skip`, asked
        already in this batch). Returns who was considered: people who never opened their home,
        or whose request still waits, get no new request, and need none."""
        if not home_changed(old, new):
            return set()
        now_ms = int(self.clock() * 1000)
        people = [user for user in self.service.concerned(new) if user not in set(skip)]
        for user in people:
            self.homes.refresh(user, new.execution_id, now_ms)
        return set(people)
