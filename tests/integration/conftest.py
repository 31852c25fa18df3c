"""The whole local pipeline, once on moto and once on AWS DynamoDB Local."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.local.pipeline import LocalPipeline, PipelineOptions

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
