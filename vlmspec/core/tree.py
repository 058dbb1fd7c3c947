"""Draft trees: shapes, attention masks, position ids and static tree specs.

A tree of n draft nodes hangs below the root (the pending token, which is the last
committed token and not yet in the target cache). `parents[i]` is the index of node i's
parent among the nodes, or -1 for a child of the root; parents come before children.
A chain of n tokens is the tree with parents [-1, 0, 1, ..., n - 2].

The target scores root + nodes in one forward: row 0 is the root, row i + 1 is node i.
Row r attends to the whole cache and to its ancestors (itself included); its position
id is cache_len + depth(r).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InputError


def chain_parents(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[n] parents of a chain: -1, 0, 1, ..., n - 2."""
    return torch.arange(-1, n - 1, device=device)


def is_chain(parents: torch.Tensor) -> bool:
    return bool((parents == torch.arange(-1, parents.shape[0] - 1, device=parents.device)).all())


def validate_parents(parents: torch.Tensor) -> None:
    if parents.dim() != 1:
        raise InputError(f"tree parents must be a 1-D tensor, got shape {tuple(parents.shape)}")
    index = torch.arange(parents.shape[0], device=parents.device)
    if bool(((parents < -1) | (parents >= index)).any()):
        raise InputError("tree parents must satisfy -1 <= parents[i] < i (parents listed before children)")


def node_depths(parents: torch.Tensor) -> torch.Tensor:
    """[n] depth of each node (children of the root have depth 1)."""
    depths = []
    for parent in parents.tolist():
        depths.append(1 if parent < 0 else depths[parent] + 1)
    return torch.tensor(depths, dtype=torch.long, device=parents.device)


def ancestor_matrix(parents: torch.Tensor) -> torch.Tensor:
    """[n + 1, n + 1] bool: row r may attend column c (c is r or an ancestor of r); index 0 is the root."""
    n = parents.shape[0]
    allowed = torch.zeros(n + 1, n + 1, dtype=torch.bool, device=parents.device)
    allowed[0, 0] = True
    for i, parent in enumerate(parents.tolist()):
        allowed[i + 1] = allowed[parent + 1]
        allowed[i + 1, i + 1] = True
    return allowed


def tree_attention(
    parents: torch.Tensor, cache_len: int, with_root: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """4-D bool mask [1, 1, rows, cache_len + rows] (True = attend) and position ids [1, rows].

    With the root (the pending token, not in the cache): rows = n + 1, root first.
    Without it (the root is already the cache's last position, as in a drafter's own
    cache): rows = n, each node attending to the cache and its node ancestors.
    """
    allowed = ancestor_matrix(parents)  # [n + 1, n + 1]
    depths = torch.cat([parents.new_zeros(1), node_depths(parents)])  # [n + 1]
    if not with_root:
        allowed, depths = allowed[1:, 1:], depths[1:] - 1
    rows = allowed.shape[0]
    mask = torch.ones(1, 1, rows, cache_len + rows, dtype=torch.bool, device=parents.device)
    mask[0, 0, :, cache_len:] = allowed
    return mask, (cache_len + depths)[None]


def children_of(parents: torch.Tensor) -> list[list[int]]:
    """children[r] = node indices whose parent row is r (row 0 = root, row i + 1 = node i)."""
    children: list[list[int]] = [[] for _ in range(parents.shape[0] + 1)]
    for i, parent in enumerate(parents.tolist()):
        children[parent + 1].append(i)
    return children


def path_to(parents: torch.Tensor, node: int) -> list[int]:
    """Node indices from the root's child down to `node` (empty for the root, node = -1)."""
    path = []
    while node >= 0:
        path.append(node)
        node = int(parents[node])
    return path[::-1]


def static_tree(paths: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A static tree from paths of candidate ranks, e.g. [[0], [1], [0, 0], [0, 1], [0, 0, 0]].

    Each path names a node by the rank (0 = most likely) of the candidate chosen at each
    depth. Returns (parents [n], ranks [n]) with nodes sorted by depth, every prefix present.
    """
    normalised = sorted({tuple(int(r) for r in p) for p in paths}, key=lambda p: (len(p), p))
    if not normalised or any(len(p) == 0 for p in normalised):
        raise InputError("a static tree needs at least one non-empty path, e.g. [[0], [0, 0], [1]]")
    known = set(normalised)
    for p in normalised:
        if any(r < 0 for r in p):
            raise InputError(f"tree path {list(p)} has a negative rank; ranks count from 0 (most likely)")
        if len(p) > 1 and p[:-1] not in known:
            raise InputError(f"tree path {list(p)} needs its prefix {list(p[:-1])} in the tree too")
    index = {p: i for i, p in enumerate(normalised)}
    parents = torch.tensor([index[p[:-1]] if len(p) > 1 else -1 for p in normalised], dtype=torch.long)
    ranks = torch.tensor([p[-1] for p in normalised], dtype=torch.long)
    return parents, ranks
