"""NodeContractBuilderCompute: the ONEX compute node of the contract-builder service."""

from .node import NodeContractBuilderCompute

__all__ = ["NodeContractBuilderCompute"]
