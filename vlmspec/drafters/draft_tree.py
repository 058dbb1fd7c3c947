"""Drafting shapes of a feature drafter: the draft tree and the chain / static / dynamic strategies.

`DraftTree` holds the nodes of one `propose` as tensors (token, parent, log path score,
depth, an ancestor matrix, each node's predicted hidden state). `expand(nodes)` runs ONE
drafter forward over a whole level: masks and positions are built with tensor ops from
the ancestor matrix, with no per-node Python work.

    draft_chain    sampling: one token per level drawn from the warped draft distribution q
                   (greedy chains are the static tree of rank-0 paths)
    draft_static   the rank paths of a static tree, cut at the drafted depth
    draft_dynamic  EAGLE-2: per level, the top_k children of each of the top_k best frontier
                   nodes; finally the total_tokens best nodes by path score

The strategies talk to the drafter through a small surface: `cache`, `_fed_positions()`,
`_input_states`, `_layer_forward`, `_logits`, `_to_target_ids`, `_to_full_probs`,
`keep_drafting` and `context` (sampling, generator).
"""

from __future__ import annotations

import torch

from ..core.cache import cache_length
from ..core.drafter import Draft
from ..core.sampling import warp_probs
from ..core.tree import node_depths, static_tree


class DraftTree:
    """Draft nodes of one `propose`, and the drafter forwards over them on top of its cache.

    Node i: tokens[i] (draft-vocab id), parents[i] (-1 = child of the root), scores[i] (log
    path probability, float64), depths[i] (1 = child of the root), ancestors[i, j] (node j is
    a proper ancestor of node i), outputs[i] (its predicted hidden state [H], once expanded).
    """

    def __init__(self, drafter, root_hidden: torch.Tensor, capacity: int = 16) -> None:
        self.drafter = drafter
        self.root_hidden = root_hidden  # [1, 1, H]
        self.committed_slots = cache_length(drafter.cache)  # cache entries before the draft nodes
        self.committed_positions = drafter._fed_positions()  # target positions they cover
        self.size = 0  # nodes added
        self.cached = 0  # nodes fed into the drafter's cache (in `_slots` order)
        device = root_hidden.device
        self._tokens = torch.empty(0, dtype=torch.long, device=device)
        self._parents = torch.empty(0, dtype=torch.long, device=device)
        self._scores = torch.empty(0, dtype=torch.float64, device=device)
        self._depths = torch.empty(0, dtype=torch.long, device=device)
        self._ancestors = torch.empty(0, 0, dtype=torch.bool, device=device)
        self._outputs = root_hidden.new_empty(0, root_hidden.shape[-1])
        self._slots = torch.empty(0, dtype=torch.long, device=device)  # node held at each draft cache position
        self._grow(capacity)

    # the filled parts
    tokens = property(lambda self: self._tokens[: self.size])  # [n]
    parents = property(lambda self: self._parents[: self.size])  # [n]
    scores = property(lambda self: self._scores[: self.size])  # [n]
    depths = property(lambda self: self._depths[: self.size])  # [n]
    outputs = property(lambda self: self._outputs[: self.size])  # [n, H] (rows of unexpanded nodes unset)

    def _grow(self, needed: int) -> None:
        capacity = self._tokens.shape[0]
        if needed <= capacity:
            return
        new = max(needed, 2 * capacity)
        extra = new - capacity

        def pad(t: torch.Tensor, *shape) -> torch.Tensor:
            return torch.cat([t, t.new_zeros(extra, *shape)])

        self._tokens, self._parents = pad(self._tokens), pad(self._parents)
        self._scores, self._depths, self._slots = pad(self._scores), pad(self._depths), pad(self._slots)
        self._outputs = pad(self._outputs, self._outputs.shape[-1])
        ancestors = self._ancestors.new_zeros(new, new)
        ancestors[:capacity, :capacity] = self._ancestors
        self._ancestors = ancestors

    def add(self, tokens, parents, scores) -> torch.Tensor:
        """Append nodes: tokens [m] (draft-vocab ids), parents [m] (-1 = the root), scores [m].
        Scalars are accepted for one node. Returns their node ids [m]."""
        device = self._tokens.device
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=device).reshape(-1)
        parents = torch.as_tensor(parents, dtype=torch.long, device=device).reshape(-1).expand_as(tokens)
        scores = torch.as_tensor(scores, dtype=torch.float64, device=device).reshape(-1).expand_as(tokens)
        m, first = tokens.shape[0], self.size
        self._grow(first + m)
        ids = torch.arange(first, first + m, device=device)  # [m]
        has_parent = parents >= 0  # [m]
        parent_rows = parents.clamp_min(0)
        self._tokens[ids], self._parents[ids], self._scores[ids] = tokens, parents, scores
        self._depths[ids] = torch.where(has_parent, self._depths[parent_rows] + 1, 1)
        rows = self._ancestors[parent_rows] & has_parent[:, None]  # [m, capacity] the parent's ancestors
        rows[ids[has_parent] - first, parents[has_parent]] = True  # ... and the parent itself
        self._ancestors[ids] = rows
        self.size = first + m
        return ids

    def hidden_of_parent(self, node: int) -> torch.Tensor:
        """[H] the state that produced `node`'s distribution: its parent's output (the root's for depth 1)."""
        parent = int(self._parents[node])
        return self.root_hidden[0, 0] if parent < 0 else self._outputs[parent]

    def expand(self, nodes) -> torch.Tensor:
        """Feed `nodes` ([m] node ids, all at one depth) in one forward; returns their draft logits [m, V']."""
        drafter = self.drafter
        nodes = torch.as_tensor(nodes, dtype=torch.long, device=self._tokens.device).reshape(-1)
        m, cached, committed = nodes.shape[0], self.cached, self.committed_slots
        parents = self._parents[nodes]  # [m]
        parent_hidden = torch.where(
            (parents < 0)[:, None], self.root_hidden[0, 0], self._outputs[parents.clamp_min(0)]
        )[None]  # [1, m, H]
        token_ids = drafter._to_target_ids(self._tokens[nodes])[None]  # [1, m] target ids for the embedding
        positions = (self.committed_positions - 1 + self._depths[nodes])[None]  # [1, m]
        mask = torch.zeros(1, 1, m, committed + cached + m, dtype=torch.bool, device=nodes.device)
        mask[..., :committed] = True  # every committed position
        mask[0, 0, :, committed : committed + cached] = self._ancestors[nodes][:, self._slots[:cached]]
        mask[0, 0, :, committed + cached :] = torch.eye(m, dtype=torch.bool, device=nodes.device)  # itself
        inputs = drafter._input_states(token_ids, parent_hidden, positions)  # [1, m, H]
        outputs = drafter._layer_forward(inputs, positions, mask, drafter.cache)  # [1, m, H]
        self._slots[cached : cached + m] = nodes
        self.cached = cached + m
        self._outputs[nodes] = outputs[0].to(self._outputs.dtype)
        return drafter._logits(outputs[0]).float()  # [m, V']

    def draft(self, kept: torch.Tensor, chain: bool) -> Draft:
        """The Draft of the `kept` nodes ([n] ascending node ids: parents first), in target ids."""
        index = torch.full((self.size,), -1, dtype=torch.long, device=kept.device)
        index[kept] = torch.arange(kept.shape[0], device=kept.device)
        parents = self._parents[kept]  # [n]
        parents = torch.where(parents < 0, -1, index[parents.clamp_min(0)])
        tokens = self.drafter._to_target_ids(self._tokens[kept])  # [n]
        return Draft(tokens, None, None if chain else parents)


def draft_chain(drafter, root_hidden: torch.Tensor, root_logits: torch.Tensor, depth: int) -> Draft:
    """A chain of up to `depth` tokens: greedy = rank-0 path; sampling = drawn from q, probs returned."""
    sampling, generator = drafter.context.sampling, drafter.context.generator
    if sampling.greedy:
        return draft_static(drafter, root_hidden, root_logits, depth, paths=[[0] * d for d in range(1, depth + 1)])
    tree = DraftTree(drafter, root_hidden, capacity=depth)
    logits, node, probs = root_logits, -1, []
    for step in range(depth):
        q = warp_probs(logits, sampling)  # [V'] the draft distribution
        token = torch.multinomial(q, 1, generator=generator)  # [1]
        hidden = root_hidden[0, 0] if node < 0 else tree.outputs[node]  # [H] the state that gave `logits`
        node = int(tree.add(token, node, 0.0)[0])
        probs.append(q)
        if not drafter.keep_drafting(logits.softmax(-1), step + 1, hidden):
            break  # the acceptance gate ends the draft
        if step + 1 < depth:
            logits = tree.expand([node])[0]
    return Draft(drafter._to_target_ids(tree.tokens), drafter._to_full_probs(torch.stack(probs)), None)


def draft_static(drafter, root_hidden, root_logits, depth: int, paths=None) -> Draft:
    """The static tree `paths` (default: the drafter's config) cut at `depth`; one forward per level."""
    parents, ranks = static_tree(paths if paths is not None else drafter.config.static_paths)  # [N], [N]
    depths = node_depths(parents)  # [N], sorted: nodes come level by level
    keep = int((depths <= depth).sum())
    device = root_logits.device
    parents, ranks, depths = parents[:keep].to(device), ranks[:keep].to(device), depths[:keep].to(device)
    level_sizes = torch.bincount(depths, minlength=depth + 1).tolist() if keep else [0]
    wanted = min(int(ranks.max()) + 1, drafter.draft_vocab_size) if keep else 1
    tree = DraftTree(drafter, root_hidden, capacity=max(keep, 1))
    logits = root_logits[None]  # [1, V'] the distributions of the parents being expanded (the root first)
    row_of = torch.zeros(max(keep, 1), dtype=torch.long, device=device)  # parent node -> row of `logits`
    start = 0
    for level in range(1, len(level_sizes)):
        size = level_sizes[level]
        if size == 0:
            break
        nodes = torch.arange(start, start + size, device=device)
        start += size
        level_parents = parents[nodes]  # [size]
        if level > 1:
            expanded = torch.unique(level_parents)  # [e] sorted
            logits = tree.expand(expanded)  # [e, V']
            row_of[expanded] = torch.arange(expanded.shape[0], device=device)
            rows = row_of[level_parents]
        else:
            rows = torch.zeros_like(level_parents)
        candidates = logits.topk(wanted, dim=-1).indices  # [e, wanted] best first
        tree.add(candidates[rows, ranks[nodes]], level_parents, 0.0)  # node ids == nodes
        if paths is not None:  # a chain: one node per level; the gate may end it here
            if not drafter.keep_drafting(logits[-1].softmax(-1), level, tree.hidden_of_parent(int(nodes[0]))):
                break
    return tree.draft(torch.arange(tree.size, device=device), chain=paths is not None)


def draft_dynamic(drafter, root_hidden, root_logits, depth: int) -> Draft:
    """EAGLE-2's dynamic tree: expand the top_k best frontier nodes per level, keep total_tokens nodes."""
    top_k, total = drafter.config.top_k, drafter.config.total_tokens
    tree = DraftTree(drafter, root_hidden, capacity=top_k * (1 + top_k * max(depth - 1, 0)))
    values, ids = root_logits.log_softmax(-1).topk(top_k)  # [top_k]
    frontier = tree.add(ids, -1, values.double())  # [top_k] node ids
    for _ in range(depth - 1):
        logits = tree.expand(frontier)  # [f, V']
        values, ids = logits.log_softmax(-1).topk(top_k, dim=-1)  # [f, top_k]
        path_scores = (tree.scores[frontier][:, None] + values.double()).flatten()  # [f * top_k]
        children = tree.add(ids.flatten(), frontier.repeat_interleave(top_k), path_scores)
        best = torch.sort(path_scores, descending=True, stable=True).indices[:top_k]  # ties: creation order
        frontier = children[best].sort().values
    # Path scores never grow along a path, and a stable sort keeps parents before their equally
    # scored children: the kept set is closed under ancestors.
    kept = torch.sort(tree.scores, descending=True, stable=True).indices[:total].sort().values
    return tree.draft(kept, chain=False)


__all__ = ["DraftTree", "draft_chain", "draft_dynamic", "draft_static"]
