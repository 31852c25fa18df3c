"""`dynamodb.set_capacity`'s effect says how risky it is: on-demand on a large table is critical."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from bot.actions.base import ActionContext, planned_effect
from bot.actions.dynamodb import LARGE_TABLE_BYTES, SetCapacity, capacity_risk
from bot.catalog import load_catalog
from bot.partners.model import CapacityLimits

LIMITS = CapacityLimits(max_read_units=4000, max_write_units=2000)
ON_DEMAND = {"billing_mode": "PAY_PER_REQUEST", "read_units": 0, "write_units": 0}


def provisioned(read: int, write: int) -> dict[str, Any]:
    return {"billing_mode": "PROVISIONED", "read_units": read, "write_units": write}


@pytest.mark.parametrize(
    ("size", "current", "target", "restore", "risk"),
    [
        (1024, provisioned(100, 100), ON_DEMAND, False, "high"),  # small and far below the ceiling
        (LARGE_TABLE_BYTES, provisioned(100, 100), ON_DEMAND, False, "critical"),  # 100 GiB stored
        (1024, provisioned(100, 1000), ON_DEMAND, False, "critical"),  # half the partner's write ceiling
        (1024, provisioned(2000, 10), ON_DEMAND, False, "critical"),  # half the read ceiling
        (LARGE_TABLE_BYTES, provisioned(100, 100), provisioned(200, 200), False, "high"),  # stays capped
        (LARGE_TABLE_BYTES, provisioned(100, 100), ON_DEMAND, True, "high"),  # a rollback to before
        (LARGE_TABLE_BYTES, ON_DEMAND, provisioned(100, 100), False, "high"),  # back under a ceiling
    ],
)
def test_on_demand_for_a_large_provisioned_table_is_critical(size, current, target, restore, risk):
    table = {"TableSizeBytes": size}
    assert capacity_risk(table, current, target, LIMITS, restore=restore) == risk


def test_without_a_ceiling_only_the_size_makes_it_critical():
    unlimited = CapacityLimits(max_read_units=0, max_write_units=0)
    assert (
        capacity_risk({"TableSizeBytes": 1}, provisioned(40_000, 40_000), ON_DEMAND, unlimited, restore=False)
        == "high"
    )


class Session:
    def __init__(self, ddb: Any) -> None:
        self.ddb = ddb

    def client(self, service: str) -> Any:
        return self.ddb


def test_the_effect_the_approvers_see_says_critical_and_why():
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    partner = load_catalog().partners["partner-acme"]
    ctx = ActionContext("rb-x", "mitigate", 1, "k", partner, Session(ddb), {}, None)  # type: ignore[arg-type]
    with Stubber(ddb) as stub:
        stub.add_response(
            "describe_table",
            {
                "Table": {
                    "TableName": "acme-orders",
                    "TableStatus": "ACTIVE",
                    "TableSizeBytes": 2 * LARGE_TABLE_BYTES,
                    "ProvisionedThroughput": {"ReadCapacityUnits": 100, "WriteCapacityUnits": 100},
                }
            },
        )
        effect = planned_effect(SetCapacity(), ctx, {"table": "acme-orders", "mode": "on-demand"})
    assert effect.risk == "critical" and effect.changes
    assert "critical: a large table leaves the partner's capacity ceiling" in effect.text
