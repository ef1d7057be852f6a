"""NodeFileWriterEffect: the ONEX effect node of the file-writer service."""

from .node import NodeFileWriterEffect

__all__ = ["NodeFileWriterEffect"]
