"""The target VLM: a stock transformers LLaVA-style model plus its processor.

`Target` loads a checkpoint (local dir or name in the local HF cache) or wraps an
already-loaded model, turns (images, prompt) into model inputs through the chat
template, prefills once (each image is encoded once, its projected features kept),
scores candidate tokens on top of the KV cache in one forward, and rolls the cache back
to what was accepted. Hidden states are returned only when a drafter asks for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, DynamicCache

from .core.cache import cache_kwargs, cache_length, keep_positions, truncate_cache
from .core.features import select_features
from .core.masks import model_mask
from .core.tree import is_chain, tree_attention
from .errors import ContextLengthError, InputError, ModelLoadError, NumericalError, PromptError, UnsupportedError
from .hub import resolve_checkpoint
from .quiet import quiet_transformers

# Architectures whose prefill / cache / image-token layout vlmspec is tested against.
SUPPORTED_MODEL_TYPES = ("llava", "llava_next")


@dataclass(frozen=True)
class TargetConfig:
    device: str | None = None  # default: "cuda" when available, else "cpu"
    dtype: str | torch.dtype | None = None  # default: float32 on CPU, the checkpoint's dtype on GPU
    trust_remote_code: bool = False
    local_files_only: bool | None = None  # default: True when HF_HUB_OFFLINE is set
    # CPU only: pre-packed linear weights so verifying k tokens costs close to one.
    # "auto" measures once per machine and model (cached) and keeps them only where
    # multi-token verification got cheaper; True always; False never. Outputs are unchanged.
    fast_cpu: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.fast_cpu not in (True, False, "auto"):
            raise ModelLoadError(f"fast_cpu must be True, False or 'auto', got {self.fast_cpu!r}.")
        self.resolved_device()  # an unusable device or dtype fails here, in one line, before any loading
        self.resolved_dtype()

    def resolved_device(self) -> torch.device:
        if self.device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError, ValueError):
            raise ModelLoadError(f"Unknown device {self.device!r}; use cpu, cuda, cuda:N or mps.") from None
        usable = {"cpu": lambda: True, "cuda": torch.cuda.is_available,
                  "mps": lambda: torch.backends.mps.is_available()}.get(device.type, lambda: False)
        if not usable():
            raise ModelLoadError(f"Device {self.device!r} is not usable on this machine; use --device cpu "
                                 "(or leave it out: cuda when a GPU is present, else cpu).")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelLoadError(f"Device {self.device!r} does not exist: this machine has "
                                 f"{torch.cuda.device_count()} GPU(s).")
        return device

    def resolved_dtype(self) -> torch.dtype | str:
        if isinstance(self.dtype, torch.dtype):
            return self.dtype
        if isinstance(self.dtype, str) and self.dtype != "auto":
            dtype = getattr(torch, self.dtype, None)
            if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
                raise ModelLoadError(f"Unknown dtype {self.dtype!r}; use float32, bfloat16 or float16.")
            return dtype
        if self.dtype == "auto" or self.resolved_device().type != "cpu":
            return "auto"
        return torch.float32


@dataclass
class TargetState:
    """Everything one generation keeps about the target between forwards."""

    cache: Any  # transformers Cache holding every committed token except the last one
    prompt_ids: torch.Tensor  # [1, prompt_len]
    model_inputs: dict  # the processor outputs the prefill used (pixel_values, image_sizes, ...)
    image_features: list[torch.Tensor]  # per image: [n_image_tokens_i, hidden] projected features
    image_spans: list[tuple[int, int]] = field(default_factory=list)  # per image: [start, end) of its tokens
    prompt_hidden: torch.Tensor | None = None  # [1, prompt_len, hidden] last-layer states, when asked
    pad_mask: torch.Tensor | None = None  # [1, prompt_len] 1 = real token, 0 = left padding; None: no padding

    @property
    def num_pads(self) -> int:
        return 0 if self.pad_mask is None else int((self.pad_mask == 0).sum())


@dataclass
class TargetOutput:
    logits: torch.Tensor  # [1, n, vocab]
    hidden: torch.Tensor | None  # [1, n, hidden] last-layer states, when asked


class Target:
    """A LLaVA-style image-text-to-text model with the operations speculative decoding needs."""

    def __init__(self, model, processor) -> None:
        model_type = getattr(model.config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES or not hasattr(model, "get_image_features"):
            raise ModelLoadError(
                f"{type(model).__name__} (model_type={model_type!r}) is not a LLaVA-style image-text-to-text "
                f"model; vlmspec supports {', '.join(SUPPORTED_MODEL_TYPES)}."
            )
        if getattr(processor, "tokenizer", None) is None:
            raise ModelLoadError("The processor has no tokenizer; pass the checkpoint's AutoProcessor.")
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token_id = image_token_id_of(model.config)
        if self.image_token_id is None:
            raise ModelLoadError("The model config has no image_token_id / image_token_index; it is not LLaVA-style.")
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        text_config = model.config.get_text_config()
        self.max_context = int(getattr(text_config, "max_position_embeddings", 0) or 0) or None
        self.eos_token_ids = _eos_ids(model)
        self.fast_cpu_report = "off"

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, name_or_path: str | os.PathLike, config: TargetConfig = TargetConfig()) -> "Target":
        source = str(name_or_path)
        local_only = config.local_files_only
        if local_only is None:
            local_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        is_dir = Path(source).is_dir()
        if not is_dir and (Path(source).exists() or source.startswith((".", "/", "~"))):
            raise ModelLoadError(f"Target path {source} is not a directory; pass a checkpoint directory or name.")
        name = source
        if not is_dir:  # a checkpoint name: the local cache first, no network (vlmspec.hub)
            source, local_only = resolve_checkpoint(source, local_only)
        kwargs = dict(trust_remote_code=config.trust_remote_code, local_files_only=local_only)
        try:
            hf_config = AutoConfig.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
            where = (f"directory {name!r}" if is_dir else f"checkpoint {name!r} (from the Hub)" if source == name
                     else f"checkpoint {name!r} (cached at {source})")
            raise ModelLoadError(
                f"Could not load a model config from {where}: {exc}. Pass a local directory holding "
                "a LLaVA-style checkpoint (config.json, weights, processor files), or download the checkpoint "
                "into the Hugging Face cache first."
            ) from None
        if hf_config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelLoadError(
                f"{name!r} is a {hf_config.model_type!r} checkpoint, not a LLaVA-style image-text-to-text "
                f"model; vlmspec supports {', '.join(SUPPORTED_MODEL_TYPES)}."
            )
        device = config.resolved_device()
        try:
            processor = AutoProcessor.from_pretrained(source, **kwargs)
            with quiet_transformers():  # no "Loading weights" bar
                model = AutoModelForImageTextToText.from_pretrained(source, dtype=config.resolved_dtype(), **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Could not load the LLaVA checkpoint {name!r}: {exc}") from None
        except SafetensorError as exc:
            raise ModelLoadError(f"Could not load the LLaVA checkpoint {name!r}: its weights are not a readable "
                                 f"safetensors file ({exc}); the file is truncated or corrupt. Copy or download "
                                 "the checkpoint again.") from None
        target = cls(model.to(device), processor)
        target.enable_fast_cpu(config.fast_cpu)
        return target

    def enable_fast_cpu(self, mode: bool | str = "auto") -> str:
        """Switch the CPU fast path (see TargetConfig.fast_cpu); returns a one-line report."""
        from .fast import accelerate_cpu, accelerate_target, restore

        if mode is False or self.device.type != "cpu":
            restore(self.model)
            self.fast_cpu_report = "off" if mode is False else f"off: the model is on {self.device.type}"
        elif mode == "auto":
            self.fast_cpu_report = accelerate_target(self).summary()
        else:
            self.fast_cpu_report = accelerate_cpu(self.model).summary()
        return self.fast_cpu_report

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe_device(self) -> str:
        """The device, its dtype, and on CPU the threads and what ``fast_cpu`` decided: speed depends on them."""
        device = self.device
        dtype = str(self.model.dtype).removeprefix("torch.")
        if device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(device)}), {dtype}"
        return f"{device} ({torch.get_num_threads()} threads), {dtype}; fast_cpu: {self.fast_cpu_report}"

    # ------------------------------------------------------------------ inputs
    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None))

    def format_prompt(self, prompt: str, num_images: int) -> str:
        """The prompt as the model was trained to see it: through the chat template when there is one."""
        image_token = getattr(self.processor, "image_token", "<image>")
        placeholders = prompt.count(image_token)
        if placeholders:  # a raw prompt that already places its images: used as written
            if placeholders != num_images:
                raise PromptError(
                    f"The prompt holds {placeholders} {image_token} placeholder(s) but {num_images} image(s) were "
                    f"given; pass one image per {image_token}, or leave {image_token} out and vlmspec places the "
                    "images through the chat template."
                )
            return prompt
        if self.has_chat_template:
            content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": prompt}]
            return self.format_chat([{"role": "user", "content": content}])
        return f"{image_token}\n" * num_images + prompt

    def format_chat(self, messages: list[dict]) -> str:
        """A multi-turn chat (HF chat format: ``content`` a list of ``{"type": "image"}`` /
        ``{"type": "text", "text": ...}`` parts) as the model's prompt, ready for a new answer."""
        images = sum(part.get("type") == "image" for m in messages for part in m["content"])
        if self.has_chat_template:
            return self.processor.apply_chat_template(messages, add_generation_prompt=True)
        if len(messages) == 1 and messages[0]["role"] == "user":
            text = "".join(part["text"] for part in messages[0]["content"] if part.get("type") == "text")
            return self.format_prompt(text, images)
        raise PromptError(
            "This checkpoint has no chat template, so a conversation of several messages (or a system message) "
            "cannot be laid out; send one user message, or use a checkpoint whose processor has a chat_template."
        )

    def prepare(self, images: list, prompt: str) -> dict:
        """Processor outputs for `model.generate(**inputs)`: input_ids, attention_mask, pixel_values, ..."""
        return self.encode(images, self.format_prompt(prompt, len(images)))

    def prepare_chat(self, messages: list[dict], images: list) -> dict:
        """Processor outputs for a chat laid out by `format_chat` (``images`` in the order of its image parts)."""
        return self.encode(images, self.format_chat(messages))

    def encode(self, images: list, text: str) -> dict:
        """The processor on an already laid-out prompt, tensors moved to the model's device."""
        inputs = self.processor(images=images or None, text=text, return_tensors="pt")
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()}

    def check_context(self, prompt_len: int, max_new_tokens: int) -> None:
        if self.max_context and prompt_len + max_new_tokens > self.max_context:
            raise ContextLengthError(
                f"The prompt is {prompt_len} tokens (image tokens included) and max_new_tokens is "
                f"{max_new_tokens}: {prompt_len + max_new_tokens} tokens exceed the model's context of "
                f"{self.max_context}. Shorten the prompt or lower max_new_tokens to at most "
                f"{max(self.max_context - prompt_len, 0)}."
            )

    # ----------------------------------------------------------------- forwards
    @torch.inference_mode()
    def prefill(
        self, model_inputs: dict, need_hidden: bool = False, feature_layers: tuple[int, ...] | None = None
    ) -> tuple[TargetState, torch.Tensor]:
        """Run the prompt once. Returns the state and the logits for the first new token [1, vocab].
        With `need_hidden`, state.prompt_hidden holds the states `feature_layers` names (core/features.py)."""
        input_ids = model_inputs["input_ids"]  # [1, prompt_len]
        pad_mask = left_padding_mask(model_inputs.get("attention_mask"))  # [1, prompt_len] or None
        forward_inputs = {"input_ids": input_ids, "attention_mask": model_inputs.get("attention_mask")}
        if pad_mask is not None:  # positions count real tokens only, as model.generate computes them
            forward_inputs["position_ids"] = (pad_mask.cumsum(-1) - 1).masked_fill(pad_mask == 0, 0)
        image_features: list[torch.Tensor] = []
        encoder_inputs = {k: v for k, v in model_inputs.items() if k not in forward_inputs}
        if encoder_inputs.get("pixel_values") is not None:
            # Encode every image exactly once and keep the projected features per image.
            encoded = self.model.get_image_features(**encoder_inputs, return_dict=True)
            image_features = list(encoded.pooler_output)  # per image: [n_image_tokens_i, hidden]
            forward_inputs["mm_encoder_outputs"] = {"image": encoded}
        cache = DynamicCache(config=self.model.config.get_text_config())
        out = self.model(
            **forward_inputs,
            **cache_kwargs(self.model, cache),
            use_cache=True,
            logits_to_keep=1,
            output_hidden_states=need_hidden,
        )
        state = TargetState(
            cache=cache,  # filled in place by the forward
            prompt_ids=input_ids,
            model_inputs=model_inputs,
            image_features=image_features,
            image_spans=image_spans(input_ids[0], self.image_token_id, [f.shape[0] for f in image_features]),
            prompt_hidden=select_features(out.hidden_states, feature_layers) if need_hidden else None,
            pad_mask=pad_mask,
        )
        logits = out.logits[:, -1]  # [1, vocab]
        check_finite(logits)
        return state, logits

    @torch.inference_mode()
    def forward(
        self, state: TargetState, tokens: torch.Tensor, need_hidden: bool = False, parents: torch.Tensor | None = None,
        feature_layers: tuple[int, ...] | None = None,
    ) -> TargetOutput:
        """Score `tokens` [1, n] after everything in the cache; the cache grows by n.

        With `parents` [n - 1] the tokens are a tree (root first, see core/tree.py): one
        forward with a tree attention mask and per-node position ids.
        """
        cached = cache_length(state.cache)
        pads = state.num_pads  # left padding of the prompt: never attended, not counted in positions
        if parents is None or is_chain(parents):
            attention_mask = torch.ones((1, cached + tokens.shape[1]), dtype=torch.long, device=tokens.device)
            position_ids = None
            if pads:
                attention_mask[:, : state.pad_mask.shape[1]] = state.pad_mask
                position_ids = torch.arange(cached, cached + tokens.shape[1], device=tokens.device)[None] - pads
        else:
            allowed, position_ids = tree_attention(parents, cached)  # [1, 1, n, cached + n] bool
            if pads:
                allowed[..., : state.pad_mask.shape[1]] &= state.pad_mask.bool()  # [1, prompt_len] broadcast
                position_ids = position_ids - pads
            attention_mask = model_mask(allowed, self.model)
        out = self.model(
            input_ids=tokens,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **cache_kwargs(self.model, state.cache),
            use_cache=True,
            output_hidden_states=need_hidden,
        )
        check_finite(out.logits)
        return TargetOutput(out.logits, select_features(out.hidden_states, feature_layers) if need_hidden else None)

    def keep(self, state: TargetState, prefix_len: int, rows: list[int]) -> None:
        """After a step: keep the cache prefix and the accepted rows of the scored tokens."""
        keep_positions(state.cache, prefix_len, rows)

    def rollback(self, state: TargetState, length: int) -> None:
        """Keep only the first `length` positions of the cache."""
        truncate_cache(state.cache, length)


def left_padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """attention_mask [1, prompt_len] -> itself as long when it left-pads, None when it has no padding.

    Right or inner padding is refused: model.generate would attend positions after the pads.
    """
    if attention_mask is None or bool((attention_mask != 0).all()):
        return None
    mask = (attention_mask != 0).long()  # [1, prompt_len]
    real = int(mask.sum())
    if real == 0:
        raise InputError("inputs['attention_mask'] masks every prompt token; nothing is left to generate from.")
    if not bool((mask[0, -real:] == 1).all()):
        raise InputError(
            "inputs['attention_mask'] pads on the right (or inside) the prompt; speculative decoding needs "
            "left padding: set processor.tokenizer.padding_side = 'left', or pass the prompt without padding."
        )
    return mask


def image_token_id_of(config) -> int | None:
    """The id of the image placeholder token in a LLaVA-style config, or None."""
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def _eos_ids(model) -> list[int]:
    """The stop ids `model.generate()` uses: its generation_config's eos_token_id (none: it runs
    to max_new_tokens, whatever the tokenizer's EOS is)."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


# generation_config fields that change model.generate()'s greedy / sampled tokens through logits
# processors vlmspec does not apply, with the value that leaves the output unchanged.
UNSUPPORTED_GENERATION_FIELDS = {
    "min_new_tokens": (None, 0), "min_length": (None, 0), "suppress_tokens": (None, []),
    "begin_suppress_tokens": (None, []), "bad_words_ids": (None, []), "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0), "sequence_bias": (None, {}), "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,), "exponential_decay_length_penalty": (None,),
}


def check_generation_config(model) -> None:
    """Refuse a generation_config whose logits processors would make vlmspec's output differ
    from model.generate(); the error names the field and how to clear it."""
    config = model.generation_config
    for name, neutral in UNSUPPORTED_GENERATION_FIELDS.items():
        value = getattr(config, name, None)
        if value not in neutral:
            raise UnsupportedError(
                f"The model's generation_config sets {name}={value!r}, which changes model.generate()'s output "
                f"through a logits processor vlmspec does not apply, so the result would not be lossless. Clear "
                f"it first (model.generation_config.{name} = None) or use model.generate for this setting."
            )


# model.generate() keywords that have a vlmspec spelling (the rest of its options are refused by name)
GENERATE_KWARG_HINTS = {
    "do_sample": "pass temperature > 0 to sample (temperature=0, the default, is greedy)",
    "max_length": "pass max_new_tokens (the number of new tokens)",
    "stop_strings": "pass stop=[...]",
    "eos_token_id": "set model.generation_config.eos_token_id",
    "num_beams": "beam search is not speculative decoding; use model.generate for it",
    "num_return_sequences": "call generate once per sample with different seeds, or generate_batch",
    "streamer": "pass stream=True and iterate the result",
    "generator": "pass seed=N",
}


def refuse_generate_kwargs(kwargs: dict) -> None:
    """Keywords of model.generate() passed to vlmspec: a one-line error naming the field and what
    to do (vlmspec's spelling, or why it would not be lossless); unknown keywords: TypeError."""
    for name, value in kwargs.items():
        if name in GENERATE_KWARG_HINTS:
            raise UnsupportedError(f"generate() has no {name}=...; {GENERATE_KWARG_HINTS[name]}.")
        if name in UNSUPPORTED_GENERATION_FIELDS:
            raise UnsupportedError(
                f"{name}={value!r} changes model.generate()'s output through a logits processor vlmspec does not "
                "apply, so the result would not be lossless; drop it, or use model.generate for this setting."
            )
        raise TypeError(f"generate() got an unexpected keyword argument {name!r}")


def image_spans(ids: torch.Tensor, image_token_id: int, tokens_per_image: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each image's placeholder tokens in ids [seq], images in order, adjacent ones too."""
    positions = (ids == image_token_id).nonzero().flatten().tolist()
    if len(positions) != sum(tokens_per_image):
        raise PromptError(
            f"The prompt holds {len(positions)} image tokens but the images need {sum(tokens_per_image)}; "
            "let the processor insert the image tokens (one image placeholder per image)."
        )
    spans, offset = [], 0
    for count in tokens_per_image:
        if count:
            spans.append((positions[offset], positions[offset + count - 1] + 1))
        offset += count
    return spans


def check_finite(logits: torch.Tensor) -> None:
    if not torch.isfinite(logits).all():
        raise NumericalError(
            "The target produced NaN or infinite logits. The weights or dtype are broken for this device: "
            "load the target in float32 (dtype='float32') or check the checkpoint's weights."
        )
