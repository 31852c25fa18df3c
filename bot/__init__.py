"""Runbook Bot: tested, versioned DynamoDB recovery runbooks as Slack actions."""

__version__ = "0.1.0"
