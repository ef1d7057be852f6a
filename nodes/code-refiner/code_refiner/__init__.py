"""NodeCodeRefinerEffect: the ONEX effect node of the code-refiner service."""

from .node import NodeCodeRefinerEffect

__all__ = ["NodeCodeRefinerEffect"]
