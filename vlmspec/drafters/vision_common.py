"""What the three vision-aware drafters (ViSpec, MSD, SpecVLM) share on top of the EagleDrafter.

`VisionEagleDrafter` is an EagleDrafter whose sequence differs from the target's at image
positions: each image's tokens are replaced by "slots" (vectors fed straight into the
decoder layer, no fc, no target hidden state) that a subclass computes once per image in
`begin` (`_image_slots`), placed as `image_tokens.DrafterLayout` says. Text positions use
the EAGLE input, which a subclass may change (`_text_states`, e.g. ViSpec's global image
feature). Everything else (chains, static and dynamic trees, sampling, VocabTrim,
fingerprinted save/load, spec strings, forks for batches) is the EagleDrafter's.

Positions and caches: RoPE position ids are the target's absolute positions (dropped image
positions are gaps, see image_tokens); the KV cache is compact (one entry per drafter
entry, so it never holds the dropped image positions); `_fed` counts the target positions
fed so far (the EagleDrafter's `_fed_positions` hook), which is what `_catch_up` and the
draft trees use. Per-sequence state (`_images`, `_fed`, the cache) is created in `begin`,
so `fork()` copies for a batch share weights only.

Training hook: `forward_train(next_ids, target_hidden, attention_mask, image_features=...,
image_spans=..., prompt_lengths=..., gate_temperature=..., generator=...)` builds every
sample's drafter sequence exactly as inference does and returns (draft_hidden, draft_logits,
extras) on the target's position grid (see `VisionTrainOutput`; per-position masks and
per-sample choices in `drafter.last_train_details`). This is the interface
vlmspec.training.adapters.VisionDrafterAdapter calls.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import torch
from torch import nn

from ..core.cache import cache_length
from ..core.drafter import DraftContext
from ..errors import InputError
from .eagle import EagleConfig, EagleDrafter
from .image_tokens import DrafterLayout, Span, check_images

DRAFTING_FIELDS = ("tree", "depth", "top_k", "total_tokens", "static_paths")  # may change in with_config


def check_optional_heads(name: str, value: Any) -> None:
    if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise InputError(f"{name} must be an integer >= 1 or None (the target's head count); got {value!r}.")


def resolve_heads(requested: int | None, text_config, hidden: int, owner: str) -> int:
    """Attention heads for a cross-attention over H-wide tokens: requested, else the target's."""
    heads = requested if requested is not None else int(getattr(text_config, "num_attention_heads", 1) or 1)
    if hidden % heads:
        raise InputError(f"{owner}.num_heads={heads} must divide the hidden size {hidden}.")
    return heads


class QueryCrossAttention(nn.Module):
    """`num_queries` learned queries, ONE multi-head cross-attention over one image's tokens.

    tokens [n, H] (n >= 1, any n) -> [num_queries, H]. Keys/values are LayerNorm-ed first.
    """

    def __init__(self, hidden: int, num_queries: int, num_heads: int, device=None, dtype=None) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, hidden, device=device, dtype=dtype) * hidden**-0.5)
        self.norm = nn.LayerNorm(hidden, device=device, dtype=dtype)
        self.attn = nn.MultiheadAttention(hidden, num_heads, batch_first=True, device=device, dtype=dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape[0] == 0:
            raise InputError(f"cross-attention needs one image's tokens [n >= 1, H]; got {tuple(tokens.shape)}.")
        kv = self.norm(tokens)[None]  # [1, n, H]
        out, _ = self.attn(self.queries[None], kv, kv, need_weights=False)  # [1, q, H]
        return out[0]


def question_feature(hidden: torch.Tensor, spans: Sequence[Span], prompt_length: int) -> torch.Tensor:
    """Mean target hidden state over the prompt's text positions: hidden [T, H] -> [H]."""
    text = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
    text[min(prompt_length, hidden.shape[0]) :] = False
    for start, end in spans:
        text[start:end] = False
    if not text.any():
        return hidden.new_zeros(hidden.shape[-1])
    return hidden[text].mean(0)


@dataclass
class SequenceImages:
    """One sequence's images as the drafter sees them."""

    layout: DrafterLayout
    slots: torch.Tensor  # [S, H] every image's slot vectors, image after image
    info: Any  # what the subclass keeps per sequence (ViSpec: global features; SpecVLM: its choice)


class VisionTrainOutput(NamedTuple):
    """forward_train's result, on the target's position grid [B, T] of the inputs.

    draft_hidden [B, T, H]: at position i the drafter's prediction of h_{i+1} (zeros where the
        drafter has no entry: dropped image positions and padding);
    draft_logits [B, T, V']: lm_head of draft_hidden (predictions of t_{i+2});
    extras: {"metric/<name>": scalar tensor} to log (visual_token_ratio = drafter entries per
        image token; SpecVLM: gate/<operator> = share of samples, or mean weight for "mix").
    """

    draft_hidden: torch.Tensor
    draft_logits: torch.Tensor
    extras: dict


@dataclass
class TrainDetails:
    """What the last forward_train did, per position and per sample (`drafter.last_train_details`)."""

    output_mask: torch.Tensor  # [B, T] bool: positions with a drafter entry (text and slot positions)
    text_mask: torch.Tensor  # [B, T] bool: text entries (the EAGLE input) - where the losses usually go
    info: list  # per sample what the drafter chose (SpecVLM: CompressorChoice; others: None)


class VisionEagleDrafter(EagleDrafter):
    """Base of ViSpec / MSD / SpecVLM: image positions replaced by per-image slots (see module doc)."""

    config_class = EagleConfig

    def __init__(self, target, config=None, draft_vocab: Any = None) -> None:
        config = self.config_class() if config is None else config
        if type(config) is not self.config_class:
            raise InputError(
                f"{type(self).__name__} needs a {self.config_class.__name__}; got {type(config).__name__}."
            )
        super().__init__(target, config, draft_vocab=draft_vocab)
        param = next(target.model.parameters())
        self._build_vision(dict(device=param.device, dtype=param.dtype), target.model.config.get_text_config())
        self._images: SequenceImages | None = None
        self._fed = 0
        self.eval()

    @classmethod
    def from_target(cls, target, config=None, **kwargs):
        """An untrained drafter (see EagleDrafter.from_target); config None = the default config."""
        return super().from_target(target, cls.config_class() if config is None else config, **kwargs)

    # ----------------------------------------------------------- subclass hooks
    def _build_vision(self, factory: dict, text_config) -> None:
        """Create the drafter's own vision modules (seeded by from_target)."""

    def _image_slots(
        self, features: list[torch.Tensor], spans: list[Span], hidden: torch.Tensor, prompt_length: int,
        train_options: dict | None = None,
    ) -> tuple[list[torch.Tensor], Any]:
        """Per image [r_j, H] slot vectors (any r_j >= 0) and per-sequence info.

        features: per image [n_j, H] projected features; spans: their [start, end) target
        positions; hidden [T, H]: the target features of the sequence (`fuse_features`; at inference
        the prompt's); prompt_length: P (the question is the prompt's text); train_options:
        forward_train's gate_temperature / generator (None at inference).
        """
        raise NotImplementedError

    def _text_states(
        self, token_ids: torch.Tensor, hidden: torch.Tensor, positions: torch.Tensor, images: SequenceImages | None
    ) -> torch.Tensor:
        """Layer inputs of text entries: token_ids [B, m], hidden [B, m, H], positions [B, m] -> [B, m, H]."""
        return EagleDrafter._input_states(self, token_ids, hidden, positions)

    # -------------------------------------------------------------- plumbing
    def with_config(self, config):
        """A drafter sharing these weights but drafting differently (only tree/depth/top_k/... may change)."""
        if type(config) is not type(self.config):
            raise InputError(f"with_config needs a {type(self.config).__name__}; got {type(config).__name__}.")
        fixed = [f.name for f in dataclasses.fields(config) if f.name not in DRAFTING_FIELDS]
        changed = [name for name in fixed if getattr(config, name) != getattr(self.config, name)]
        if changed:
            raise InputError(f"with_config can only change how the drafter drafts, not {', '.join(changed)}.")
        return super().with_config(config)

    def _fed_positions(self) -> int:
        return self._fed

    def _sequence_images(
        self, features: Sequence[torch.Tensor], spans: Sequence[Span], hidden: torch.Tensor,
        prompt_length: int, needs_output: int | None, train_options: dict | None = None,
    ) -> SequenceImages:
        features = [f.to(hidden.dtype) for f in features]
        spans = [tuple(int(x) for x in s) for s in spans]
        check_images(features, spans, self.hidden_size)
        slots, info = ([], None)
        if features:
            slots, info = self._image_slots(features, spans, hidden, prompt_length, train_options)
        layout = DrafterLayout.build(hidden.shape[0], spans, [s.shape[0] for s in slots], needs_output)
        stacked = torch.cat(slots) if slots else hidden.new_zeros(0, self.hidden_size)  # [S, H]
        return SequenceImages(layout, stacked, info)

    @torch.inference_mode()
    def begin(self, context: DraftContext) -> None:
        state = context.state
        if state.prompt_hidden is None:
            raise RuntimeError(
                f"{type(self).__name__} needs the target's hidden states: prefill with need_hidden=True."
            )
        hidden = self.fuse_features(state.prompt_hidden)[0]  # [P, H]
        length = hidden.shape[0]
        self._images = self._sequence_images(
            list(state.image_features), list(state.image_spans), hidden, length, needs_output=length - 1
        )
        self._fed = 0
        super().begin(context)  # feeds target positions 0 .. P-2 through _feed

    def end(self) -> None:
        super().end()
        self._images = None

    def _input_states(self, token_ids, target_hidden, positions):
        return self._text_states(token_ids, target_hidden, positions, self._images)

    def _feed(self, next_ids: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor | None:
        """Feed target positions [fed, fed + m): next_ids [1, m], hidden [1, m, H] -> outputs
        [1, L, H] of the L drafter entries they hold (the last one belongs to the last position
        whenever the drafter needs an output there), None when L = 0."""
        m = next_ids.shape[1]
        if m == 0:
            return None
        first, device = self._fed, hidden.device
        positions, slots = self._images.layout.entries(first, first + m)  # [L], [L]
        self._fed = first + m
        if positions.numel() == 0:
            return None
        positions, slots = positions.to(device), slots.to(device)
        target_positions = torch.arange(first, first + m, device=device)[None]  # [1, m]
        text = self._input_states(next_ids, hidden, target_positions)[0]  # [m, H]
        inputs = text[positions - first]  # [L, H]
        is_slot = slots >= 0
        if is_slot.any():
            inputs = torch.where(is_slot[:, None], self._images.slots[slots.clamp_min(0)].to(inputs.dtype), inputs)
        length, start = positions.shape[0], cache_length(self.cache)
        mask = torch.ones(1, 1, length, start + length, dtype=torch.bool, device=device)
        mask[0, 0, :, start:] = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        return self._layer_forward(inputs[None], positions[None], mask, self.cache)  # [1, L, H]

    # ----------------------------------------------------------- training hook
    def forward_train(
        self,
        input_embeds_ids: torch.Tensor,
        target_hidden: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        image_features: Sequence[Sequence[torch.Tensor]] | None = None,
        image_spans: Sequence[Sequence[Span]] | None = None,
        prompt_lengths: Sequence[int] | None = None,
        gate_temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> VisionTrainOutput:
        """Teacher-forced pass over whole sequences (no cache), built exactly as inference builds them.

        input_embeds_ids [B, T]: t_{i+1} at column i (ids[:, 1:] of the full sequences);
        target_hidden [B, T, H]: the target's last-layer states h_i (hidden_states[-1][:, :-1]),
            or noised / the drafter's own predictions (training-time test);
        attention_mask [B, T]: 1 = real token, 0 = padding (left or right); None = all real;
        image_features: per sample, per image [n_j, H] projected features (the target's
            `get_image_features(...).pooler_output`, e.g. TargetState.image_features);
        image_spans: per sample, per image [start, end) in TARGET POSITIONS of that sample
            (unpadded index = column index with right padding;
            `image_tokens.spans_for(ids, image_token_id, features)`);
        prompt_lengths: per sample P, the prompt length. The question (SpecVLM's gate) is the
            prompt's text, and a slot-less image position at P-1 gets a text entry, as at
            inference. Pass it for SpecVLM; None = the whole sequence counts as the question;
        gate_temperature: SpecVLM's Gumbel-softmax temperature (None = config.gumbel_tau);
        generator: CPU generator for the Gumbel noise (reproducible runs).
        Returns VisionTrainOutput (draft_hidden, draft_logits, extras); per-position masks and
        per-sample choices go to `self.last_train_details` (TrainDetails). Gradients reach fc,
        the layer, the norms, img_fc, the adaptor / compressor / gate (and a trainable head),
        never the target's embedding or head. SpecVLM's gate draws a hard Gumbel-softmax choice
        in train() mode (straight-through), argmax in eval() mode.
        """
        batch, width = input_embeds_ids.shape
        if target_hidden.shape[:2] != (batch, width) or target_hidden.shape[-1] != self.hidden_size:
            raise InputError(
                f"forward_train: target_hidden {tuple(target_hidden.shape)} must be [B, T, {self.hidden_size}] "
                f"with [B, T] = {tuple(input_embeds_ids.shape)}."
            )
        device = target_hidden.device
        image_features = [[] for _ in range(batch)] if image_features is None else list(image_features)
        image_spans = [[] for _ in range(batch)] if image_spans is None else list(image_spans)
        if len(image_features) != batch or len(image_spans) != batch:
            raise InputError(f"forward_train: image_features and image_spans need one entry per sample ({batch}).")
        if prompt_lengths is not None and len(prompt_lengths) != batch:
            raise InputError(f"forward_train: prompt_lengths needs one length per sample ({batch}).")
        if attention_mask is None:
            attention_mask = torch.ones(batch, width, dtype=torch.long, device=device)
        train_options = dict(gate_temperature=gate_temperature, generator=generator)
        rows, infos, columns_of, kept_counts = [], [], [], []
        for b in range(batch):
            columns = attention_mask[b].bool().nonzero().flatten()  # [n] real columns = positions 0 .. n-1
            hidden = target_hidden[b, columns]  # [n, H]
            n = columns.shape[0]
            prompt_length = n if prompt_lengths is None else int(prompt_lengths[b])
            images = self._sequence_images(
                image_features[b], image_spans[b], hidden, prompt_length,
                needs_output=None if prompt_lengths is None else prompt_length - 1, train_options=train_options,
            )
            positions, slots = images.layout.entries(0, n)  # [L], [L]
            positions, slots = positions.to(device), slots.to(device)
            text = self._text_states(
                input_embeds_ids[b, columns][None], hidden[None], torch.arange(n, device=device)[None], images
            )[0]  # [n, H]
            inputs = text[positions]
            if (slots >= 0).any():
                inputs = torch.where((slots >= 0)[:, None], images.slots[slots.clamp_min(0)].to(inputs.dtype), inputs)
            rows.append((inputs, positions, slots))
            kept_counts.append(images.layout.slot_counts)
            infos.append(images.info)
            columns_of.append(columns)
        longest = max(r[0].shape[0] for r in rows)
        inputs = target_hidden.new_zeros(batch, longest, self.hidden_size)  # [B, L, H] right-padded
        position_ids = torch.zeros(batch, longest, dtype=torch.long, device=device)
        real = torch.zeros(batch, longest, dtype=torch.bool, device=device)
        for b, (x, p, _) in enumerate(rows):
            inputs[b, : x.shape[0]] = x
            position_ids[b, : p.shape[0]] = p
            real[b, : x.shape[0]] = True
        causal = torch.ones(longest, longest, dtype=torch.bool, device=device).tril()
        mask = (causal[None] & real[:, None, :]) | torch.eye(longest, dtype=torch.bool, device=device)[None]
        outputs = self._layer_forward(inputs, position_ids, mask[:, None])  # [B, L, H]

        draft_hidden = target_hidden.new_zeros(batch, width, self.hidden_size)
        output_mask = torch.zeros(batch, width, dtype=torch.bool, device=device)
        text_mask = torch.zeros(batch, width, dtype=torch.bool, device=device)
        for b, (x, p, s) in enumerate(rows):
            last = torch.ones_like(p, dtype=torch.bool)
            last[:-1] = p[1:] != p[:-1]  # several slots on one position: keep the last one's output
            cols = columns_of[b][p[last]]
            draft_hidden[b, cols] = outputs[b, : x.shape[0]][last]
            output_mask[b, cols] = True
            text_mask[b, cols] = s[last] < 0
        self.last_train_details = TrainDetails(output_mask, text_mask, infos)
        image_tokens = sum(f.shape[0] for sample in image_features for f in sample)
        slots = sum(sum(layout_counts) for layout_counts in kept_counts)
        extras = {}
        if image_tokens:
            extras["metric/visual_token_ratio"] = torch.tensor(slots / image_tokens, device=device)
        extras.update(self._train_metrics(infos, device))
        return VisionTrainOutput(draft_hidden, self._logits(draft_hidden), extras)

    def _train_metrics(self, infos: list, device) -> dict:
        """Extra "metric/<name>" scalars of a forward_train (subclasses: e.g. the gate's choices)."""
        return {}


def ceil_div(n: int, ratio: float) -> int:
    """Tokens kept out of n at a compression ratio (at least one when n > 0)."""
    return max(1, math.ceil(n / ratio)) if n > 0 else 0


def vision_spec_factory(cls: type):
    """factory(argument, target) for 'KIND:PATH[?tree=...&depth=...&top_k=...&total_tokens=...]'."""
    from .eagle import eagle_from_spec

    def factory(argument: str | None, target):
        return eagle_from_spec(argument, target, cls=cls)

    factory.__doc__ = f"'{cls.drafter_kind}:PATH[?tree=...&depth=N&top_k=N&total_tokens=N]' -> {cls.__name__}"
    return factory


__all__ = [
    "QueryCrossAttention",
    "SequenceImages",
    "TrainDetails",
    "VisionEagleDrafter",
    "VisionTrainOutput",
    "ceil_div",
    "question_feature",
    "vision_spec_factory",
]
