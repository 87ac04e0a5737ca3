"""Microsoft Agent Framework as the service's engine (`agent-framework-core`), for a lone
agent: the only package of the service that imports Agent Framework."""

from .engine import FEATURES, Engine

__all__ = ["FEATURES", "Engine"]
