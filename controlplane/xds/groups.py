"""Which node group an Envoy belongs to (translators/groups.py says what a group gets)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from translators.groups import DEFAULT_GROUP, NodeGroup


class NodeGrouper:
    """Node → group name: the node's cluster (``--node-group-by cluster``, the default) or a
    string in its metadata (``metadata:KEY``), when that names a configured group; otherwise
    the default group, which gets every entry point."""

    def __init__(self, groups: Iterable[NodeGroup] = (), group_by: str = "cluster") -> None:
        self.names = frozenset(g.name for g in groups)
        self.group_by = group_by

    def __call__(self, node: Any) -> str:
        if not self.names:
            return DEFAULT_GROUP
        if self.group_by == "cluster":
            value = node.cluster
        else:
            entry = node.metadata.fields.get(self.group_by.removeprefix("metadata:"))
            is_str = entry is not None and entry.WhichOneof("kind") == "string_value"
            value = entry.string_value if is_str else ""
        return value if value in self.names else DEFAULT_GROUP
