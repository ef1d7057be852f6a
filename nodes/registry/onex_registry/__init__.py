"""NodeRegistryEffect: the ONEX effect node of the onex-registry service."""

from .node import NodeRegistryEffect

__all__ = ["NodeRegistryEffect"]
