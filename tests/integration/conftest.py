"""The whole local pipeline, once on moto and once on AWS DynamoDB Local; and the way test modules
start their own pipeline on a copy of the runbooks with partner-acme changed for them."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from bot.local.pipeline import LocalPipeline, PipelineOptions

REPO = Path(__file__).resolve().parents[2]
ENGINES = [
    pytest.param("moto", marks=pytest.mark.integration),
    pytest.param("ddblocal", marks=[pytest.mark.integration, pytest.mark.ddblocal]),
]


@pytest.fixture(scope="module", params=ENGINES)
def pipeline(request: pytest.FixtureRequest) -> Iterator[LocalPipeline]:
    import boto3

    from bot.demo import seed_demo

    with LocalPipeline(PipelineOptions(engine=request.param, sweep_interval=0.3)) as running:
        seed_demo(boto3.session.Session())
        yield running


RunbooksCopy = Callable[..., Path]


@pytest.fixture(scope="session")
def runbooks_copy(tmp_path_factory: pytest.TempPathFactory) -> RunbooksCopy:
    """`runbooks_copy(acme=..., files=...)`: a fresh copy of the repo's runbooks (without compiled
    caches) for one pipeline, `acme` appended to partners/partner-acme.yaml (partner-file keys such
    as `approvals: {high: 2}`), and `files` (path in the runbooks directory -> text) written."""

    def copy(*, acme: str = "", files: Mapping[str, str] | None = None) -> Path:
        runbooks = tmp_path_factory.mktemp("runbooks")
        shutil.copytree(
            REPO / "runbooks", runbooks, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".compiled")
        )
        if acme:
            partner = runbooks / "partners" / "partner-acme.yaml"
            partner.write_text(partner.read_text() + acme.rstrip("\n") + "\n")
        for name, text in (files or {}).items():
            (runbooks / name).write_text(text)
        return runbooks

    return copy


@pytest.fixture(scope="module")
def acme_pipeline(runbooks_copy: RunbooksCopy) -> Iterator[Callable[..., LocalPipeline]]:
    """`acme_pipeline(acme, seed=True)`: the local pipeline on moto (sweeper every 0.3 s) over a
    copy of the runbooks whose partner-acme.yaml has `acme` appended, with the demo's tables and
    data seeded unless `seed=False` (a module that seeds per test). Stopped with the module."""
    with contextlib.ExitStack() as running:

        def start(acme: str, *, seed: bool = True) -> LocalPipeline:
            runbooks = runbooks_copy(acme=acme)
            options = PipelineOptions(
                engine="moto", sweep_interval=0.3, extra_env={"RUNBOOKS_DIR": str(runbooks)}
            )
            started = running.enter_context(LocalPipeline(options))
            if seed:
                import boto3

                from bot.demo import seed_demo

                seed_demo(boto3.session.Session())
            return started

        yield start
