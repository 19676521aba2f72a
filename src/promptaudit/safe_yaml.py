"""YAML read as data only: ``yaml.safe_load`` with duplicate keys refused, YAML 1.2 floats,
dates kept as text and a bound on what aliases may expand to.

Audit specs (:mod:`promptaudit.spec`), gate policies and term suites are read with
:func:`safe_load_bounded`; it imports nothing of promptaudit, so each of them can.
"""

from __future__ import annotations

import re

import yaml

__all__ = ["safe_load_bounded", "BoundedYamlError", "MAX_SPEC_NODES"]


class BoundedYamlError(yaml.YAMLError):
    """A document :func:`safe_load_bounded` refuses; its message is one line."""


class _DuplicateKeyError(BoundedYamlError):
    """A mapping that names the same key twice (YAML itself keeps the last silently)."""


class _ScalarError(BoundedYamlError):
    """A scalar an explicit tag cannot construct (``!!int abc``): a bare ValueError in PyYAML."""


class _ExpansionError(BoundedYamlError):
    """A document whose aliases expand past :data:`MAX_SPEC_NODES` nodes (an alias bomb)."""


#: Most YAML nodes a spec may expand to once aliases are followed (each alias counts its
#: whole target again): a "billion laughs" document is refused before it is built.
MAX_SPEC_NODES = 100_000

#: YAML 1.2 floats: ``3e-2`` and ``1E5`` are numbers (PyYAML's YAML 1.1 rule wants ``3.0e-2``
#: and reads ``3e-2`` as the string "3e-2").
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def _expanded_size(root) -> int:
    """Number of nodes ``root`` expands to with every alias followed (no recursion)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[object, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            sizes[key] = 1
            continue
        if children_done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in children)
            sizes[key] = min(total, MAX_SPEC_NODES + 1)
            continue
        if key in on_path:
            raise _ExpansionError("a YAML alias refers to itself; recursive documents are refused")
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise _ExpansionError(
                    "a YAML alias refers to itself; recursive documents are refused"
                )
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def safe_load_bounded(text: str):
    """``yaml.safe_load`` with duplicate keys refused, YAML 1.2 floats and an expansion bound.

    Raises
    ------
    yaml.YAMLError
        On a syntax error, a duplicate key, or aliases that expand past
        :data:`MAX_SPEC_NODES` nodes.
    """
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node)
        if size > MAX_SPEC_NODES:
            raise _ExpansionError(
                f"the YAML expands to more than {MAX_SPEC_NODES} values once its aliases (*name) "
                "are followed; a spec this large is refused (an alias bomb?)"
            )
        try:
            return loader.construct_document(node)
        except (ValueError, TypeError, OverflowError) as exc:  # `!!int abc`, `!!float x`
            raise _ScalarError(
                f"a value YAML cannot read ({' '.join(str(exc).split())[:120]}); check the "
                "explicit tags (!!int, !!float, ...) in the spec"
            ) from None
    finally:
        loader.dispose()


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise _DuplicateKeyError(
                        f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                        f"(first at line {seen[key]}); each key may appear once per mapping"
                    )
                seen[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: let SafeLoader report it
                break
        return super().construct_mapping(node, deep=deep)


# Date-like scalars stay text: PyYAML's timestamp resolver turns `2026-11-28` into a date
# and raises a bare ValueError on `2026-02-30`, even under a key nobody reads. Date
# fields are checked where the schema has them (AuditInfoSpec).
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
# ... and so does an explicit `!!timestamp` tag.
_UniqueKeyLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node)
)
