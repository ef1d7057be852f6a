"""onex_scaffold: generate, update and run ONEX nodes on Kafka and Consul."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
