"""The embedded AWS answers what the actions call, as AWS would, and says what is missing."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from bot.local import aws


def test_contributor_insights_are_disabled_on_a_table_that_never_enabled_them(moto_server, server_table):
    ddb = moto_server.client("dynamodb")

    answer = ddb.describe_contributor_insights(TableName=server_table)

    assert answer["TableName"] == server_table
    assert answer["ContributorInsightsStatus"] == "DISABLED"
    assert not answer.get("ContributorInsightsRuleList")
    with pytest.raises(ClientError) as missing:
        ddb.describe_contributor_insights(TableName="no-such-table")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_a_missing_java_or_dynamodb_local_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(aws.shutil, "which", lambda name: None)
    with pytest.raises(aws.MissingDependency, match=r"java is not on PATH: .*--engine moto"):
        aws.check_dependencies("ddblocal")
    aws.check_dependencies("moto")  # moto needs no java

    monkeypatch.setattr(aws.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(aws, "REPO", tmp_path)
    with pytest.raises(aws.MissingDependency, match=r"run `make ddblocal`"):
        aws.check_dependencies("ddblocal")
