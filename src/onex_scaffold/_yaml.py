"""YAML from people and language models: the safe loader, with alias expansion bounded.

``yaml.safe_load`` builds no Python objects, but it expands aliases: a few hundred bytes of
nested aliases (the "billion laughs") stand for hundreds of millions of values, which every
later walk over the data (validation, ``repr``, JSON) pays for. :func:`load_untrusted_yaml`
measures the document as it would be expanded before constructing it, and refuses it beyond
:data:`MAX_EXPANDED_NODES`.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from onex_scaffold._exceptions import InvalidInputError

__all__ = ["MAX_EXPANDED_NODES", "load_untrusted_yaml"]

#: Most values (scalars, lists, mappings, keys) a document may stand for once its aliases are
#: expanded; a parsed PRD has a few hundred.
MAX_EXPANDED_NODES: Final = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int], limit: int) -> int:
    """How many nodes ``node`` stands for with aliases expanded (capped just above limit)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _expanded_size(child, sizes, limit)
            if total > limit:
                break
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            total += _expanded_size(key, sizes, limit) + _expanded_size(value, sizes, limit)
            if total > limit:
                break
    total = min(total, limit + 1)
    sizes[id(node)] = total
    return total


def load_untrusted_yaml(text: str, *, limit: int = MAX_EXPANDED_NODES) -> Any:
    """``yaml.safe_load`` that refuses documents expanding to more than ``limit`` values.

    Raises :class:`~onex_scaffold.InvalidInputError` for such a document (or one nested
    too deeply to read) and ``yaml.YAMLError`` for text that is not YAML.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            size = _expanded_size(root, {}, limit)
        except RecursionError as error:
            raise InvalidInputError("the YAML document is nested too deeply to read") from error
        if size > limit:
            raise InvalidInputError(
                f"the YAML document expands to more than {limit} values through its aliases "
                "(&anchor/*alias); write the values out, or use JSON"
            )
        return loader.construct_document(root)
    finally:
        loader.dispose()
