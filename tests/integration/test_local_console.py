"""`runbook-bot dev`, `serve` and `drill` as a person runs them: a quiet console (one line per
meaningful event, no third-party traceback), one-line errors for a busy port or a missing
dependency, and nothing left running after SIGINT or SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.local.aws import free_port
from bot.local.slack_requests import DEV_SIGNING_SECRET, signed_headers, slash_command_body

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# What a traceback or a raw library error looks like on a console.
NOISE = re.compile(r"Traceback|^\s+File \"|Error on request|NotImplementedError|^\S*Error: ", re.M)


class Running:
    """A `runbook-bot` subprocess whose merged stdout/stderr is read line by line as it comes."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", *args],
            cwd=REPO,
            env=env or dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, seen: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if seen(line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no line with {what} in {timeout}s; output:\n{self.output}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code


def send(port: int, text: str, user: str = "U0DEVONCALL") -> str:
    body = slash_command_body(text, user_id=user, channel_id="C0ACMEOPS")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/slack/events",
        data=body.encode(),
        headers=signed_headers(DEV_SIGNING_SECRET, body),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["text"])


def children_of(pid: int) -> set[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def test_a_dev_session_with_three_throttle_runs_prints_one_line_per_event_and_no_traceback(tmp_path):
    port = free_port()
    log = tmp_path / "dev.log"
    dev = Running("dev", "--port", str(port), "--log-file", str(log))
    try:
        dev.wait_for(lambda line: "Press Ctrl-C" in line, 120, "the ready banner")
        for _ in range(3):  # one at a time: a second throttle on acme-orders waits for the table lock
            execution_id = re.findall(r"rb-[a-z0-9]{10}", send(port, "throttle partner-acme"))[0]
            dev.wait_for(
                lambda line, x=execution_id: f"{x} approval requested mitigate" in line, 60, "approval"
            )
            send(port, f"cancel {execution_id}")
            dev.wait_for(lambda line, x=execution_id: f"{x} run cancelled" in line, 60, "the run's end")
        # The bot's own metrics, at once when asked, from the EMF lines its functions logged (the
        # worker records the last run's end just after its event printed: ask until it is in).
        ended = "  RunsEnded (runbook/status) 3: throttle/CANCELLED 3"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            asked_at = len(dev.lines)
            dev.proc.send_signal(signal.SIGUSR1)
            while time.monotonic() < deadline and not any(
                line.startswith("  StreamRecordAge ") for line in dev.lines[asked_at:]
            ):
                time.sleep(0.05)
            if ended in dev.lines[asked_at:]:
                break
    finally:
        code = dev.stop(signal.SIGTERM)
    output = dev.output
    assert code == 0, output
    assert not NOISE.search(output), output
    assert "  Bot metrics:        a summary every 30s when it changed, and at once on `kill -USR1" in output
    summary = dev.lines[asked_at:]
    head = next(i for i, line in enumerate(summary) if re.match(r"\d\d:\d\d:\d\d metrics since ", line))
    assert "  RunsStarted (runbook/trigger) 3: throttle/slash 3" in summary[head:], output
    assert ended in summary[head:], output
    assert any(line.startswith("  StepDuration (action) p50/p99/max ms: ") for line in summary), output
    # Stopping prints the last summary before "stopped".
    last = dev.lines[dev.lines.index("stopping …") :]
    assert any(re.match(r"\d\d:\d\d:\d\d metrics since ", line) for line in last), output
    assert "  RunsStarted (runbook/trigger) 3: throttle/slash 3" in last, output
    events = [line for line in dev.lines if re.match(r"\d\d:\d\d:\d\d rb-", line)]
    assert sum(" step finished hot_keys: " in line for line in events) == 3, output
    assert sum(" run started: " in line for line in events) == 3, output
    assert len(events) == len(set(events)), "an event printed twice"
    assert all(len(line) <= 240 for line in dev.lines)
    assert dev.lines[-1] == "stopped"
    # The details went to the log file, and moto answered Contributor Insights without an error.
    assert f"Logs:               {log}" in output
    assert log.exists() and "has not been implemented" not in log.read_text()


@pytest.mark.parametrize("command", ["dev", "serve"])
def test_a_busy_port_is_one_line_that_says_what_to_do(command, busy_port):
    env = {**os.environ, "SLACK_SIGNING_SECRET": "s", "SLACK_BOT_TOKEN": "xoxb-t"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", command, "--port", str(busy_port)],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"runbook-bot {command}: port {busy_port} on 127.0.0.1 is in use (another `runbook-bot dev` or "
        "`serve`?): stop that process, or choose another port with --port"
    )
    assert time.monotonic() - started < 20  # said before anything started


def test_dev_without_java_says_how_to_get_it_in_one_line(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no java on it
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "dev", "--engine", "ddblocal", "--port", str(free_port())],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runbook-bot dev: java is not on PATH"), done.stderr
    assert "--engine moto" in lines[0]


def test_dev_without_dynamodb_local_says_make_ddblocal(tmp_path, monkeypatch, capsys):
    from bot import cli
    from bot.local import aws

    monkeypatch.setattr(aws, "REPO", tmp_path)  # no node_modules here
    monkeypatch.setattr(aws.shutil, "which", lambda name: f"/usr/bin/{name}")

    code = cli.main(["dev", "--engine", "ddblocal", "--port", str(free_port())])

    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "run `make ddblocal`" in err


@pytest.mark.ddblocal
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_dev_and_its_dynamodb_local_jvm(signum, tmp_path):
    port = free_port()
    dev = Running(
        "dev", "--engine", "ddblocal", "--no-seed", "--port", str(port), "--log-file", str(tmp_path / "l")
    )
    try:
        dev.wait_for(lambda line: "Press Ctrl-C" in line, 120, "the ready banner")
        children = children_of(dev.proc.pid)
        jvms = {pid for pid in children if "DynamoDBLocal.jar" in Path(f"/proc/{pid}/cmdline").read_text()}
        assert jvms, f"no DynamoDB Local JVM among {children}"
    finally:
        code = dev.stop(signum)
    assert code == 0, dev.output
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in jvms):
        time.sleep(0.1)
    assert not any(alive(pid) for pid in jvms), "DynamoDB Local outlived runbook-bot dev"
    assert dev.lines[-1] == "stopped" and not NOISE.search(dev.output), dev.output


def test_a_drill_prints_its_progress_event_by_event_then_the_verdict(tmp_path):
    drill = Running("drill", "throttle", "partner-acme", "--log-file", str(tmp_path / "drill.log"))
    code = drill.proc.wait(timeout=240)
    drill._reader.join(timeout=10)
    output = drill.output
    assert code == 0, output
    assert not NOISE.search(output), output
    progress = [line for line in drill.lines if re.match(r"\d\d:\d\d:\d\d rb-[a-z0-9]{10} \[drill\] ", line)]
    kinds = [line.split("[drill] ", 1)[1].split(":")[0] for line in progress]
    assert kinds[0] == "run started"
    assert "step finished hot_keys" in kinds and "approval granted mitigate" in kinds
    assert kinds[-1] == "run succeeded"
    verdict = next(i for i, line in enumerate(drill.lines) if line.startswith("drill PASSED"))
    assert drill.lines.index(progress[-1]) < verdict
