"""How an EAGLE-family drafter is built and drafts (`EagleConfig`), and its trimmed draft vocabulary.

`EagleConfig` is validated at construction (tree kind and shape, depth, EAGLE-3 feature layers);
`frequent_tokens` picks a VocabTrim draft vocabulary from target generations and
`validate_draft_vocab` checks one. The drafter itself lives in `eagle.py`.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch

from ..core.tree import static_tree
from ..errors import InputError

TREE_KINDS = ("chain", "static", "dynamic")
# tree="static" without static_paths: a top-3 / top-2 / top-1 tree of 10 nodes over 4 levels
DEFAULT_STATIC_PATHS = ((0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 0, 0, 0))


# ------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class EagleConfig:
    """How an EAGLE drafter is built and how it drafts. Validated at construction."""

    tree: str = "dynamic"  # "chain" | "static" | "dynamic"
    depth: int | None = None  # upper bound on draft depth; None = the loop's k alone decides
    top_k: int = 8  # dynamic tree: children per expanded node and frontier size per level
    total_tokens: int = 48  # dynamic tree: draft nodes kept (root excluded)
    static_paths: tuple[tuple[int, ...], ...] | None = None  # static tree: rank paths, e.g. ((0,), (1,), (0, 0))
    input_norm: bool = False  # LayerNorm over [embed ; hidden] before fc (SpecVLM's EagleVLM)
    fc_bias: bool = True
    trainable_head: bool = False  # with a draft vocabulary: train (and save) a copy of its head rows
    # Target features: None = the last layer after the final norm (EAGLE-1/2); (low, mid, high)
    # = transformers hidden_states indexes fused by fc(len * H -> H) (EAGLE-3, core/features.py);
    # "eagle3" = (2, num_layers // 2, num_layers - 3) of the target, resolved when the drafter is built.
    feature_layers: tuple[int, ...] | str | None = None

    def __post_init__(self) -> None:
        if self.tree not in TREE_KINDS:
            raise InputError(f"EagleConfig.tree must be one of {', '.join(TREE_KINDS)}; got {self.tree!r}.")
        if self.depth is not None and not (_is_int(self.depth) and self.depth >= 1):
            raise InputError(
                f"EagleConfig.depth must be an integer >= 1 or None (use the loop's k); got {self.depth!r}."
            )
        if not (_is_int(self.top_k) and self.top_k >= 1):
            raise InputError(f"EagleConfig.top_k must be an integer >= 1; got {self.top_k!r}.")
        if not (_is_int(self.total_tokens) and self.total_tokens >= 1):
            raise InputError(f"EagleConfig.total_tokens must be an integer >= 1; got {self.total_tokens!r}.")
        for name in ("input_norm", "fc_bias", "trainable_head"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"EagleConfig.{name} must be True or False; got {getattr(self, name)!r}.")
        object.__setattr__(self, "feature_layers", _normalise_layers(self.feature_layers))
        if self.tree == "static":
            paths = _normalise_paths(DEFAULT_STATIC_PATHS if self.static_paths is None else self.static_paths)
            static_tree(paths)  # raises InputError on negative ranks, missing prefixes, empty trees
            object.__setattr__(self, "static_paths", paths)
        elif self.static_paths is not None:
            raise InputError(f"static_paths only apply to tree='static'; this config has tree={self.tree!r}.")

    def draft_depth(self, k: int) -> int:
        """The depth actually drafted when the loop asks for k: min(k, depth)."""
        return max(0, k if self.depth is None else min(k, self.depth))

    def max_depth(self) -> int | None:
        """The deepest draft whatever k asks: `depth`, and for a static tree its longest path."""
        limits = [self.depth] if self.depth is not None else []
        if self.tree == "static":
            limits.append(max(len(p) for p in self.static_paths))
        return min(limits) if limits else None

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if self.static_paths is not None:
            data["static_paths"] = [list(p) for p in self.static_paths]
        if isinstance(self.feature_layers, tuple):
            data["feature_layers"] = list(self.feature_layers)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "EagleConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"Unknown EagleConfig fields {unknown}; known fields: {', '.join(sorted(known))}.")
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _normalise_layers(layers: Any) -> tuple[int, ...] | str | None:
    if layers is None or layers == "eagle3":
        return layers
    if isinstance(layers, (list, tuple)) and all(_is_int(i) and i >= 0 for i in layers):
        layers = tuple(int(i) for i in layers)
        if len(layers) >= 2 and all(a < b for a, b in zip(layers, layers[1:])):
            return layers
    raise InputError(
        "EagleConfig.feature_layers must be None (the last layer), \"eagle3\" (low / middle / high layers of the "
        f"target) or >= 2 increasing hidden_states indexes such as [2, 15, 27]; got {layers!r}."
    )


def _normalise_paths(paths: Any) -> tuple[tuple[int, ...], ...]:
    try:
        normalised = tuple(tuple(p) for p in paths)
    except TypeError:
        raise InputError(
            f"static tree paths must be a list of rank lists, e.g. [[0], [1], [0, 0]]; got {paths!r}."
        ) from None
    for p in normalised:
        if not all(_is_int(r) for r in p):
            raise InputError(f"static tree path {list(p)} must hold integer ranks (0 = most likely).")
    return normalised


# ----------------------------------------------------------- vocabulary trimming
def frequent_tokens(
    token_id_lists: Iterable[Sequence[int] | torch.Tensor], n: int, include: Iterable[int] = ()
) -> torch.Tensor:
    """[<= n] the n most frequent token ids over `token_id_lists` (e.g. target generations).

    Ids in `include` (e.g. EOS) are always kept and counted first. Ties are broken by the
    smaller id; fewer than n ids come back when fewer distinct ids occur.
    """
    if not _is_int(n) or n < 1:
        raise InputError(f"frequent_tokens needs n >= 1 (the draft vocabulary size); got {n!r}.")
    counts: collections.Counter = collections.Counter()
    for ids in token_id_lists:
        values = ids.flatten().tolist() if torch.is_tensor(ids) else list(ids)
        counts.update(int(v) for v in values)
    forced = list(dict.fromkeys(int(i) for i in include))
    ranked = forced + [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if t not in set(forced)]
    if not ranked:
        raise InputError("frequent_tokens got no token ids; pass the token id lists of target generations.")
    return torch.tensor(ranked[:n], dtype=torch.long)


def validate_draft_vocab(draft_vocab: Any, vocab_size: int) -> torch.Tensor:
    """[N] long tensor of distinct target ids in [0, vocab_size), or a clear InputError."""
    try:
        ids = torch.as_tensor(draft_vocab)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(
            f"draft_vocab must be a list or 1-D tensor of token ids; got {type(draft_vocab).__name__}."
        ) from None
    if ids.dim() != 1:
        raise InputError(f"draft_vocab must be 1-D (a list of token ids); got shape {tuple(ids.shape)}.")
    if ids.numel() == 0:
        raise InputError("draft_vocab is empty; pass at least one token id (e.g. frequent_tokens(generations, 4096)).")
    if ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
        raise InputError(f"draft_vocab must hold integer token ids; got dtype {ids.dtype}.")
    ids = ids.long()
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.numel():
        raise InputError(
            f"draft_vocab holds ids outside the target vocabulary [0, {vocab_size}): {bad[:5].tolist()}; "
            "use ids of the target's tokenizer."
        )
    unique, counts = torch.unique(ids, return_counts=True)
    if unique.numel() != ids.numel():
        raise InputError(f"draft_vocab lists ids more than once: {unique[counts > 1][:5].tolist()}; each id once.")
    return ids
