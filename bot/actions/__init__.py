"""Every action kind, registered on import. Runbooks name them in `action:`."""

from bot.actions import core
from bot.actions.base import REGISTRY

__all__ = ["REGISTRY", "core"]
