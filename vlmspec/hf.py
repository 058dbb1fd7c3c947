"""vlmspec's loop behind transformers' ``custom_generate`` hook.

    out = model.generate(**inputs, max_new_tokens=64, custom_generate=vlmspec.hf_generate, drafter="auto")

transformers prepares the generation config, logits processors and stopping criteria as
for any decoding method and hands them here; this reads what they ask for (greedy or
temperature / top-k / top-p sampling, max length, EOS ids, stop strings), refuses by name
anything vlmspec would not reproduce exactly (another logits processor, max_time, a
custom stopping criterion, several return sequences, scores), and returns the sequences
``model.generate`` returns: prompt + new tokens, rows that stop early padded with the pad
id. Greedy output is token for token ``model.generate``'s; sampling draws from the same
distribution (not the same random stream). A folder form for ``custom_generate="DIR"``
lives in ``adapters/hf-custom-generate``.
"""

from __future__ import annotations

import copy
import weakref

import torch

from .errors import UnsupportedError

# logits processors transformers adds for sampling, and the SamplingParams field each sets
_SAMPLING_WARPERS = {"TemperatureLogitsWarper": "temperature", "TopKLogitsWarper": "top_k",
                     "TopPLogitsWarper": "top_p"}
# stopping criteria vlmspec applies itself (max_new_tokens, EOS ids, stop strings)
_HANDLED_CRITERIA = {"MaxLengthCriteria", "EosTokenCriteria", "StopStringCriteria"}
# generation-loop state transformers puts in model_kwargs; vlmspec keeps its own cache
_LOOP_KWARGS = {"past_key_values", "cache", "use_cache", "logits_to_keep", "position_ids", "cache_position",
                "output_attentions", "output_hidden_states", "return_dict"}

_pipelines: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {key: Pipeline}


def hf_generate(model, input_ids: torch.Tensor, logits_processor=None, stopping_criteria=None,
                generation_config=None, drafter="auto", draft_length=None, processor=None,
                pixel_values=None, image_sizes=None, **model_kwargs) -> torch.Tensor:
    """A ``custom_generate`` callable: ``model.generate(**inputs, custom_generate=hf_generate)``.

    ``drafter``: a vlmspec drafter spec or `Drafter` ("auto": the best one vlmspec finds for
    this target); ``draft_length``: as in `vlmspec.load`; ``processor``: the target's
    processor when it is not saved beside the model (``model.name_or_path``).
    Returns sequences [batch, prompt_len + new] as ``model.generate`` does.

    ``pixel_values`` / ``image_sizes`` are named in the signature so that transformers hands
    them over as they are (its own loop encodes the images first and drops the pixels);
    vlmspec encodes them itself, once per image, as ``model.generate`` does."""
    config = generation_config if generation_config is not None else model.generation_config
    _refuse_outputs(config)
    sampling = _sampling_options(logits_processor or [], config)
    stop = _stop_strings(stopping_criteria or [], config)
    eos = _eos_ids(config)
    pipe = _pipeline(model, drafter, draft_length, processor, eos)
    batch, prompt_len = input_ids.shape  # [batch, prompt_len]
    max_new_tokens = int(config.max_length) - prompt_len
    if max_new_tokens <= 0:
        raise UnsupportedError(f"max_length={config.max_length} leaves no room after the {prompt_len}-token prompt; "
                               "pass max_new_tokens=N.")
    if model_kwargs.get("mm_encoder_outputs"):
        raise UnsupportedError("custom_generate=vlmspec.hf_generate takes the images as pixel_values; pass the "
                               "processor's pixel_values instead of precomputed mm_encoder_outputs.")
    inputs = {k: v for k, v in model_kwargs.items() if k not in _LOOP_KWARGS | {"mm_encoder_outputs"} and v is not None}
    inputs.update({k: v for k, v in (("pixel_values", pixel_values), ("image_sizes", image_sizes)) if v is not None})
    inputs["input_ids"] = input_ids
    if inputs.get("attention_mask") is None:  # transformers drops an all-ones mask
        inputs["attention_mask"] = torch.ones_like(input_ids)
    options = dict(max_new_tokens=max_new_tokens, stop=stop, **sampling)
    if batch == 1:
        new_tokens = [pipe.generate(inputs=inputs, **options).token_ids]
    else:
        new_tokens = [r.token_ids for r in pipe.generate_batch(inputs=inputs, **options)]
    return _sequences(input_ids, new_tokens, _pad_id(config, eos))


def _refuse_outputs(config) -> None:
    if (config.num_return_sequences or 1) > 1:
        raise UnsupportedError("custom_generate=vlmspec.hf_generate returns one sequence per row; "
                               "drop num_return_sequences (repeat the row, or call once per seed).")
    if config.return_dict_in_generate or config.output_scores or config.output_logits:
        raise UnsupportedError("custom_generate=vlmspec.hf_generate returns the sequences tensor only; drop "
                               "return_dict_in_generate / output_scores / output_logits (vlmspec.generate returns "
                               "metrics instead).")
    if getattr(config, "max_time", None) is not None:
        raise UnsupportedError("max_time is not supported by custom_generate=vlmspec.hf_generate; drop it "
                               "and bound the output with max_new_tokens.")


def _sampling_options(logits_processor, config) -> dict:
    """Greedy, or temperature / top_k / top_p read from the warpers transformers prepared."""
    options = {}
    for processor in logits_processor:
        name = type(processor).__name__
        if name not in _SAMPLING_WARPERS:
            raise UnsupportedError(
                f"{name} (a logits processor from the generation config or logits_processor=) changes "
                "model.generate()'s output in a way vlmspec does not apply, so the result would not be lossless; "
                "drop that setting, or call model.generate without custom_generate.")
        field = _SAMPLING_WARPERS[name]
        options[field] = getattr(processor, field)
    if not config.do_sample:
        return {"temperature": 0.0}  # transformers adds no warpers for greedy: none to read
    options.setdefault("temperature", 1.0)
    return options


def _stop_strings(stopping_criteria, config) -> list[str]:
    for criterion in stopping_criteria:
        name = type(criterion).__name__
        if name not in _HANDLED_CRITERIA:
            raise UnsupportedError(f"{name} is a stopping criterion custom_generate=vlmspec.hf_generate does not "
                                   "apply; drop it (max_new_tokens, eos_token_id and stop_strings are applied).")
    strings = config.stop_strings
    return [strings] if isinstance(strings, str) else list(strings or [])


def _eos_ids(config) -> tuple[int, ...]:
    eos = config.eos_token_id
    if eos is None:
        return ()
    return tuple(int(e) for e in (eos.tolist() if torch.is_tensor(eos) else eos if isinstance(eos, (list, tuple))
                                  else [eos]))


def _pad_id(config, eos: tuple[int, ...]) -> int:
    """What model.generate writes after a row has stopped: pad_token_id, else the first EOS id."""
    pad = config.pad_token_id
    if pad is None:
        return eos[0] if eos else 0
    return int(pad.flatten()[0]) if torch.is_tensor(pad) else int(pad)


def _sequences(input_ids: torch.Tensor, new_tokens: list[list[int]], pad_id: int) -> torch.Tensor:
    longest = max(len(tokens) for tokens in new_tokens)
    out = input_ids.new_full((input_ids.shape[0], longest), pad_id)  # [batch, longest new]
    for row, tokens in enumerate(new_tokens):
        out[row, : len(tokens)] = torch.tensor(tokens, dtype=out.dtype)
    return torch.cat([input_ids, out.to(input_ids.device)], dim=1)  # [batch, prompt_len + longest new]


def _pipeline(model, drafter, draft_length, processor, eos: tuple[int, ...]):
    """One Pipeline per (model, drafter, draft_length, processor, EOS ids), kept while the model lives."""
    from .api import _processor_for, load
    from .target import Target, TargetConfig

    key = (drafter if isinstance(drafter, (str, type(None))) else id(drafter), str(draft_length), id(processor), eos)
    per_model = _pipelines.setdefault(model, {})
    if key not in per_model:
        target = Target(model, processor if processor is not None else _processor_for(model, TargetConfig()))
        if tuple(target.eos_token_ids) != eos:  # this call's eos_token_id, not the model's default
            target = copy.copy(target)
            target.eos_token_ids = list(eos)
        per_model[key] = load(target, drafter, draft_length=draft_length)
    return per_model[key]


__all__ = ["hf_generate"]
