"""NodePRDAnalyzerCompute: the ONEX compute node of the prd-analyzer service."""

from .node import NodePRDAnalyzerCompute

__all__ = ["NodePRDAnalyzerCompute"]
