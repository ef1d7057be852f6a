"""NodeCodeGeneratorEffect: the ONEX effect node of the code-generator service."""

from .node import NodeCodeGeneratorEffect

__all__ = ["NodeCodeGeneratorEffect"]
