"""NodeIntelligenceGathererEffect: the ONEX effect node of the intelligence-gatherer service."""

from .node import NodeIntelligenceGathererEffect

__all__ = ["NodeIntelligenceGathererEffect"]
