"""The AutoGen engine (`autogen-agentchat`): the only package of the service that imports
AutoGen."""

from .crew import FEATURES
from .crew import AutoGenEngine as Engine

__all__ = ["FEATURES", "Engine"]
