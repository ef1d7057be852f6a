"""NodeValidatorCompute: the ONEX compute node of the validator service."""

from .node import NodeValidatorCompute

__all__ = ["NodeValidatorCompute"]
