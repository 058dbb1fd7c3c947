"""KV-cache bookkeeping over transformers' cache classes: length and rollback."""

from __future__ import annotations

from transformers import Cache


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
