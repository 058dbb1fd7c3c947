"""KV-cache bookkeeping over transformers' cache classes: length, rollback, keeping a tree path."""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch
from transformers import Cache


@lru_cache(maxsize=None)
def _cache_argument(forward) -> str:
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_kwargs(module: torch.nn.Module, cache: Cache | None) -> dict:
    """The keyword that hands `cache` to `module`'s forward: `cache` on transformers that renamed
    it (5.24+, where `past_key_values` only warns), `past_key_values` on earlier 5.x."""
    return {_cache_argument(type(module).forward): cache}


def cache_length(cache: Cache) -> int:
    """Number of positions held by the cache."""
    return cache.get_seq_length()


def truncate_cache(cache: Cache, length: int) -> None:
    """Drop every position at index >= `length` (in place)."""
    extra = cache.get_seq_length() - length
    if extra < 0:
        raise ValueError(f"cannot truncate a cache of {cache.get_seq_length()} positions to {length}")
    if extra:
        cache.crop(-extra)


def keep_positions(cache: Cache, prefix_len: int, rows: list[int]) -> None:
    """Keep the first `prefix_len` positions plus positions prefix_len + r for r in `rows` (ascending).

    After a tree step `rows` is the accepted path ([0] for the root plus node rows): a
    prefix of the new positions for chains (cheap truncation). For trees only the accepted
    rows move, in place, down to just after the prefix, and the rest is truncated: the
    prefix (the whole prompt, image tokens included) is never copied.
    """
    if rows != list(range(len(rows))):
        source = torch.tensor(rows) + prefix_len  # [len(rows)] positions of the accepted rows
        kept = slice(prefix_len, prefix_len + len(rows))  # where they go
        with torch.inference_mode():  # the cache's tensors were made by inference-mode forwards
            for layer in cache.layers:
                source = source.to(layer.keys.device)
                layer.keys[..., kept, :] = layer.keys.index_select(-2, source)  # [batch, heads, len(rows), head_dim]
                layer.values[..., kept, :] = layer.values.index_select(-2, source)
    truncate_cache(cache, prefix_len + len(rows))
