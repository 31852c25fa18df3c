"""The engine's cost per step: 200 runs of a 5-step runbook of cheap steps through the local pipeline.

Prints write requests to the bot's table per step, stream records and worker invocations per
step, and time per run; then the same with every stream record delivered twice, where the
targets are zero extra writes and zero extra executed steps. Asserts nothing.

    python bench/engine.py            # 200 runs each way
    python bench/engine.py --short    # CI: 20 runs each way
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIVE = """\
# yaml-language-server: $schema=./schema.json
name: bench-five
title: Five cheap steps
description: The engine benchmark's runbook.
steps:
  - {id: one, action: bench.count}
  - {id: two, action: bench.count}
  - {id: three, action: bench.count}
  - {id: four, action: bench.count}
  - {id: five, action: bench.count}
"""
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}


class CountAction:
    """A cheap step whose executions we count."""

    name = "bench.count"
    outputs: tuple[str, ...] = ("n",)
    always_high_risk = False
    inputs_schema: dict[str, Any] = {"type": "object"}

    def __init__(self) -> None:
        self.executed = 0
        self.lock = threading.Lock()

    def run(self, ctx: Any, inputs: dict[str, Any]) -> Any:
        from bot.actions.base import StepOutcome

        with self.lock:
            self.executed += 1
        return StepOutcome.done(f"{ctx.step_id} done", {"n": 1})

    def describe_effect(self, ctx: Any, inputs: dict[str, Any]) -> str:
        return "counts"


class WriteCounter:
    def __init__(self, table: str) -> None:
        self.table = table
        self.writes = 0
        self.lock = threading.Lock()

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        if model.name in WRITES and (params.get("TableName") == self.table or self._in_transaction(params)):
            with self.lock:
                self.writes += 1

    def _in_transaction(self, params: dict[str, Any]) -> bool:
        return any(self.table in str(item) for item in params.get("TransactItems", []))


def run(runs: int, duplicate: bool, action: CountAction) -> dict[str, float]:
    from bot.local.pipeline import LocalPipeline, PipelineOptions

    runbooks = Path(tempfile.mkdtemp(prefix="bench-runbooks-"))
    shutil.copytree(
        ROOT / "runbooks", runbooks, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".compiled")
    )
    (runbooks / "bench-five.yaml").write_text(FIVE)
    options = PipelineOptions(
        publisher=False,
        sweep_interval=5.0,
        duplicate_rate=1.0 if duplicate else 0.0,
        max_duplicates=1,
        seed=1,
        extra_env={"RUNBOOKS_DIR": str(runbooks)},
    )
    action.executed = 0
    with LocalPipeline(options) as pipeline:
        from bot.handlers import sweeper, worker

        counter = WriteCounter(pipeline.tables["ExecutionsTable"])
        # The worker's and sweeper's clients (one per sandbox); the ingress's start write is not a step's.
        for function in (worker, sweeper):
            function.SANDBOX().store.client.meta.events.register("before-parameter-build.dynamodb", counter)
        started = time.perf_counter()
        ids = []
        for i in range(runs):
            response = pipeline.command("bench-five partner-acme", trigger_id=f"bench-{duplicate}-{i}")
            ids.append(response["body"].split("execution `")[1].split("`")[0])
        latencies = []
        for execution_id in ids:
            ex = pipeline.wait_for(execution_id, {"SUCCEEDED", "FAILED"}, 120)
            latencies.append((ex.updated_at_ms - ex.created_at_ms) / 1000)
        elapsed = time.perf_counter() - started
        pipeline.drain(30)
        worker = pipeline.deliveries["WorkerFunction"].stats
        steps = runs * 5
        failed = sum(1 for i in ids if pipeline.execution(i).status.value != "SUCCEEDED")
    shutil.rmtree(runbooks, ignore_errors=True)
    return {
        "runs": runs,
        "failed": failed,
        "steps": steps,
        "executed_steps": action.executed,
        "writes_per_step": counter.writes / steps,
        "records_per_step": worker.records_delivered / steps,
        "batches_retried": worker.batches_failed,
        "invocations_per_step": worker.invocations / steps,
        "seconds_per_run": elapsed / runs,
        "median_run_seconds": statistics.median(latencies),
        "writes": counter.writes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    runs = 20 if args.short else args.runs

    from bot.actions.base import REGISTRY, register

    action = CountAction()
    if "bench.count" not in REGISTRY:
        register(action)
    once = run(runs, duplicate=False, action=action)
    twice = run(runs, duplicate=True, action=action)
    print(f"engine: {runs} runs of a 5-step runbook through the local pipeline (moto, real stream records)")
    print(f"{'':34}{'once':>10}{'twice':>10}  target")
    rows = [
        ("write requests per step", "writes_per_step", "{:.2f}", "≤ 2"),
        ("records delivered per step (+retries)", "records_per_step", "{:.2f}", ""),
        ("batches failed and retried", "batches_retried", "{:.0f}", ""),
        ("worker invocations per step", "invocations_per_step", "{:.2f}", ""),
        ("steps executed", "executed_steps", "{:.0f}", f"= {runs * 5}"),
        ("runs not SUCCEEDED", "failed", "{:.0f}", "0"),
        ("time per run (s, runs overlap)", "seconds_per_run", "{:.3f}", ""),
        ("median start→end of a run (s)", "median_run_seconds", "{:.2f}", ""),
    ]
    for label, key, fmt, target in rows:
        print(f"{label:34}{fmt.format(once[key]):>10}{fmt.format(twice[key]):>10}  {target}")
    print(
        f"duplicate delivery added {twice['writes'] - once['writes']:+.0f} writes and "
        f"{twice['executed_steps'] - once['executed_steps']:+.0f} executed steps (target: +0, +0)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
