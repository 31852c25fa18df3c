"""What the action benchmarks share: moto in-process, the bot's table from template.yaml, and a
driver that runs one step the way the executor does (progress items, engine checkpoints, crashes).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")


class Crash(BaseException):
    """The worker's sandbox dies (a BaseException: nothing in the action may catch it)."""


def executions_store() -> Any:
    """The bot's executions table (from template.yaml) on the active moto mock."""
    import boto3

    from bot.local.template import create_tables, load_template
    from bot.store.executions import ExecutionStore

    client = boto3.client("dynamodb")
    tables = create_tables(client, load_template(), lambda logical: f"bench-{logical}")
    os.environ["EXECUTIONS_TABLE"] = tables["ExecutionsTable"]
    return ExecutionStore(client, tables["ExecutionsTable"])


def drive_step(
    action: Any,
    inputs: dict[str, Any],
    context: Callable[..., Any],
    store: Any,
    execution_id: str,
    step_id: str,
) -> tuple[Any, int]:
    """Run one step to its end as the executor would: each invocation starts from the newer of
    the progress item and the engine's last committed checkpoint. Returns (outcome, crashes)."""
    committed: dict[str, Any] | None = None
    crashes = 0
    while True:
        checkpoint = store.progress(execution_id, step_id) or committed
        ctx = context(
            checkpoint=checkpoint,
            save_progress=lambda state: store.save_progress(
                execution_id, step_id, state, int(time.time() * 1000)
            ),
        )
        try:
            outcome = action.run(ctx, inputs)
        except Crash:
            crashes += 1
            continue
        if outcome.status == "checkpoint":
            committed = outcome.checkpoint
            continue
        return outcome, crashes


def figure(label: str, value: str, target: str = "") -> None:
    print(f"  {label:44}{value:>16}  {target}")
