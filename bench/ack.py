"""The ack path as Lambda sees it: this project's ingress vs a tutorial-style Bolt app.

Cold: a fresh process per sample (interpreter, imports, init, first request), timed from spawn to
answer. Warm: 200 requests in one process, median and p99. Both apps run in the same run against
the same local DynamoDB (AWS DynamoDB Local by default, tables created from template.yaml) and a Slack stand-in that
adds 100 ms to every Web API call. Then approval clicks on our ingress (a user-group approver's
approve: membership lookup, conditional decision), cold and warm, and warm again with Slack
answering 429 (Retry-After: 2) to every Web API call; and `/runbook` alone, whose start form's
views.open must reach Slack within the trigger's 3 s; and `app_home_opened` (Events API: the
event's receipt and the home request written, no Slack call): Slack wants every answer within 3 s.
Prints figures and ratios; asserts nothing.

    python bench/ack.py            # 7 cold samples, 200 warm requests
    python bench/ack.py --short    # CI: proves it runs (2 cold samples, 20 warm requests)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

APPS = {
    "runbook-bot": "bot.handlers.ingress",
    "tutorial": "bench._tutorial_app",
}

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
if sys.argv[1] == "snapstart":  # as Lambda's SnapStart init: the module builds its world at import
    import os
    os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
mode, module_name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
import importlib
from bot.local.lambda_context import LambdaContext
from bot.local.slack_requests import http_api_event, signed_headers, slash_command_body, DEV_SIGNING_SECRET
module = importlib.import_module(module_name)
ctx = LambdaContext("IngressFunction", timeout_seconds=10)

def request(i):
    body = slash_command_body("throttle partner-acme", user_id="U0DEVONCALL", channel_id="C0ACMEOPS",
                              trigger_id=f"bench.{mode}.{i}.{time.time_ns()}")
    event = http_api_event(body, signed_headers(DEV_SIGNING_SECRET, body))
    started = time.perf_counter()
    response = module.handler(event, ctx)
    assert response["statusCode"] == 200, response
    return time.perf_counter() - started

def click(execution_id):
    from bot.local.slack_requests import block_actions_body
    value = json.dumps({"execution_id": execution_id, "step_id": "mitigate", "version": 3})
    body = block_actions_body("approve", value, user_id="U0ACMEONCALL", channel_id="C0ACMEOPS", message_ts="")
    event = http_api_event(body, signed_headers(DEV_SIGNING_SECRET, body))
    started = time.perf_counter()
    response = module.handler(event, ctx)
    assert response["statusCode"] == 200, response
    return time.perf_counter() - started

def form(trigger_id):
    body = slash_command_body("", user_id="U0DEVONCALL", channel_id="C0ACMEOPS", trigger_id=trigger_id)
    event = http_api_event(body, signed_headers(DEV_SIGNING_SECRET, body))
    started = time.time()
    response = module.handler(event, ctx)
    assert response["statusCode"] == 200 and not response.get("body"), response  # acked empty: it opened
    return {"trigger": trigger_id, "sent": started, "acked": time.time()}

def home(i):
    from bot.local.slack_requests import event_headers
    payload = {"type": "event_callback", "event_id": f"Ev{i}x{time.time_ns()}", "team_id": "T0LOCAL",
               "api_app_id": "A0RUNBOOKBOT", "event_time": int(time.time()),
               "event": {"type": "app_home_opened", "user": f"U0BENCH{i:04d}", "tab": "home",
                         "channel": "D0BENCH", "event_ts": f"{time.time():.6f}"}}
    body = json.dumps(payload)
    event = http_api_event(body, event_headers(DEV_SIGNING_SECRET, body))
    started = time.perf_counter()
    response = module.handler(event, ctx)
    assert response["statusCode"] == 200, response
    return time.perf_counter() - started

if mode == "home":
    first = home(0)
    print(json.dumps({"in_process": time.perf_counter() - t0, "cold": first,
                      "samples": [home(i) for i in range(1, count + 1)]}))
elif mode == "form":
    triggers = json.loads(sys.argv[4])
    first = form(triggers[0])
    first["spawned"] = time.time() - (time.perf_counter() - t0)  # when this interpreter started
    print(json.dumps({"cold": first, "samples": [form(t) for t in triggers[1:]]}))
elif mode == "click":
    ids = json.loads(sys.argv[4])
    first = click(ids[0])
    spawned = time.perf_counter() - t0
    print(json.dumps({"in_process": spawned, "cold": first, "samples": [click(i) for i in ids[1:]]}))
elif mode == "snapstart":
    import snapshot_restore_py
    init = time.perf_counter() - t0  # what the snapshot holds: imports, catalog, secret, Bolt app
    for func, args, kwargs in snapshot_restore_py.get_before_snapshot():
        func(*args, **kwargs)
    started = time.perf_counter()
    for func, args, kwargs in snapshot_restore_py.get_after_restore():
        func(*args, **kwargs)
    restore = time.perf_counter() - started
    print(json.dumps({"init": init, "restore_hooks": restore, "first": request(0)}))
elif mode == "cold":
    request(0)
    print(json.dumps({"in_process": time.perf_counter() - t0}))
else:
    request(0)  # the cold request is not a warm sample
    print(json.dumps({"samples": [request(i) for i in range(1, count + 1)]}))
"""


def run_child(mode: str, module: str, count: int, env: dict[str, str], *extra: str) -> tuple[float, dict]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, module, str(count), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{module} {mode} run failed:\n{out.stderr[-3000:]}")
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


def waiting_runs(client, table: str, count: int, tag: str) -> list[str]:
    """Runs parked on an approval of their `mitigate` step at version 3, as the worker leaves them."""
    from bot.catalog import load_catalog
    from bot.engine.starts import new_execution
    from bot.store.codec import to_item
    from bot.store.model import Approval, Status

    catalog = load_catalog()
    now = int(time.time() * 1000)
    ids = []
    for i in range(count):
        ex = new_execution(
            f"rb-{tag}{i:05d}"[:13].ljust(13, "a"),
            catalog.runbooks["throttle"],
            catalog.partners["partner-acme"],
            {"table": "orders"},
            requested_by="U0DEVONCALL",
            channel="C0ACMEOPS",
            now_ms=now,
            trigger="slash",
        )
        import dataclasses

        ex = dataclasses.replace(
            ex,
            status=Status.AWAITING_APPROVAL,
            version=3,
            cursor="mitigate",
            approval=Approval(
                "mitigate", now, now + 1_800_000, "changes acme-orders to on-demand", fingerprint="x"
            ),
        )
        client.put_item(TableName=table, Item=to_item(ex))
        ids.append(ex.execution_id)
    return ids


def start_form_figures(slack, env: dict[str, str], cold_n: int, warm_n: int) -> dict[str, float]:
    """`/runbook` alone: from the request to the form's views.open reaching Slack (the stand-in,
    +100 ms per call), and to the ack; cold (in process, from the interpreter's start) and warm.
    Slack's triggers live 3 s from the command; the child gets them up front, so the stand-in's own
    clock is set long here and the figures themselves show the call is inside 3 s. views.open is
    tier 4 (100 a minute): the bench stays under it."""
    slack.trigger_seconds = 600.0
    cold_open, cold_ack, warm_open, warm_ack = [], [], [], []
    per_child = 1 + warm_n // cold_n
    for _ in range(cold_n):
        triggers = [slack.trigger("U0DEVONCALL") for _ in range(per_child)]
        _, answer = run_child("form", APPS["runbook-bot"], 0, env, json.dumps(triggers))
        opened = {c.args.get("trigger_id"): c for c in slack.calls if c.method == "views.open"}
        for i, request in enumerate([answer["cold"], *answer["samples"]]):
            call = opened[request["trigger"]]
            assert call.ok, f"views.open failed: {call.error}"
            if i == 0:
                start = answer["cold"]["spawned"]
                cold_open.append((call.at - start) * 1000)
                cold_ack.append((request["acked"] - start) * 1000)
            else:
                warm_open.append((call.at - request["sent"]) * 1000)
                warm_ack.append((request["acked"] - request["sent"]) * 1000)
        time.sleep(60 * per_child / 100)  # tier 4: 100 views.open a minute
    slack.trigger_seconds = 3.0
    return {
        "cold_open_ms": statistics.median(cold_open),
        "cold_ack_ms": statistics.median(cold_ack),
        "open_p50": statistics.median(warm_open),
        "open_p99": percentile(warm_open, 99),
        "ack_p50": statistics.median(warm_ack),
        "ack_p99": percentile(warm_ack, 99),
    }


def warm_up_database(client, table: str, writes: int) -> None:
    """DynamoDB Local is a JVM: its first thousands of requests run slower while it warms up."""
    for i in range(writes):
        client.put_item(TableName=table, Item={"pk": {"S": f"WARMUP#{i}"}, "sk": {"S": "X"}})


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="CI mode: few samples, proves the bench runs")
    parser.add_argument("--cold", type=int, default=7)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument(
        "--engine",
        choices=["ddblocal", "moto"],
        default="ddblocal",
        help="local DynamoDB: AWS DynamoDB Local (default) or moto's server",
    )
    args = parser.parse_args()
    cold_n, warm_n = (2, 20) if args.short else (args.cold, args.warm)

    from bot.catalog import compile_catalog, runbooks_root
    from bot.local.aws import EmbeddedAws
    from bot.local.slack_api import SlackStandIn
    from bot.local.slack_requests import DEV_BOT_TOKEN, DEV_SIGNING_SECRET
    from bot.local.template import create_tables, load_template

    # As `sam build` ships it: runbooks validated at build time, checked by content hash at load.
    compile_catalog(runbooks_root())
    with EmbeddedAws(engine=args.engine) as aws:
        tables = create_tables(aws.client("dynamodb"), load_template(), lambda lid: f"bench-{lid}")
        slack = SlackStandIn(
            token=DEV_BOT_TOKEN, latency_ms=100, usergroups={"S0ACMEONCALL": ["U0ACMEONCALL"]}
        )
        slack_url = slack.start()
        try:
            env = {
                **os.environ,
                **aws.env(),
                "EXECUTIONS_TABLE": tables["ExecutionsTable"],
                "SLACK_API_URL": slack_url,
                "SLACK_SIGNING_SECRET": DEV_SIGNING_SECRET,
                "SLACK_BOT_TOKEN": DEV_BOT_TOKEN,
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                "PYTHONDONTWRITEBYTECODE": "",
            }
            warm_up_database(aws.client("dynamodb"), tables["ExecutionsTable"], 300 if args.short else 3000)
            results: dict[str, dict[str, float]] = {}
            for module in APPS.values():
                run_child("cold", module, 0, env)  # warm the OS file cache and .pyc files first
            # Interleave the apps so neither profits from the other warming the database engine.
            cold_runs: dict[str, list] = {name: [] for name in APPS}
            warm_runs: dict[str, list[float]] = {name: [] for name in APPS}
            for _ in range(cold_n):
                for name, module in APPS.items():
                    cold_runs[name].append(run_child("cold", module, 0, env))
            for _ in range(2):
                for name, module in APPS.items():
                    warm_runs[name] += run_child("warm", module, warm_n // 2, env)[1]["samples"]
            for name in APPS:
                cold = cold_runs[name]
                samples = [s * 1000 for s in warm_runs[name]]
                results[name] = {
                    "cold_wall_ms": statistics.median(w for w, _ in cold) * 1000,
                    "cold_in_process_ms": statistics.median(r["in_process"] for _, r in cold) * 1000,
                    "warm_median_ms": statistics.median(samples),
                    "warm_p99_ms": percentile(samples, 99),
                }
            slack_calls = len(slack.calls)
            snapstart = [run_child("snapstart", APPS["runbook-bot"], 0, env)[1] for _ in range(cold_n)]
            ddb = aws.client("dynamodb")
            clicks: dict[str, dict[str, float]] = {}
            for label, fail in (("clicks", False), ("clicks, Slack 429", True)):
                colds, warm = [], []
                for sample in range(cold_n):
                    ids = waiting_runs(
                        ddb, tables["ExecutionsTable"], 1 + warm_n // cold_n, f"{label[7:9]}{sample}"
                    )
                    if fail:
                        slack.fail("*", status=429, retry_after=2, times=None)
                    try:
                        wall, answer = run_child("click", APPS["runbook-bot"], 0, env, json.dumps(ids))
                    finally:
                        slack.clear_faults()
                    colds.append((wall, answer))
                    warm += answer["samples"]
                samples = [w * 1000 for w in warm]
                clicks[label] = {
                    "cold_start_ms": statistics.median(a["in_process"] for _, a in colds) * 1000,
                    "cold_click_ms": statistics.median(a["cold"] for _, a in colds) * 1000,
                    "p50": statistics.median(samples),
                    "p99": percentile(samples, 99),
                }
            form = start_form_figures(slack, env, cold_n, min(warm_n, 40))
            homes = [run_child("home", APPS["runbook-bot"], warm_n // cold_n, env)[1] for _ in range(cold_n)]
            home_samples = [w * 1000 for h in homes for w in h["samples"]]
        finally:
            slack.stop()

    ours, tutorial = results["runbook-bot"], results["tutorial"]
    print(
        f"ack path, {cold_n} cold samples (median) and {warm_n} warm requests; DynamoDB: {args.engine}; "
        "Slack stand-in +100 ms/call"
    )
    print(f"{'':24}{'runbook-bot':>14}{'tutorial':>12}{'ratio':>9}  target")
    rows = [
        ("cold, spawn→answer ms", "cold_wall_ms", "≤ 0.50×"),
        ("cold, in process ms", "cold_in_process_ms", ""),
        ("warm median ms", "warm_median_ms", "≤ 0.80×"),
        ("warm p99 ms", "warm_p99_ms", "< 25 ms"),
    ]
    for label, key, target in rows:
        ratio = ours[key] / tutorial[key] if tutorial[key] else float("nan")
        print(f"{label:24}{ours[key]:14.1f}{tutorial[key]:12.1f}{ratio:8.2f}×  {target}")
    print(f"Slack Web API calls made during the bench: {slack_calls} (the tutorial app's auth.test at init)")
    init, hooks, first = (
        statistics.median(s[k] for s in snapstart) * 1000 for k in ("init", "restore_hooks", "first")
    )
    print(
        f"SnapStart, simulated in process (median of {cold_n}): init {init:.1f} ms goes into the snapshot; "
        f"a restored sandbox runs its restore hooks in {hooks:.1f} ms (new client, the secret read again, "
        f"the app rebuilt) and answers its first command in {first:.1f} ms, against {ours['cold_in_process_ms']:.1f} ms "
        "for a cold start without it (Lambda's own restore of the snapshot is not measurable here)"
    )
    print("approval clicks on runbook-bot's ingress (Slack's limit: 3,000 ms for every answer)")
    print(f"{'':24}{'cold, in process':>18}{'of it, click':>14}{'warm p50':>10}{'warm p99':>10}")
    for label, row in clicks.items():
        print(
            f"{label:24}{row['cold_start_ms']:16.1f}ms{row['cold_click_ms']:12.1f}ms"
            f"{row['p50']:8.1f}ms{row['p99']:8.1f}ms"
        )
    print("the start form (`/runbook` alone): request → views.open at Slack (+100 ms) → ack; limit 3,000 ms")
    print(f"{'':24}{'cold, in process':>18}{'warm p50':>10}{'warm p99':>10}")
    print(
        f"{'views.open reached Slack':24}{form['cold_open_ms']:16.1f}ms{form['open_p50']:8.1f}ms{form['open_p99']:8.1f}ms"
    )
    print(f"{'ack':24}{form['cold_ack_ms']:16.1f}ms{form['ack_p50']:8.1f}ms{form['ack_p99']:8.1f}ms")
    print("App Home (`app_home_opened`): event receipt + home request written → ack; limit 3,000 ms")
    print(f"{'':24}{'cold, in process':>18}{'of it, event':>14}{'warm p50':>10}{'warm p99':>10}")
    print(
        f"{'app_home_opened ack':24}{statistics.median(h['in_process'] for h in homes) * 1000:16.1f}ms"
        f"{statistics.median(h['cold'] for h in homes) * 1000:12.1f}ms"
        f"{statistics.median(home_samples):8.1f}ms{percentile(home_samples, 99):8.1f}ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
