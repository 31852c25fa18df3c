"""Events as AWS delivers them to the non-HTTP functions, for the playground, tests and drills."""

from __future__ import annotations

import time
import uuid
from typing import Any


def alarm_state_change(
    alarm_name: str,
    state: str = "ALARM",
    *,
    region: str = "us-east-1",
    account: str = "123456789012",
    reason: str = "",
) -> dict[str, Any]:
    """EventBridge's `CloudWatch Alarm State Change` event for one alarm."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    previous = "OK" if state == "ALARM" else "ALARM"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": account,
        "time": now,
        "region": region,
        "resources": [f"arn:aws:cloudwatch:{region}:{account}:alarm:{alarm_name}"],
        "detail": {
            "alarmName": alarm_name,
            "state": {
                "value": state,
                "reason": reason
                or f"Threshold Crossed: 1 datapoint was greater than the threshold ({state})",
                "timestamp": now,
            },
            "previousState": {"value": previous, "timestamp": now},
            "configuration": {"description": f"{alarm_name} (local)", "metrics": []},
        },
    }
