"""SpecVLM drafter: EagleVLM (EAGLE + input LayerNorm) with an elastic compressor on its visual tokens.

The target still sees every image token; only the drafter's copy of each image is
compressed (its projected features [n, H] -> [r, H], fed straight into the decoder layer at
the positions of the image's last r tokens, see image_tokens). Operators, each with its own
ratio (r for n tokens):
    "prune"     keep the ceil(n / prune_ratio) best tokens of a learned scorer, in image order
                (straight-through: the forward value is the token, the scorer gets gradients)
    "pool"      average over windows of pool_ratio consecutive tokens: ceil(n / pool_ratio)
    "conv"      depthwise strided Conv1d, kernel = stride = conv_ratio (zero-padded right):
                ceil(n / conv_ratio); initialised as averaging
    "resample"  resampler_queries learned queries, one cross-attention: resampler_queries
    "text"      text-only: no visual tokens (0)
Combination (`combine`):
    "top1"   (default) a gate on [question ; image] features picks ONE operator per sample:
             hard Gumbel-softmax (straight-through) in train(), argmax in eval() (deterministic)
    "mix"    the gate's softmax weights mix all operators' outputs, each linearly interpolated
             along the token axis to the longest output (text-only contributes zeros)
    "concat" every operator's output, concatenated (no gate)
The gate reads LayerNorm([q ; v]): q = mean target hidden state over the prompt's text
positions (the question, read in its image context), v = mean projected feature over all
of the sample's images. One decision per sample, applied to each of its images.
Which operator each sample used: `drafter.last_choice` (this sequence) and
`drafter.choices` (recent samples, shared by a batch's forks, in begin order); in training
`drafter.last_train_details.info` and the "metric/gate/<operator>" extras of forward_train.
Spec string: `specvlm:PATH`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core.drafter import DraftContext
from ..errors import InputError
from .eagle import EagleConfig, _is_int
from .image_tokens import Span
from .vision_common import (
    QueryCrossAttention,
    VisionEagleDrafter,
    ceil_div,
    check_optional_heads,
    question_feature,
    resolve_heads,
    vision_spec_factory,
)

OPERATORS = ("prune", "pool", "conv", "resample", "text")
COMBINE_MODES = ("top1", "mix", "concat")
CHOICE_LOG_SIZE = 1024


@dataclass(frozen=True)
class SpecVLMConfig(EagleConfig):
    """EagleConfig fields (input_norm on by default: EagleVLM) plus the elastic compressor."""

    input_norm: bool = True
    operators: tuple[str, ...] = OPERATORS  # subset of OPERATORS, in gate order
    prune_ratio: float = 4.0  # keep ceil(n / prune_ratio) tokens
    pool_ratio: int = 4  # window of the average pooling
    conv_ratio: int = 3  # kernel = stride of the depthwise convolution
    resampler_queries: int = 2  # tokens out of the resampler
    combine: str = "top1"  # "top1" | "mix" | "concat"
    gumbel_tau: float = 1.0  # Gumbel-softmax temperature (training, combine="top1")
    num_heads: int | None = None  # resampler attention heads; None = the target's head count

    def __post_init__(self) -> None:
        super().__post_init__()
        operators = self.operators
        if isinstance(operators, str) or not all(isinstance(o, str) for o in operators or ()):
            raise InputError(f"SpecVLMConfig.operators must be a list of operator names; got {operators!r}.")
        operators = tuple(operators)
        unknown = [o for o in operators if o not in OPERATORS]
        if not operators or unknown or len(set(operators)) != len(operators):
            raise InputError(
                f"SpecVLMConfig.operators must be distinct names out of {', '.join(OPERATORS)}; got {list(operators)}."
            )
        object.__setattr__(self, "operators", operators)
        number = isinstance(self.prune_ratio, (int, float)) and not isinstance(self.prune_ratio, bool)
        if not (number and self.prune_ratio >= 1):
            raise InputError(f"SpecVLMConfig.prune_ratio must be a number >= 1; got {self.prune_ratio!r}.")
        for name in ("pool_ratio", "conv_ratio", "resampler_queries"):
            value = getattr(self, name)
            if not (_is_int(value) and value >= 1):
                raise InputError(f"SpecVLMConfig.{name} must be an integer >= 1; got {value!r}.")
        if self.combine not in COMBINE_MODES:
            raise InputError(f"SpecVLMConfig.combine must be one of {', '.join(COMBINE_MODES)}; got {self.combine!r}.")
        tau_ok = isinstance(self.gumbel_tau, (int, float)) and not isinstance(self.gumbel_tau, bool)
        if not (tau_ok and self.gumbel_tau > 0):
            raise InputError(f"SpecVLMConfig.gumbel_tau must be > 0; got {self.gumbel_tau!r}.")
        check_optional_heads("SpecVLMConfig.num_heads", self.num_heads)

    def tokens_for(self, operator: str, n: int) -> int:
        """How many tokens `operator` makes out of an image of n tokens."""
        if operator == "prune":
            return ceil_div(n, self.prune_ratio)
        if operator == "pool":
            return ceil_div(n, self.pool_ratio)
        if operator == "conv":
            return ceil_div(n, self.conv_ratio)
        if operator == "resample":
            return self.resampler_queries
        if operator == "text":
            return 0
        raise InputError(f"Unknown compressor operator {operator!r}; use one of {', '.join(OPERATORS)}.")


@dataclass(frozen=True)
class CompressorChoice:
    """What the compressor did for one sample."""

    combine: str  # "top1" | "mix" | "concat"
    operator: str | None  # top1: the operator used; None for mix / concat / a sample without images
    weights: dict = field(default_factory=dict)  # gate probabilities per operator (top1, mix)
    tokens_per_image: tuple[int, ...] = ()  # drafter tokens each image became


class ElasticCompressor(nn.Module):
    """The operators, their combination and the gate (see module doc)."""

    def __init__(self, config: SpecVLMConfig, hidden: int, heads: int, device=None, dtype=None) -> None:
        super().__init__()
        self.config = config
        factory = dict(device=device, dtype=dtype)
        ops = config.operators
        self.prune_scorer = nn.Linear(hidden, 1, **factory) if "prune" in ops else None
        self.conv = None
        if "conv" in ops:
            r = config.conv_ratio
            self.conv = nn.Conv1d(hidden, hidden, kernel_size=r, stride=r, groups=hidden, **factory)
            with torch.no_grad():
                self.conv.weight.fill_(1.0 / r)  # [H, 1, r] averaging at initialisation
                self.conv.bias.zero_()
        self.resampler = None
        if "resample" in ops:
            self.resampler = QueryCrossAttention(hidden, config.resampler_queries, heads, **factory)
        self.gate = None
        if config.combine != "concat" and len(ops) > 1:
            self.gate = nn.Sequential(nn.LayerNorm(2 * hidden, **factory), nn.Linear(2 * hidden, len(ops), **factory))

    def apply(self, operator: str, x: torch.Tensor) -> torch.Tensor:
        """One operator on one image: x [n, H] -> [config.tokens_for(operator, n), H]."""
        n, hidden = x.shape
        if operator == "text" or n == 0:
            return x.new_zeros(0, hidden)
        if operator == "resample":
            return self.resampler(x)  # [queries, H]
        if operator == "prune":
            keep = self.config.tokens_for("prune", n)
            scores = self.prune_scorer(x).squeeze(-1)  # [n]
            index = scores.topk(keep).indices.sort().values  # [keep] in image order
            kept = scores[index]
            return _straight_through(x[index], kept[:, None])  # value: the tokens; gradient: to the scorer
        ratio = self.config.pool_ratio if operator == "pool" else self.config.conv_ratio
        out_len = -(-n // ratio)
        padded = F.pad(x, (0, 0, 0, out_len * ratio - n))  # [out_len * ratio, H] zero rows at the end
        if operator == "pool":
            counts = torch.clamp(n - torch.arange(out_len, device=x.device) * ratio, max=ratio)  # [out_len]
            return padded.view(out_len, ratio, hidden).sum(1) / counts[:, None].to(x.dtype)
        if operator == "conv":
            return self.conv(padded.T[None])[0].T  # [out_len, H]
        raise InputError(f"Unknown compressor operator {operator!r}; use one of {', '.join(OPERATORS)}.")

    def gate_logits(self, question: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """question [H], image [H] -> [num_operators] logits."""
        return self.gate(torch.cat([question, image]).to(self.gate[1].weight.dtype))

    def forward(
        self, features: list[torch.Tensor], question: torch.Tensor,
        temperature: float | None = None, generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], CompressorChoice]:
        """Per image [n_j, H] -> per image [r_j, H], and the choice made for this sample.
        In train() mode, top1 draws a hard Gumbel-softmax choice (temperature: None = config's
        gumbel_tau; noise from `generator` on the CPU); in eval() mode it takes the argmax."""
        ops, mode = self.config.operators, self.config.combine
        if mode == "concat":
            slots = [torch.cat([self.apply(op, f) for op in ops]) for f in features]
            return slots, CompressorChoice(mode, None, {}, tuple(s.shape[0] for s in slots))
        if self.gate is None:  # a single operator: nothing to choose
            weights_full = torch.ones(1, device=question.device)
            scale = None
        else:
            logits = self.gate_logits(question, torch.cat(features).mean(0))  # [K]
            weights_full = logits.float().softmax(-1)
            scale = None
            if mode == "top1" and self.training:
                tau = self.config.gumbel_tau if temperature is None else float(temperature)
                scale = _hard_gumbel_softmax(logits.float(), tau, generator)  # [K] one-hot, soft gradients
        weights = {op: float(w) for op, w in zip(ops, weights_full.detach().tolist())}
        if mode == "top1":
            k = int((scale if scale is not None else weights_full).argmax())
            slots = [self.apply(ops[k], f) for f in features]
            if scale is not None:  # straight-through: value unchanged, gradient reaches the gate
                slots = [_straight_through(s, scale[k].to(s.dtype)) for s in slots]
            return slots, CompressorChoice(mode, ops[k], weights, tuple(s.shape[0] for s in slots))
        slots = []  # mix
        for f in features:
            outs = [self.apply(op, f) for op in ops]
            length = max(o.shape[0] for o in outs)
            mixed = f.new_zeros(length, f.shape[1])
            for w, out in zip(weights_full, outs):
                if out.shape[0]:
                    mixed = mixed + w.to(f.dtype) * _resize_tokens(out, length)
            slots.append(mixed)
        return slots, CompressorChoice(mode, None, weights, tuple(s.shape[0] for s in slots))


def _hard_gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    """logits [K] -> one-hot [K] with the soft Gumbel-softmax's gradients (noise drawn on the CPU)."""
    uniform = torch.rand(logits.shape, generator=generator, dtype=torch.float32).clamp_(1e-9, 1 - 1e-9)
    soft = ((logits - torch.log(-torch.log(uniform)).to(logits.device)) / tau).softmax(-1)  # [K]
    hard = F.one_hot(soft.argmax(), soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def _straight_through(value: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Exactly `value` in the forward pass; d/d(weight) as for value * weight."""
    return value + value * (weight - weight.detach())


def _resize_tokens(x: torch.Tensor, length: int) -> torch.Tensor:
    """x [n >= 1, H] -> [length, H] by linear interpolation along the token axis."""
    if x.shape[0] == length:
        return x
    return F.interpolate(x.T[None], size=length, mode="linear", align_corners=False)[0].T


class SpecVLMDrafter(VisionEagleDrafter):
    """EagleVLM (input LayerNorm) + elastic visual compressor with a question-conditioned gate."""

    drafter_kind = "specvlm"
    config_class = SpecVLMConfig

    def _build_vision(self, factory: dict, text_config) -> None:
        heads = resolve_heads(self.config.num_heads, text_config, self.hidden_size, "SpecVLMConfig")
        self.compressor = ElasticCompressor(self.config, self.hidden_size, heads, **factory)
        self.choices: collections.deque = collections.deque(maxlen=CHOICE_LOG_SIZE)  # shared by forks
        self.last_choice: CompressorChoice | None = None

    def _image_slots(self, features, spans: list[Span], hidden, prompt_length, train_options=None):
        question = question_feature(hidden, spans, prompt_length)  # [H]
        options = train_options or {}
        return self.compressor(features, question, options.get("gate_temperature"), options.get("generator"))

    def _train_metrics(self, infos: list, device) -> dict:
        """metric/gate/<operator>: share of the batch's samples that used it (top1) or mean weight (mix)."""
        chosen = [c for c in infos if c is not None]
        if not chosen or self.config.combine == "concat":
            return {}
        metrics = {}
        for op in self.config.operators:
            if self.config.combine == "top1":
                value = sum(c.operator == op for c in chosen) / len(chosen)
            else:
                value = sum(c.weights.get(op, 0.0) for c in chosen) / len(chosen)
            metrics[f"metric/gate/{op}"] = torch.tensor(float(value), device=device)
        return metrics

    @torch.inference_mode()
    def begin(self, context: DraftContext) -> None:
        super().begin(context)
        choice = self._images.info or CompressorChoice(self.config.combine, None)  # None: no image
        self.last_choice = choice
        self.choices.append(choice)


specvlm_from_spec = vision_spec_factory(SpecVLMDrafter)
