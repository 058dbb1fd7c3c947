"""Batched target operations: several sequences share one forward, each accepting its own count.

The batch KV cache is kept left-padded: after every step each sequence's kept positions
(its prompt and accepted tokens) are gathered to the right end of the cache and the rest
is masked out, so ragged acceptance costs one gather per step. `merge` joins two batches
(left-padding the shorter cache), so new sequences can enter a running batch. Each forward gets a 4-D
bool mask [batch, 1, rows, cache + rows] (padding hidden, tree/causal structure among
the new rows) and per-sequence position ids, so every sequence computes exactly what
it would compute alone. Finished sequences leave the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .core.cache import cache_kwargs
from .core.features import select_features
from .core.masks import model_mask
from .core.tree import chain_parents, tree_attention
from .target import Target, TargetState, check_finite, image_spans


@dataclass
class BatchState:
    cache: DynamicCache  # [active, heads, cache_len, head_dim] per layer, left-padded
    valid: torch.Tensor  # [active, cache_len] bool: real (not padding) positions
    next_position: torch.Tensor  # [active] position id of each sequence's next token
    active: list[int]  # key of each row still in the batch
    views: dict[int, TargetState]  # per key: what a drafter may look at (no cache)


class BatchTarget:
    """Batched prefill / forward / keep on top of a `Target`."""

    def __init__(self, target: Target) -> None:
        self.target = target

    @torch.inference_mode()
    def prefill(self, samples: list[dict], need_hidden: bool = False, keys: list[int] | None = None,
                feature_layers: tuple[int, ...] | None = None) -> tuple[BatchState, torch.Tensor]:
        """`samples`: per-sequence processor outputs, named by `keys` (default 0..n-1) in the state.
        Returns the state and first-token logits [batch, vocab]."""
        model = self.target.model
        device = self.target.device
        lengths = [s["input_ids"].shape[1] for s in samples]
        width = max(lengths)
        pad_id = self.target.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long, device=device)
        valid = torch.zeros((len(samples), width), dtype=torch.bool, device=device)
        features_per_sample: list[list[torch.Tensor]] = []
        for row, (sample, length) in enumerate(zip(samples, lengths)):
            input_ids[row, width - length :] = sample["input_ids"][0]
            valid[row, width - length :] = True
            encoder_inputs = {k: v for k, v in sample.items() if k not in ("input_ids", "attention_mask")}
            if encoder_inputs.get("pixel_values") is not None:
                encoded = model.get_image_features(**encoder_inputs, return_dict=True)
                features_per_sample.append(list(encoded.pooler_output))
            else:
                features_per_sample.append([])
        all_features = [f for per_sample in features_per_sample for f in per_sample]
        position_ids = (valid.long().cumsum(-1) - 1).clamp_min(0)  # [batch, width]
        kwargs = {}
        if all_features:
            kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=all_features)}
        cache = DynamicCache(config=model.config.get_text_config())
        out = model(
            input_ids=input_ids,
            attention_mask=valid.long(),
            position_ids=position_ids,
            **cache_kwargs(model, cache),
            use_cache=True,
            logits_to_keep=1,
            output_hidden_states=need_hidden,
            **kwargs,
        )
        keys = list(range(len(samples))) if keys is None else list(keys)
        states = select_features(out.hidden_states, feature_layers) if need_hidden else None  # [batch, width, F]
        views = {}
        for row, (key, sample, length, features) in enumerate(zip(keys, samples, lengths, features_per_sample)):
            ids = sample["input_ids"]  # [1, prompt_len]
            hidden = states[row : row + 1, width - length :] if need_hidden else None
            spans = image_spans(ids[0], self.target.image_token_id, [f.shape[0] for f in features])
            views[key] = TargetState(None, ids, sample, features, spans, hidden)
        state = BatchState(cache, valid, valid.sum(-1), keys, views)
        logits = out.logits[:, -1]  # [batch, vocab]
        check_finite(logits)
        return state, logits

    @torch.inference_mode()
    def forward(
        self, state: BatchState, candidates: list[torch.Tensor], parents: list[torch.Tensor | None],
        need_hidden: bool = False, feature_layers: tuple[int, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Score each active sequence's root + draft nodes. Returns logits [active, rows, vocab] (and hidden)."""
        active = len(candidates)
        rows = max(c.shape[0] for c in candidates)
        cache_len = state.valid.shape[1]
        device = state.valid.device
        pad_id = self.target.tokenizer.pad_token_id or 0
        tokens = torch.full((active, rows), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((active, 1, rows, cache_len + rows), dtype=torch.bool, device=device)
        positions = torch.zeros((active, rows), dtype=torch.long, device=device)
        eye = torch.eye(rows, dtype=torch.bool, device=device)
        for b, (cand, tree) in enumerate(zip(candidates, parents)):
            n = cand.shape[0]
            tree = chain_parents(n - 1, device) if tree is None else tree
            tokens[b, :n] = cand
            mask[b, 0, :n, :cache_len] = state.valid[b]
            mask[b, 0, :, cache_len:] = eye  # padding rows see only themselves
            tree_mask, depths = tree_attention(tree, cache_len=0)  # [1, 1, n, n], [1, n]: structure only
            mask[b, 0, :n, cache_len : cache_len + n] = tree_mask[0, 0]
            positions[b, :n] = state.next_position[b] + depths[0]
        out = self.target.model(
            input_ids=tokens,
            attention_mask=model_mask(mask, self.target.model),
            position_ids=positions,
            **cache_kwargs(self.target.model, state.cache),
            use_cache=True,
            output_hidden_states=need_hidden,
        )
        check_finite(out.logits)
        return out.logits, (select_features(out.hidden_states, feature_layers) if need_hidden else None)

    def keep(self, state: BatchState, kept_rows: list[list[int]], still_active: list[bool]) -> None:
        """Keep each sequence's valid cache plus its accepted rows; drop finished sequences."""
        cache_len = state.valid.shape[1]
        device = state.valid.device
        index_lists = []
        for b, rows in enumerate(kept_rows):
            if still_active[b]:
                old = state.valid[b].nonzero().flatten()
                index_lists.append(torch.cat([old, torch.tensor(rows, device=device) + cache_len]))
        survivors = [b for b, alive in enumerate(still_active) if alive]
        new_len = max((len(ix) for ix in index_lists), default=0)
        index = torch.zeros((len(survivors), new_len), dtype=torch.long, device=device)
        valid = torch.zeros((len(survivors), new_len), dtype=torch.bool, device=device)
        for row, ix in enumerate(index_lists):
            index[row, new_len - len(ix) :] = ix
            valid[row, new_len - len(ix) :] = True
        batch_rows = torch.tensor(survivors, dtype=torch.long, device=device)
        for layer in state.cache.layers:
            keys = layer.keys.index_select(0, batch_rows)  # [survivors, heads, len, dim]
            values = layer.values.index_select(0, batch_rows)
            gather = index[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[3])
            layer.keys = keys.gather(2, gather)
            layer.values = values.gather(2, gather)
        grown = torch.tensor([len(r) for r in kept_rows], device=device)
        state.next_position = (state.next_position + grown)[batch_rows]
        state.valid = valid
        state.active = [state.active[b] for b in survivors]

    def merge(self, running: BatchState, joining: BatchState) -> BatchState:
        """One batch holding both: the shorter cache is left-padded (masked) to the longer one."""
        width = max(running.valid.shape[1], joining.valid.shape[1])

        def pad(t: torch.Tensor, dim: int, value=0) -> torch.Tensor:  # left-pad `t` along `dim` to `width`
            missing = width - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([torch.full(shape, value, dtype=t.dtype, device=t.device), t], dim=dim)

        for mine, theirs in zip(running.cache.layers, joining.cache.layers):  # keys [batch, heads, len, dim]
            mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)])
            mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)])
        running.valid = torch.cat([pad(running.valid, 1, False), pad(joining.valid, 1, False)])
        running.next_position = torch.cat([running.next_position, joining.next_position])
        running.active = running.active + joining.active
        running.views = {**running.views, **joining.views}
        return running
