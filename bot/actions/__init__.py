"""Every action kind, registered on import. Runbooks name them in `action:`."""

from bot.actions import cloudwatch, core, dynamodb, replay
from bot.actions.base import REGISTRY

__all__ = ["REGISTRY", "cloudwatch", "core", "dynamodb", "replay"]
