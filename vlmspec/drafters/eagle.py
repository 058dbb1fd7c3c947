"""EAGLE-style feature drafter (EAGLE-1/2, optionally EAGLE-3 fused features) built from the target's own layer classes.

Architecture (per position i of the drafter's sequence):
    x_i   = fc([embed(t_{i+1}) ; h_i])            fc: 2H -> H (optional LayerNorm on the 2H input first)
    h'_i  = decoder_layer(x_i | drafter KV cache)  ONE layer of the target's own decoder-layer class
    logits_i = lm_head(h'_i)                       the target's frozen LM head (or its draft-vocab rows)
`h_i` is the target's last-layer hidden state (after the final norm) at position i (with
`feature_layers`, EAGLE-3: h_i = fuse([rms(s_low) ; rms(s_mid) ; rms(s_high)]), fuse: 3H -> H,
a fusion of low, middle and high layers' states, see `fuse_features`) and
`t_{i+1}` the token that follows it; `h'_i` is the drafter's prediction of h_{i+1}, so
logits_i is a distribution over t_{i+2}. While drafting, a node's input is its own token
and the predicted hidden state of its parent. The embedding and LM head are the target's
(shared by reference, frozen, never saved); only fc, the layer, the optional norm, the
draft vocabulary (and a trained head copy, if asked for) belong to the drafter.

The drafter's KV cache holds exactly the committed positions 0 .. len(committed) - 2 (those
whose target hidden state is known). `begin` feeds the prompt, `update` queues the target
hidden states of [pending, accepted path], and `propose` first feeds the queued positions
(its last output is the root's prediction) and then drafts on top; every draft position is
cropped from the cache before `propose` returns.

Drafting shapes (`EagleConfig.tree`); `depth = min(k, config.depth)` (config.depth None:
depth = k), where k is what the loop passes to `propose`:
    "chain"   depth tokens, one drafter forward each. Greedy: argmax (point masses);
              sampling: drawn from the warped draft distribution q, `probs` returned.
    "static"  the rank paths of `static_paths` (see core/tree.static_tree) cut at depth;
              one forward per level over the nodes that have children.
    "dynamic" EAGLE-2: at each level expand the `top_k` children of the `top_k` frontier
              nodes with the best path score (product of draft probabilities), for depth
              levels; keep the best `total_tokens` nodes (ancestor-closed, parents first).
Trees are always deterministic top-k choices (point masses, `probs=None`), which the
lead's verifier accepts losslessly in greedy and sampling mode.
Each level is ONE forward over the new nodes with a 4-D bool mask [1, 1, new, cache + new]
(True = attend): every committed position, the node's ancestors among the cached draft
nodes, and itself; position id = (committed positions - 1) + depth.

Trimmed draft vocabulary (VocabTrim): with `draft_vocab` ([N] target ids, e.g. from
`frequent_tokens`) the head is `lm_head.weight[draft_vocab]`, drafted ids map back to
target ids and returned `probs` are scattered back to the full vocabulary.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.cache import cache_kwargs, cache_length, truncate_cache
from ..core.drafter import Draft, DraftContext, Drafter, StepFeedback
from ..core.features import check_layers, eagle3_layers
from ..errors import DrafterMismatchError, InputError, ModelLoadError
from ..weights import load_weights_into, read_safetensors
from .eagle_config import (  # noqa: F401 (re-exported)
    DEFAULT_STATIC_PATHS, TREE_KINDS, EagleConfig, _is_int, frequent_tokens, validate_draft_vocab,
)
from .draft_tree import DraftTree, draft_chain, draft_dynamic, draft_static  # noqa: F401 (DraftTree: tests)
from .fingerprint import embed_probe, fingerprint_mismatch, target_fingerprint  # noqa: F401 (re-exported)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
DRAFTER_KIND = "eagle"


@dataclass(frozen=True)
class _Shared:
    """The target's modules a drafter uses by reference (never registered, never saved), and
    `trimmed`: the head's draft-vocabulary rows as a frozen nn.Linear (None when the vocabulary
    is not trimmed or the head is trained), so the CPU fast path can pack them like any layer."""

    embed: nn.Module
    head: nn.Module
    trimmed: nn.Module | None = None


def _decoder_of(model) -> nn.Module:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or not hasattr(decoder, "layers") or not hasattr(decoder, "rotary_emb"):
        raise ModelLoadError(
            f"{type(model).__name__}'s language model exposes no `layers` / `rotary_emb` through get_decoder(); "
            "the EAGLE drafter needs a decoder-only language model with rotary position embeddings."
        )
    return decoder


# ------------------------------------------------------------------------ drafter
class EagleDrafter(nn.Module, Drafter):
    """An EAGLE feature drafter: [fuse(nH -> H)] + fc(2H -> H) + one target-family decoder layer +
    the target's LM head."""

    needs_target_hidden = True
    drafter_kind = DRAFTER_KIND  # "vlmspec_drafter" in config.json (subclasses: their own kind)
    config_class = EagleConfig  # the config dataclass from_pretrained reads back (subclasses: theirs)

    def __init__(self, target, config: EagleConfig = EagleConfig(), draft_vocab: Any = None) -> None:
        """Build the modules for `target` (a vlmspec Target); weights as PyTorch initialises them
        and fc = [0 | I]. Prefer `from_target` (seeded) or `from_pretrained` (trained weights)."""
        nn.Module.__init__(self)
        if not isinstance(config, EagleConfig):
            raise InputError(f"config must be an EagleConfig; got {type(config).__name__}.")
        self.config = config
        model = target.model
        decoder = _decoder_of(model)
        text_config = model.config.get_text_config()
        hidden = int(text_config.hidden_size)
        param = next(model.parameters())
        factory = dict(device=param.device, dtype=param.dtype)

        # One-layer config of the target's family: full attention, explicit bool masks (sdpa).
        layer_config = copy.deepcopy(text_config)
        layer_config.num_hidden_layers = 1
        if isinstance(getattr(layer_config, "layer_types", None), list):
            layer_config.layer_types = layer_config.layer_types[-1:]
        layer_config._attn_implementation = "sdpa"
        self.layer_config = layer_config
        self.hidden_size = hidden
        self.target_vocab_size = int(model.get_output_embeddings().weight.shape[0])

        num_layers = int(text_config.num_hidden_layers)
        try:
            if config.feature_layers == "eagle3":
                config = self.config = dataclasses.replace(config, feature_layers=eagle3_layers(num_layers))
            check_layers(config.feature_layers, num_layers, "EagleConfig.feature_layers")
        except ValueError as exc:
            raise InputError(str(exc)) from None
        # EAGLE-3 fusion: the named layers' states, each RMS-normalised (residual-stream scales differ
        # by orders of magnitude between layers), concatenated and mapped to H.
        n_fused = len(config.feature_layers) if config.feature_layers else 0
        self.fuse = nn.Linear(n_fused * hidden, hidden, bias=False, **factory) if n_fused else None
        self.fc = nn.Linear(2 * hidden, hidden, bias=config.fc_bias, **factory)
        self.input_norm = nn.LayerNorm(2 * hidden, **factory) if config.input_norm else None
        self.layer = type(decoder.layers[0])(layer_config, layer_idx=0).to(**factory)
        self.rotary = type(decoder.rotary_emb)(config=layer_config).to(param.device)

        if draft_vocab is not None:
            ids = validate_draft_vocab(draft_vocab, self.target_vocab_size)  # [N] target ids
            self.register_buffer("draft_vocab", ids.to(param.device))
        else:
            self.draft_vocab = None
        if config.trainable_head and self.draft_vocab is None:
            raise InputError(
                "EagleConfig.trainable_head needs a draft_vocab (a trained copy of the full head is too big)."
            )
        self.head_weight = None
        if config.trainable_head:
            rows = model.get_output_embeddings().weight.detach()[self.draft_vocab]  # [N, H]
            self.head_weight = nn.Parameter(rows.clone())
        self.draft_vocab_size = self.target_vocab_size if self.draft_vocab is None else int(self.draft_vocab.shape[0])
        self._check_shape_fits()
        self._bind(target)
        self.reset_fc()
        self.eval()

    # ----------------------------------------------------------------- building
    @classmethod
    def from_target(
        cls,
        target,
        config: EagleConfig = EagleConfig(),
        *,
        draft_vocab: Any = None,
        init_layer_from_target: bool = False,
        seed: int = 0,
    ) -> "EagleDrafter":
        """An untrained drafter for `target`: fc = [0 | I] (passes the target feature through), the
        decoder layer randomly initialised (seeded, global RNG untouched) or copied from the
        target's last decoder layer."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            drafter = cls(target, config, draft_vocab=draft_vocab)
        if init_layer_from_target:
            last = _decoder_of(target.model).layers[-1]
            drafter.layer.load_state_dict(last.state_dict())
        return drafter

    @torch.no_grad()
    def reset_fc(self) -> None:
        """fc = [0 | I], bias 0: the layer input starts as the target hidden state (well scaled)."""
        self.fc.weight.zero_()
        self.fc.weight[:, self.hidden_size :].copy_(torch.eye(self.hidden_size))
        if self.fc.bias is not None:
            self.fc.bias.zero_()
        if self.fuse is not None:  # fuse = [0 | ... | I]: starts as the (normalised) highest layer named
            self.fuse.weight.zero_()
            self.fuse.weight[:, -self.hidden_size :].copy_(torch.eye(self.hidden_size))

    def _check_shape_fits(self) -> None:
        config, vocab = self.config, self.draft_vocab_size
        if config.tree == "dynamic" and config.top_k > vocab:
            raise InputError(f"EagleConfig.top_k={config.top_k} exceeds the draft vocabulary ({vocab} tokens).")
        if config.tree == "static":
            worst = max(r for p in config.static_paths for r in p)
            if worst >= vocab:
                raise InputError(f"static tree rank {worst} does not exist in a draft vocabulary of {vocab} tokens.")

    def _bind(self, target) -> None:
        """Point the shared (frozen) embedding and LM head at `target`'s."""
        self.target = target
        embed, head = target.model.get_input_embeddings(), target.model.get_output_embeddings()
        before = getattr(self, "_shared", None)
        same_place = before is not None and (before.trimmed is None or (
            before.trimmed.weight.device == head.weight.device and before.trimmed.weight.dtype == head.weight.dtype))
        if before is not None and before.head is head and before.embed is embed and same_place:
            return  # the same modules (a rebind to an equal target object): keep the trimmed head, packed or not
        self._head_rows, trimmed = None, None
        if self.draft_vocab is not None and self.head_weight is None:
            self._head_rows = head.weight.detach()[self.draft_vocab]  # [N, H] a small sliced copy
            if head.bias is None:
                trimmed = nn.Linear(self.hidden_size, self._head_rows.shape[0], bias=False,
                                    device=self._head_rows.device, dtype=self._head_rows.dtype)
                trimmed.weight = nn.Parameter(self._head_rows, requires_grad=False)
                trimmed.requires_grad_(False)
        self._shared = _Shared(embed, head, trimmed)

    @property
    def max_depth(self) -> int | None:
        return self.config.max_depth()

    @property
    def feature_layers(self) -> tuple[int, ...] | None:
        """The target states this drafter reads (core/features.py); None = the last layer."""
        return self.config.feature_layers

    def fuse_features(self, states: torch.Tensor) -> torch.Tensor:
        """Target states as the target returns them [..., F] -> the drafter's feature [..., H].

        F = H for a last-layer drafter (returned as is); F = len(feature_layers) * H for a fused
        one: each layer's state RMS-normalised, then fc_fuse."""
        expected = self.hidden_size * (len(self.feature_layers) if self.feature_layers else 1)
        if states.shape[-1] != expected:
            raise InputError(
                f"{type(self).__name__} reads target features of size {expected} (layers "
                f"{self.feature_layers or 'last'}); got {states.shape[-1]}. Run the target with "
                "feature_layers=drafter.feature_layers."
            )
        if self.fuse is None:
            return states
        chunks = states.unflatten(-1, (-1, self.hidden_size)).float()  # [..., n, H]
        chunks = chunks * torch.rsqrt(chunks.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.fuse(chunks.flatten(-2).to(self.fuse.weight.dtype))  # [..., H]

    def with_config(self, config: EagleConfig) -> "EagleDrafter":
        """A drafter sharing these weights but drafting with another config (tree shape, depth, ...)."""
        fixed = ("input_norm", "fc_bias", "trainable_head", "feature_layers")
        if any(getattr(config, f) != getattr(self.config, f) for f in fixed):
            raise InputError(f"with_config can only change how the drafter drafts, not {', '.join(fixed)}.")
        clone = copy.copy(self)  # shallow: parameters stay shared
        clone.config = config
        clone._check_shape_fits()
        return clone

    def with_tree(self, total_tokens: int, depth: int, top_k: int) -> "EagleDrafter":
        """The same weights drafting a dynamic (EAGLE-2) tree of that shape (used by Pipeline.autotune)."""
        return self.with_config(dataclasses.replace(
            self.config, tree="dynamic", static_paths=None, depth=depth, top_k=top_k, total_tokens=total_tokens
        ))

    # ------------------------------------------------------------ save / load
    def fingerprint(self) -> dict:
        return target_fingerprint(self.target)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write model.safetensors (drafter-only tensors) and config.json, each atomically."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in self.state_dict().items()}
        meta = {
            "vlmspec_drafter": self.drafter_kind,
            "format_version": FORMAT_VERSION,
            "eagle": self.config.to_dict(),
            "decoder_layer": type(self.layer).__name__,
            "draft_vocab_size": None if self.draft_vocab is None else self.draft_vocab_size,
            "target_fingerprint": self.fingerprint(),
        }
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
        try:
            save_file(tensors, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
            (staging / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
            if not directory.exists():
                os.replace(staging, directory)
            else:  # keep other files in the directory; replace ours one by one, config last
                for name in (WEIGHTS_NAME, CONFIG_NAME):
                    os.replace(staging / name, directory / name)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, target, config: EagleConfig | None = None,
                        *, warm_start: bool = False) -> "EagleDrafter":
        """Load a saved drafter for `target` (safetensors only). `config` may override how it drafts.

        ``warm_start=True`` (training only) also accepts a drafter trained for another fine-tune of
        the same base model (the fingerprint differs only in the decoder-layer probe): its weights
        then start a new training run, and the result carries `target`'s fingerprint."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise ModelLoadError(
                f"{directory} is not a saved EAGLE drafter (needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                "create one with EagleDrafter.save_pretrained(dir)."
            )
        try:
            meta = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"Could not read {config_path}: {exc}.") from None
        if not isinstance(meta, dict) or meta.get("vlmspec_drafter") != cls.drafter_kind:
            raise ModelLoadError(
                f"{config_path} does not describe a vlmspec {cls.drafter_kind!r} drafter "
                f"(it holds {meta.get('vlmspec_drafter') if isinstance(meta, dict) else None!r}); "
                "load it with its own kind."
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelLoadError(
                f"{directory} uses drafter format {meta.get('format_version')!r}; this vlmspec reads {FORMAT_VERSION}."
            )
        saved_print = meta.get("target_fingerprint") or {}
        actual = target_fingerprint(target)
        differences = fingerprint_mismatch(saved_print, actual, same_fine_tune=not warm_start)
        if differences:
            raise DrafterMismatchError(
                f"The EAGLE drafter in {directory} was trained for another target ({'; '.join(differences)}). "
                "Load it with the target checkpoint it was trained for, or build and train a drafter for this "
                "target (EagleDrafter.from_target(target, ...))."
            )
        if not isinstance(meta.get("eagle"), dict):
            raise ModelLoadError(
                f"{config_path} has no \"eagle\" section (the drafter's configuration); the file is incomplete or "
                "was edited by hand. Save the drafter again with save_pretrained(dir)."
            )
        saved_config = cls.config_class.from_dict(meta["eagle"])
        tensors = read_safetensors(weights_path)
        drafter = cls(target, saved_config, draft_vocab=tensors.get("draft_vocab"))
        if type(drafter.layer).__name__ != meta.get("decoder_layer"):
            raise DrafterMismatchError(
                f"The drafter in {directory} holds a {meta.get('decoder_layer')} but the target's decoder layer is "
                f"{type(drafter.layer).__name__}; train a drafter for this target."
            )
        missing, unexpected = load_weights_into(drafter, tensors, weights_path)
        if missing or unexpected:
            raise ModelLoadError(
                f"{weights_path} does not match the drafter's parameters (missing {missing}, unexpected {unexpected})."
            )
        drafter.eval()
        drafter.source_dir = directory
        return drafter.with_config(config) if config is not None else drafter

    def chain_drafter(self, max_depth: int) -> "EagleDrafter":
        """The same weights drafting chains of up to `max_depth` (for the acceptance gate)."""
        return self.with_config(dataclasses.replace(self.config, tree="chain", static_paths=None, depth=max_depth))

    @property
    def acceptance_features_size(self) -> int:
        return 4 + self.hidden_size  # top-1 prob, entropy, margin, depth + the predicted hidden state

    def check_compatible(self, target) -> None:
        if target is self.target:
            return
        differences = fingerprint_mismatch(self.fingerprint(), target_fingerprint(target))
        if differences:
            raise DrafterMismatchError(
                f"This EAGLE drafter belongs to another target ({'; '.join(differences)}); use it with the target "
                "it was built for, or build a drafter for this target (EagleDrafter.from_target)."
            )
        self._bind(target)

    def _fed_positions(self) -> int:
        """How many target positions (0 .. n-1) have been fed into the cache. Here every position
        is one cache slot; drafters that replace image positions keep their own count."""
        return cache_length(self.cache)

    # --------------------------------------------------------------- the model
    def _input_states(
        self, token_ids: torch.Tensor, target_hidden: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Layer inputs for positions whose next token is token_ids.

        token_ids [B, m] (t_{i+1}), target_hidden [B, m, H] (h_i: the target's, or while drafting
        the parent's predicted one), positions [B, m] (i, absolute) -> [B, m, H].
        Vision-aware drafters override this (positions tell where images are).
        """
        embedded = F.embedding(token_ids, self._shared.embed.weight.detach())  # [B, m, H]
        joined = torch.cat([embedded.to(target_hidden.dtype), target_hidden], dim=-1)  # [B, m, 2H]
        if self.input_norm is not None:
            joined = self.input_norm(joined)
        return self.fc(joined)

    def _layer_forward(
        self, inputs: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor, cache=None
    ) -> torch.Tensor:
        """inputs [B, m, H], position_ids [B, m], mask [B, 1, m, kv] bool (True = attend) -> [B, m, H]."""
        position_embeddings = self.rotary(inputs, position_ids)
        out = self.layer(
            inputs,
            attention_mask=mask,
            position_ids=position_ids,
            **cache_kwargs(self.layer, cache),
            use_cache=cache is not None,
            position_embeddings=position_embeddings,
        )
        return out[0] if isinstance(out, tuple) else out

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., H] -> logits [..., draft_vocab_size] (the draft vocabulary's ids when trimmed)."""
        head = self._shared.head
        if self.draft_vocab is None:
            return F.linear(hidden, head.weight.detach(), None if head.bias is None else head.bias.detach())
        if self.head_weight is None and self._shared.trimmed is not None:
            return self._shared.trimmed(hidden)  # the frozen draft-vocabulary rows (packed on CPU when that pays)
        weight = self.head_weight if self.head_weight is not None else self._head_rows
        bias = None if head.bias is None else head.bias.detach()[self.draft_vocab]
        return F.linear(hidden, weight, bias)

    def cpu_fast_modules(self) -> list[nn.Module]:
        """What the CPU fast path (vlmspec.fast.accelerate_drafter) may pack: this drafter's own
        layers and its trimmed head; never the target's modules it shares."""
        return [self] + ([self._shared.trimmed] if self._shared.trimmed is not None else [])

    def forward_train(
        self, input_embeds_ids: torch.Tensor, target_hidden: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced pass over whole sequences (no cache), for distillation.

        input_embeds_ids [B, T]: the token FOLLOWING each position, i.e. ids[:, 1:] of the
            sequence whose target hidden states are given (t_{i+1} at position i);
        target_hidden [B, T, H]: the target's last-layer states (post final norm) h_i at
            positions 0 .. T-1, i.e. hidden_states[-1][:, :-1];
        attention_mask [B, T]: 1 = real token, 0 = padding (left or right); None = all real.
        Returns draft_hidden [B, T, H] (predictions of h_{i+1}: regress onto
        hidden_states[-1][:, 1:]) and draft_logits [B, T, V'] (predictions of t_{i+2}; V' is
        the draft vocabulary when trimmed, whose column j is target id draft_vocab[j]).
        Gradients reach fc, the layer and the norm (and a trainable head), never the
        target's embedding or head.
        """
        batch, length = input_embeds_ids.shape
        if target_hidden.shape[:2] != (batch, length):
            raise InputError(
                f"forward_train: target_hidden {tuple(target_hidden.shape)} must be [B, T, H] with "
                f"[B, T] = {tuple(input_embeds_ids.shape)}."
            )
        device = target_hidden.device
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=device)
        real = attention_mask.bool()  # [B, T]
        position_ids = (real.long().cumsum(-1) - 1).clamp_min(0)  # [B, T]
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # [T, T]
        mask = causal[None] & real[:, None, :]  # [B, T, T] attend to earlier real tokens
        mask = mask | torch.eye(length, dtype=torch.bool, device=device)[None]  # padding rows see themselves
        inputs = self._input_states(input_embeds_ids, target_hidden, position_ids)  # [B, T, H]
        draft_hidden = self._layer_forward(inputs, position_ids, mask[:, None])  # [B, T, H]
        return draft_hidden, self._logits(draft_hidden)

    def forward(self, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """nn.Module entry point (for training wrappers such as DDP): `forward_train`."""
        return self.forward_train(*args, **kwargs)

    # ---------------------------------------------------------- drafter hooks
    @torch.inference_mode()
    def begin(self, context: DraftContext) -> None:
        super().begin(context)
        if context.target is not self.target:
            self.check_compatible(context.target)
        state = context.state
        if state.prompt_hidden is None:
            raise RuntimeError("EagleDrafter needs the target's hidden states: prefill with need_hidden=True.")
        from transformers import DynamicCache

        self.cache = DynamicCache()  # one plain full-attention layer, created on first update
        prompt = state.prompt_ids  # [1, P]
        hidden = self.fuse_features(state.prompt_hidden)  # [1, P, H]
        self._pending = hidden[:, :0]  # [1, 0, H] target states not yet fed (their next token is known)
        self._root = None
        self._feed(prompt[:, 1:], hidden[:, :-1])  # positions 0 .. P-2
        self._pending = hidden[:, -1:]  # h_{P-1}: its next token is the first generated one

    @torch.inference_mode()
    def update(self, feedback: StepFeedback) -> None:
        if feedback.target_hidden is None:
            raise RuntimeError("EagleDrafter.update needs feedback.target_hidden (needs_target_hidden is True).")
        fused = self.fuse_features(feedback.target_hidden)  # [1, n, H]
        self._pending = torch.cat([self._pending, fused.to(self._pending.dtype)], dim=1)
        self._root = None

    def end(self) -> None:
        self.cache = None
        self._pending = None
        self._root = None

    @torch.inference_mode()
    def propose(self, committed: torch.Tensor, k: int) -> Draft:
        depth = self.config.draft_depth(k)
        if depth == 0:
            return Draft.empty(committed.device)
        root_hidden, root_logits = self._catch_up(committed)  # [1, 1, H], [V']
        committed_positions = cache_length(self.cache)
        strategy = {"chain": draft_chain, "static": draft_static, "dynamic": draft_dynamic}[self.config.tree]
        try:
            return strategy(self, root_hidden, root_logits, depth)
        finally:
            truncate_cache(self.cache, committed_positions)  # drop every draft position

    # ----------------------------------------------------------- cache feeding
    def _feed(self, next_ids: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor | None:
        """Append committed positions: next_ids [1, m], hidden [1, m, H] -> outputs [1, m, H]."""
        m = next_ids.shape[1]
        if m == 0:
            return None
        start = cache_length(self.cache)
        positions = torch.arange(start, start + m, device=hidden.device)[None]  # [1, m]
        mask = torch.ones(1, 1, m, start + m, dtype=torch.bool, device=hidden.device)
        mask[0, 0, :, start:] = torch.ones(m, m, dtype=torch.bool, device=hidden.device).tril()
        inputs = self._input_states(next_ids, hidden, positions)  # [1, m, H]
        return self._layer_forward(inputs, positions, mask, self.cache)

    def _catch_up(self, committed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed queued target states so the cache holds positions 0 .. len(committed) - 2.

        Returns the root's predicted hidden state [1, 1, H] and draft logits [V'].
        """
        start = self._fed_positions()
        needed = committed.shape[0] - 1 - start  # positions still to feed
        if needed < 0 or needed > self._pending.shape[1]:
            raise RuntimeError(
                f"EagleDrafter out of step: {start} cached + {self._pending.shape[1]} queued positions for "
                f"{committed.shape[0]} committed tokens (call begin/update as the loop does)."
            )
        if needed == 0:
            if self._root is None:
                raise RuntimeError("EagleDrafter has no root state; call begin() before propose().")
            return self._root
        next_ids = committed[start + 1 : start + 1 + needed][None]  # [1, needed]
        outputs = self._feed(next_ids, self._pending[:, :needed])  # [1, needed, H]
        self._pending = self._pending[:, needed:]
        root_hidden = outputs[:, -1:]  # [1, 1, H] predicted state of the pending token
        self._root = (root_hidden, self._logits(root_hidden[0, 0]).float())
        return self._root

    def _to_target_ids(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return draft_ids if self.draft_vocab is None else self.draft_vocab[draft_ids]

    def _to_full_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """probs [n, V'] over the draft vocabulary -> [n, vocab] over the target's."""
        if self.draft_vocab is None:
            return probs
        full = probs.new_zeros(probs.shape[0], self.target_vocab_size)
        full[:, self.draft_vocab] = probs
        return full


# ------------------------------------------------------------------ spec string
def eagle_from_spec(argument: str | None, target, cls: type | None = None) -> EagleDrafter:
    """'eagle:PATH' or 'eagle:PATH?tree=dynamic&depth=6&top_k=8&total_tokens=48' (overrides how it drafts).
    `cls`: an EagleDrafter subclass to load instead (its `drafter_kind` names the spec prefix)."""
    cls = cls or EagleDrafter
    kind = cls.drafter_kind
    if not argument:
        raise InputError(f"'{kind}:' needs the directory of a saved drafter, e.g. {kind}:/path/to/drafter.")
    path, _, query = argument.partition("?")
    if query and Path(argument).exists():
        path, query = argument, ""
    drafter = cls.from_pretrained(path, target)
    if not query:
        return drafter
    overrides: dict[str, Any] = {}
    for item in query.split("&"):
        key, sep, value = item.partition("=")
        if not sep or key not in ("tree", "depth", "top_k", "total_tokens", "paths"):
            raise InputError(
                f"'{kind}:{argument}': options are tree=chain|static|dynamic, depth=N, top_k=N, total_tokens=N, "
                f"paths=0,1,00,01 (static tree: each path the candidate ranks per level) joined by '&'; got {item!r}."
            )
        if key == "tree":
            overrides[key] = value
        elif key == "paths":
            if not all(p.isdigit() for p in value.split(",")):
                raise InputError(f"'{kind}:{argument}': paths are comma-separated rank digits such as "
                                 f"paths=0,1,00,01,000; got {value!r}.")
            overrides["static_paths"] = [[int(c) for c in p] for p in value.split(",")]
        elif value.isdigit():
            overrides[key] = int(value)
        else:
            raise InputError(f"'{kind}:{argument}': {key} needs a positive integer, got {value!r}.")
    fields = drafter.config.to_dict()
    fields.update(overrides)
    if "static_paths" in overrides and fields["tree"] != "static":
        raise InputError(f"'{kind}:{argument}': paths= needs tree=static.")
    if fields["tree"] != "static":
        fields["static_paths"] = None
    return drafter.with_config(cls.config_class.from_dict(fields))
