"""A smaller causal LM or VLM sharing the target's tokenizer, drafting token by token.

When the drafter is itself a VLM it receives the image: its first forward takes the
target's processed inputs (pixel values, image sizes), so it must share the target's
image processing (same image token and token count per image; a copy of the target or a
smaller model of the same family). A text-only drafter sees the prompt with the image
tokens removed. The drafter keeps its own KV cache and re-feeds only what changed.
"""

from __future__ import annotations

import copy

import os
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError

from ..core.cache import cache_kwargs, truncate_cache
from ..core.drafter import Draft, DraftContext, Drafter, StepFeedback
from ..core.sampling import warp_probs
from ..core.masks import model_mask
from ..core.tree import node_depths, static_tree, tree_attention
from ..errors import DrafterMismatchError, ModelLoadError
from ..weights import damaged_weights_message
from ..target import image_token_id_of


class ModelDrafter(Drafter):
    """Drafts a chain of k tokens, or a static tree (`tree_paths`, see core/tree.static_tree)
    whose nodes are the drafter's top-ranked tokens (point masses) and whose depth k bounds."""

    def __init__(self, model, tokenizer, tree_paths: Sequence[Sequence[int]] | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.is_vlm = hasattr(model, "get_image_features")
        self.tree = None if tree_paths is None else static_tree(tree_paths)  # (parents [n], ranks [n])

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str = torch.float32,
        trust_remote_code: bool = False,
    ) -> "ModelDrafter":
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

        source = str(path)
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
            is_vlm = hasattr(config, "vision_config")
            loader = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
            from ..quiet import quiet_transformers

            with quiet_transformers():
                model = loader.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            hint = "" if Path(source).exists() else " (the path does not exist)"
            raise ModelLoadError(
                f"Could not load the draft model {source!r}{hint}: {exc}. Pass a directory with a causal LM "
                "or LLaVA-style checkpoint that uses the target's tokenizer."
            ) from None
        except SafetensorError as exc:  # a truncated / garbage weights file
            raise ModelLoadError(f"Could not load the draft model {source!r}: {damaged_weights_message(source, exc)}") from None
        drafter = cls(model.to(device), tokenizer)
        drafter.source_dir = Path(source)
        return drafter

    def chain_drafter(self, max_depth: int) -> "ModelDrafter":
        """This drafter drafting chains (what k asks: no cap to lift); its gate features are 4 numbers."""
        if self.tree is None:
            return self
        clone = copy.copy(self)
        clone.tree = None
        return clone

    @property
    def acceptance_features_size(self) -> int:
        return 4  # top-1 prob, entropy, margin, depth (no hidden state exposed)

    @property
    def max_depth(self) -> int | None:
        """A static tree drafts at most its longest path; a chain drafts what k asks."""
        return None if self.tree is None else int(node_depths(self.tree[0]).max())

    # ------------------------------------------------------------------ checks
    def check_compatible(self, target) -> None:
        mine, theirs = self.tokenizer.get_vocab(), target.tokenizer.get_vocab()
        if mine != theirs:
            differing = len(set(mine.items()) ^ set(theirs.items()))
            raise DrafterMismatchError(
                f"The draft model's tokenizer differs from the target's ({len(mine)} vs {len(theirs)} tokens, "
                f"{differing} entries differ): token ids would not mean the same thing. Use a draft model "
                "trained with the target's tokenizer."
            )
        if self.is_vlm and image_token_id_of(self.model.config) != target.image_token_id:
            raise DrafterMismatchError(
                "The draft VLM uses another image token id than the target; a VLM drafter must share the "
                "target's image processing. Use a text-only draft model or a VLM of the target's family."
            )

    # ---------------------------------------------------------------- drafting
    def begin(self, context: DraftContext) -> None:
        super().begin(context)
        state = context.state
        prompt = state.prompt_ids[0]  # [prompt_len]
        if self.is_vlm:
            self.own_prompt = prompt
            self.image_inputs = {k: v for k, v in state.model_inputs.items() if k not in ("input_ids", "attention_mask")}
        else:
            self.own_prompt = prompt[prompt != context.target.image_token_id]
            self.image_inputs = {}
        self.target_prompt_len = prompt.shape[0]
        self.vocab_size = context.target.vocab_size
        self.cache = None
        self.cached_ids = torch.empty(0, dtype=torch.long, device=prompt.device)  # [cached] ids in self.cache

    @torch.inference_mode()
    def propose(self, committed: torch.Tensor, k: int) -> Draft:
        if k == 0:
            return Draft.empty(committed.device)
        sequence = torch.cat([self.own_prompt, committed[self.target_prompt_len :]])  # [seq] in drafter ids
        self._sync_cache(sequence)
        feed = sequence[self.cached_ids.shape[0] :]  # [m >= 1] not yet in the drafter cache
        if self.tree is not None:
            return self._propose_tree(feed, k)
        sampling, generator = self.context.sampling, self.context.generator
        tokens, probs = [], []
        for step in range(k):
            logits = self._forward(feed)[-1]  # [vocab]
            token_probs = warp_probs(self._fit_vocab(logits), sampling)  # [vocab]
            token = int(token_probs.argmax()) if sampling.greedy else int(
                torch.multinomial(token_probs, 1, generator=generator)
            )
            self.cached_ids = torch.cat([self.cached_ids, feed])
            tokens.append(token)
            probs.append(token_probs)
            feed = committed.new_tensor([token])
            if not self.keep_drafting(self._fit_vocab(logits).float().softmax(-1), step + 1):
                break  # the acceptance gate (learned stop / approximate verification) ends the draft
        return Draft(committed.new_tensor(tokens), None if sampling.greedy else torch.stack(probs))

    def _propose_tree(self, feed: torch.Tensor, max_depth: int) -> Draft:
        """Expand the static tree level by level: one tree-masked forward per level."""
        parents, ranks = (t.to(feed.device) for t in self.tree)
        depths = node_depths(parents)  # [n], nodes sorted by depth
        n = int((depths <= max_depth).sum())
        parents, ranks, depths = parents[:n], ranks[:n], depths[:n]
        root_logits = self._forward(feed)[-1]  # [vocab]
        self.cached_ids = torch.cat([self.cached_ids, feed])
        base = self.cached_ids.shape[0]  # the root is the cache's last position
        tokens = torch.zeros(n, dtype=torch.long, device=feed.device)
        parent_logits = {-1: self._fit_vocab(root_logits)}  # parent node -> logits of its children
        for depth in range(1, int(depths.max()) + 1):
            level = (depths == depth).nonzero().flatten().tolist()
            for node in level:
                logits = parent_logits[int(parents[node])]
                tokens[node] = torch.topk(logits, int(ranks[node]) + 1).indices[-1]
            if depth == int(depths.max()):
                break
            upto = int((depths <= depth).sum())  # nodes of depth <= this level are a prefix
            mask, positions = tree_attention(parents[:upto], base, with_root=False)
            out = self.model(
                input_ids=tokens[:upto][None], attention_mask=model_mask(mask, self.model), position_ids=positions,
                **cache_kwargs(self.model, self.cache), use_cache=True,
            )
            truncate_cache(self.cache, base)
            for node in level:
                parent_logits[node] = self._fit_vocab(out.logits[0, node])
        return Draft(tokens, None, parents)

    def update(self, feedback: StepFeedback) -> None:
        pass  # the cache is re-synchronised lazily in `propose`

    def end(self) -> None:
        self.cache = None

    # ----------------------------------------------------------------- helpers
    def _sync_cache(self, sequence: torch.Tensor) -> None:
        """Keep the longest cached prefix of `sequence`, leaving at least one token to feed."""
        cached = self.cached_ids
        limit = min(cached.shape[0], sequence.shape[0] - 1)
        same = (cached[:limit] == sequence[:limit]).long()
        keep = int(same.cumprod(0).sum()) if limit else 0
        if keep == 0:
            self.cache = None  # start over, image inputs included
        elif self.cache is not None and keep < cached.shape[0]:
            truncate_cache(self.cache, keep)
        self.cached_ids = cached[:keep]

    def _forward(self, feed: torch.Tensor) -> torch.Tensor:
        """Run `feed` [m] on top of the drafter cache; return logits [m, vocab]."""
        from transformers import DynamicCache

        first = self.cache is None
        prompt_len = self.own_prompt.shape[0]
        if first and self.image_inputs and feed.shape[0] > prompt_len:
            # The prompt goes with its images; generated tokens after it (an image placeholder id
            # among them is an ordinary token there) go in a second forward, as in plain decoding.
            return torch.cat([self._forward(feed[:prompt_len]), self._forward(feed[prompt_len:])])
        if first:
            self.cache = DynamicCache(config=self.model.config.get_text_config())
        kwargs = dict(self.image_inputs) if first else {}
        try:
            out = self.model(input_ids=feed[None], **cache_kwargs(self.model, self.cache), use_cache=True, **kwargs)
        except (ValueError, RuntimeError) as exc:
            if first and self.image_inputs:
                raise DrafterMismatchError(
                    f"The draft VLM could not read the target's image inputs ({exc}); a VLM drafter must "
                    "share the target's image processing (image token count and size)."
                ) from None
            raise
        return out.logits[0]

    def _fit_vocab(self, logits: torch.Tensor) -> torch.Tensor:
        """Drafter logits [v_draft] -> [v_target]: extra ids dropped, missing ids impossible."""
        if logits.shape[0] >= self.vocab_size:
            return logits[: self.vocab_size]
        pad = logits.new_full((self.vocab_size - logits.shape[0],), float("-inf"))
        return torch.cat([logits, pad])
