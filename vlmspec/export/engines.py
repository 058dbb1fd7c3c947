"""vlmspec drafters as vLLM / SGLang EAGLE draft checkpoints: what maps exactly, and what is refused.

Engine code read to learn the layout (nothing copied): vLLM 0.34.0 (commit 62d4bc3c7) and SGLang
0.5.23, the PyPI wheels (vllm/model_executor/models/llama_eagle.py, llama_eagle3.py, models/utils.py's
AutoWeightsLoader, transformers_utils/configs/eagle.py, v1/worker/gpu/spec_decode/eagle/;
sglang/srt/models/llama_eagle.py, llama_eagle3.py, speculative/eagle_worker_v2.py, spec_utils.py).

The two computations, per position (token t_{i+1}, target last-layer state h_i after the final norm):
    vlmspec  x = fc([embed(t) ; h]) (+ bias);  out = L(x), L one stock decoder layer (input RMSNorm,
             attention, post-attention RMSNorm, MLP, two residual adds);  logits = head(out)
    engines  x = fc(cat(embed(t), h));  N decoder layers carrying a residual, the FIRST one without
             its input RMSNorm (EAGLE-1's cnets.py);  out = hidden + residual;  logits = the target's
             lm_head(out) (SGLang: its rows listed in a hot-token map); no final norm.
Same fc input order, same head, no final norm on either side, but the engines' first layer drops the
input norm that vlmspec's layer has (their loaders would drop that weight: SGLang skips unknown
names, vLLM raises). So format "eagle" writes TWO layers: layer 0 inert (q/k/v/o and gate/up/down
zero, post-attention norm 1) adds exactly zero to the residual, and layer 1 is vlmspec's layer with
its input norm. vLLM's fc has no bias (and its loader silently ignores an `fc.bias`), so there the
fc bias rides on layer 0's o_proj bias (attention_bias=true; with zero q/k/v the inert attention
outputs exactly that bias); SGLang's fc has a bias and takes it directly. The exported drafter
computes the same function; it costs one extra, inert attention + MLP per draft step.

Refused (UnsupportedExport), since any checkpoint would compute another drafter: format "eagle3"
(the engines' EAGLE-3 layer feeds attention cat[norm(embed) ; norm(fc(aux))] with fc(aux) as the
residual and a final norm before the head), fused-feature drafters (feature_layers), input_norm,
vision drafters (vispec, msd, specvlm), non-Llama layers, a trimmed vocabulary for vLLM (its
EAGLE-1/2 always uses the full target head) and a trained head copy for SGLang (it slices the
target's head and never loads a draft one).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_replace_dir
from ..errors import InputError, UnsupportedError
from . import DTYPE_NAMES, ENGINES, FORMATS
from .source import SavedDrafter, check_target, read_drafter, target_text_config

ENGINE_CODE_READ = {
    "vllm": "vllm 0.34.0 (PyPI wheel, commit 62d4bc3c7): model_executor/models/llama_eagle.py, llama_eagle3.py",
    "sglang": "sglang 0.5.23 (PyPI wheel, no commit id recorded): srt/models/llama_eagle.py, llama_eagle3.py, "
              "speculative/eagle_worker_v2.py",
}
ARCHITECTURES = {"vllm": "LlamaForCausalLM", "sglang": "LlamaForCausalLMEagle"}  # vLLM prefixes "Eagle" itself
TOKEN_MAP_NAME = "hot_token_map.pt"  # SGLang --speculative-token-map: draft id j -> target id
EXPORT_INFO_NAME = "vlmspec_export.json"
INERT, REAL = 0, 1  # engine layer indexes
ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
NORMS = ("input_layernorm", "post_attention_layernorm")
LAYER_TENSORS = {f"{m}.weight" for m in ATTENTION + MLP + NORMS} | {f"{m}.bias" for m in ATTENTION + MLP}
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


class UnsupportedExport(UnsupportedError):
    """This drafter cannot be written in that engine format without changing what it computes."""


_VISION_PARTS = {
    "vispec": "its vision adaptor (learned queries cross-attending each image, num_q - 1 drafter positions per "
              "image) and the global image feature it mixes into text positions (img_fc)",
    "msd": "at image positions it feeds the projected visual embeddings straight into its decoder layer (no fc, "
           "no target hidden state)",
    "specvlm": "its elastic visual compressor, which replaces each image's positions by a compressed set",
}
_EAGLE3_MATH = (
    "the engines' EAGLE-3 layer (vLLM and SGLang llama_eagle3.py) feeds its attention "
    "cat[input_layernorm(embedding) ; hidden_norm(fc(aux states))] (a 2H-wide qkv), keeps fc(aux states) as the "
    "residual and applies a final norm before the head, while a vlmspec drafter mixes embedding and feature in "
    "fc([embedding ; feature]) before one stock decoder layer and applies no final norm; no choice of weights "
    "makes one compute the other"
)


# ------------------------------------------------------------------ what can be exported
def check_exportable(drafter: SavedDrafter, format: str, engine: str, full_vocab: bool = False) -> None:
    """Raise UnsupportedExport, naming why and what is supported, unless `drafter` maps exactly
    (or, with `full_vocab`, maps exactly but for drafting over the target's whole vocabulary)."""
    supported = ("Supported: --format eagle, for a plain `eagle` drafter of a Llama-family target trained with "
                 "feature_layers and input_norm unset (--engine vllm: full vocabulary; --engine sglang: full or "
                 "trimmed vocabulary).")
    if drafter.kind != "eagle":
        parts = _VISION_PARTS.get(drafter.kind, "vlmspec does not know how its parts map")
        raise UnsupportedExport(
            f"A {drafter.kind!r} drafter cannot be exported: {parts}, and vLLM's and SGLang's EAGLE drafters take "
            f"only the token embedding and the target's hidden state at every position. {supported}")
    config = drafter.config
    if format == "eagle3":
        fused = "" if config.feature_layers is None else (
            f" (this drafter's fused features, feature_layers={list(config.feature_layers)}, are EAGLE-3's "
            "inputs, but it computes with them as above)")
        raise UnsupportedExport(f"--format eagle3 cannot hold a vlmspec drafter: {_EAGLE3_MATH}{fused}. {supported}")
    if config.feature_layers is not None:
        raise UnsupportedExport(
            f"This drafter reads fused target features (feature_layers={list(config.feature_layers)}: per-layer "
            "RMS norm, then fuse) but the engines' EAGLE-1/2 drafters read only the target's last hidden state, "
            f"and --format eagle3 computes differently ({_EAGLE3_MATH}). {supported}")
    if config.input_norm:
        raise UnsupportedExport("This drafter normalises [embedding ; hidden] with a LayerNorm before fc "
                                f"(input_norm=true); the engines' EAGLE fc has no input norm. {supported}")
    if drafter.decoder_layer != "LlamaDecoderLayer":
        raise UnsupportedExport(f"This drafter's decoder layer is a {drafter.decoder_layer}; vlmspec exports "
                                f"Llama-family drafters only (the engines' llama_eagle.py). {supported}")
    vocab = drafter.draft_vocab
    if full_vocab and "head_weight" in drafter.tensors:
        raise UnsupportedExport(
            "--full-vocab cannot widen a drafter that trained its own copy of its head rows (trainable_head=true): "
            f"the engines use the target's LM head, which those rows no longer equal. {supported}")
    if engine == "vllm" and vocab is not None and not full_vocab:
        raise UnsupportedExport(
            f"This drafter drafts over a trimmed vocabulary of {vocab.numel()} tokens; vLLM's EAGLE-1/2 drafter "
            "(llama_eagle.py) always uses the target's full LM head and takes no draft->target map, so it would "
            "draft differently. Export it with --engine sglang (a hot-token map), train with the full vocabulary, "
            "or pass --full-vocab to let it draft over the whole vocabulary (same weights; its proposals can "
            f"differ from vlmspec's, the engine's verification keeps outputs lossless). {supported}")
    if engine == "sglang" and "head_weight" in drafter.tensors:
        raise UnsupportedExport(
            "This drafter trained its own copy of its head rows (trainable_head=true); SGLang's EAGLE-1/2 drafter "
            "slices the target's LM head with the token map and never loads a draft head, so the trained rows "
            "would be dropped (and vLLM's takes no trimmed vocabulary). Train with trainable_head=false to "
            f"export. {supported}")
    unknown = sorted(k for k in drafter.tensors if k not in ("fc.weight", "fc.bias", "draft_vocab", "head_weight")
                     and not (k.startswith("layer.") and k[len("layer."):] in LAYER_TENSORS))
    if unknown:
        raise UnsupportedExport(f"{drafter.path} holds tensors no engine EAGLE layer has ({unknown[:5]}); "
                                f"it cannot be exported exactly. {supported}")


def _check_language_model(drafter: SavedDrafter, text_config) -> None:
    if getattr(text_config, "model_type", None) != "llama":
        raise UnsupportedExport(f"The target's language model is {getattr(text_config, 'model_type', None)!r}; "
                                "vlmspec exports drafters of Llama-family language models only.")
    hidden = int(text_config.hidden_size)
    if tuple(drafter.tensors["fc.weight"].shape) != (hidden, 2 * hidden):
        raise InputError(f"{drafter.path}: fc.weight is {tuple(drafter.tensors['fc.weight'].shape)}, not "
                         f"({hidden}, {2 * hidden}) for this target; pass the --target it was trained against.")


# ------------------------------------------------------------------ tensors and config
def _fc_bias(drafter: SavedDrafter) -> torch.Tensor | None:
    bias = drafter.tensors.get("fc.bias")
    return bias if bias is not None and bool(bias.ne(0).any()) else None


def _bias_on_o_proj(drafter: SavedDrafter, engine: str) -> bool:
    """vLLM's fc has no bias: a non-zero vlmspec fc bias rides on layer 0's o_proj bias (attention_bias=true)."""
    return engine == "vllm" and _fc_bias(drafter) is not None


def eagle_tensors(drafter: SavedDrafter, engine: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The draft checkpoint's tensors, named as the engine's loader expects (it prefixes "model.")."""
    layer = {k[len("layer."):]: v for k, v in drafter.tensors.items() if k.startswith("layer.")}
    bias = _fc_bias(drafter)
    biased = _bias_on_o_proj(drafter, engine)
    out = {"fc.weight": drafter.tensors["fc.weight"]}
    if engine == "sglang":  # nn.Linear(2H, H) with a bias: write it (zeros when the drafter has none)
        out["fc.bias"] = drafter.tensors.get("fc.bias", torch.zeros(drafter.tensors["fc.weight"].shape[0]))
    for module in ATTENTION + MLP:
        weight = layer[f"{module}.weight"]
        out[f"layers.{INERT}.{module}.weight"] = torch.zeros_like(weight)
        has_bias = f"{module}.bias" in layer or (biased and module in ATTENTION)
        if has_bias:
            out[f"layers.{INERT}.{module}.bias"] = torch.zeros(weight.shape[0], dtype=weight.dtype)
            out[f"layers.{REAL}.{module}.bias"] = layer.get(f"{module}.bias", torch.zeros(weight.shape[0]))
        out[f"layers.{REAL}.{module}.weight"] = weight
    if biased:
        out[f"layers.{INERT}.self_attn.o_proj.bias"] = bias
    out[f"layers.{INERT}.post_attention_layernorm.weight"] = torch.ones_like(layer["post_attention_layernorm.weight"])
    for norm in NORMS:
        out[f"layers.{REAL}.{norm}.weight"] = layer[f"{norm}.weight"]
    return {k: v.detach().to("cpu", dtype).contiguous() for k, v in sorted(out.items())}


def _rope_fields(text_config) -> dict[str, Any]:
    """rope_parameters (transformers 5, read by both engines' current code) and rope_theta /
    rope_scaling (what older engine versions read)."""
    params = getattr(text_config, "rope_parameters", None)
    if isinstance(params, dict) and params:
        fields: dict[str, Any] = {"rope_parameters": dict(params), "rope_theta": params.get("rope_theta")}
        if params.get("rope_type", "default") != "default":
            fields["rope_scaling"] = dict(params)
        return fields
    return {"rope_theta": getattr(text_config, "rope_theta", 10000.0),
            "rope_scaling": getattr(text_config, "rope_scaling", None)}


def eagle_config(drafter: SavedDrafter, text_config, engine: str, dtype: torch.dtype,
                 full_vocab: bool = False) -> dict[str, Any]:
    """The draft model's config.json: the target's Llama shape with two layers (inert + the drafter's)."""
    c = text_config
    hidden, heads = int(c.hidden_size), int(c.num_attention_heads)
    dtype_name = str(dtype).removeprefix("torch.")
    config = {
        "architectures": [ARCHITECTURES[engine]],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(c.intermediate_size),
        "num_hidden_layers": 2,  # layer 0 inert, layer 1 the vlmspec drafter's layer (module docstring)
        "num_attention_heads": heads,
        "num_key_value_heads": int(getattr(c, "num_key_value_heads", None) or heads),
        "head_dim": int(getattr(c, "head_dim", None) or hidden // heads),
        "hidden_act": c.hidden_act,
        "rms_norm_eps": float(c.rms_norm_eps),
        "max_position_embeddings": int(c.max_position_embeddings),
        "vocab_size": int(c.vocab_size),  # the target's: both engines share its embedding (and head)
        "attention_bias": bool(getattr(c, "attention_bias", False)) or _bias_on_o_proj(drafter, engine),
        "mlp_bias": bool(getattr(c, "mlp_bias", False)),
        "tie_word_embeddings": False,  # the engine binds the target's embedding and head separately
        "bos_token_id": getattr(c, "bos_token_id", None),
        "eos_token_id": getattr(c, "eos_token_id", None),
        "pad_token_id": getattr(c, "pad_token_id", None),
        "dtype": dtype_name,
        "torch_dtype": dtype_name,
        **_rope_fields(c),
    }
    vocab = None if full_vocab else drafter.draft_vocab
    if engine == "sglang" and vocab is not None:
        config["hot_vocab_size"] = int(vocab.numel())
    return config


def launch_hint(engine: str, out_dir: Path, target: str, trimmed: bool) -> str:
    if engine == "vllm":
        spec = json.dumps({"method": "eagle", "model": str(out_dir), "num_speculative_tokens": 5})
        return f"vllm serve {target} --speculative-config '{spec}'"
    token_map = f" --speculative-token-map {out_dir / TOKEN_MAP_NAME}" if trimmed else ""
    return (f"python -m sglang.launch_server --model-path {target} --speculative-algorithm EAGLE "
            f"--speculative-draft-model-path {out_dir}{token_map} --speculative-num-steps 5 "
            "--speculative-eagle-topk 8 --speculative-num-draft-tokens 48")


# ------------------------------------------------------------------ writing
def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise InputError(f"Unknown export {what} {value!r}; use one of: {', '.join(allowed)}.")
    return value


def _check_out_dir(out: Path, source: Path) -> None:
    if out.resolve() == source.resolve():
        raise InputError(f"OUT_DIR {out} is the drafter folder itself; write the export to a new folder.")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EXPORT_INFO_NAME).is_file())):
        raise InputError(f"{out} exists and is not an earlier vlmspec export; pick a new folder (an export "
                         "replaces the whole folder).")


def export_drafter(
    drafter_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    format: str = "eagle",
    engine: str = "vllm",
    target: Any = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    full_vocab: bool = False,
) -> Path:
    """Write the vlmspec drafter in `drafter_dir` to `out_dir` as an `engine` EAGLE draft checkpoint.

    `target`: what the drafter was trained against (a checkpoint folder or name, None = the default
    model, a Target, or a transformers config); only its config is read. `dtype`: the tensors'
    dtype (default: as saved). `full_vocab`: a trimmed-vocabulary drafter drafts over the target's
    whole vocabulary in the engine (same weights, proposals may differ; opt-in, recorded in
    vlmspec_export.json). Raises UnsupportedExport where no exact mapping exists. The folder
    appears whole or not at all (an earlier export there is replaced).
    """
    format, engine = _choice(format, FORMATS, "format"), _choice(engine, ENGINES, "engine")
    out = Path(out_dir)
    drafter = read_drafter(drafter_dir)
    check_exportable(drafter, format, engine, full_vocab)
    _check_out_dir(out, drafter.path)
    text_config, model_type = target_text_config(target, trust_remote_code)
    check_target(drafter, text_config, model_type)
    _check_language_model(drafter, text_config)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}.")
        dtype = DTYPES[dtype]
    dtype = dtype or drafter.dtype
    tensors = eagle_tensors(drafter, engine, dtype)
    config = eagle_config(drafter, text_config, engine, dtype, full_vocab)
    vocab = None if full_vocab else drafter.draft_vocab
    trimmed = engine == "sglang" and vocab is not None
    bias_note = " plus o_proj.bias = the vlmspec fc bias" if f"layers.{INERT}.self_attn.o_proj.bias" in tensors \
        and engine == "vllm" else ""
    target_name = "TARGET" if target is None or not isinstance(target, (str, os.PathLike)) else os.fspath(target)
    info = {
        "source": str(drafter.path),
        "drafter_kind": drafter.kind,
        "format": format,
        "engine": engine,
        "engine_code_read": ENGINE_CODE_READ[engine],
        "layers": {str(INERT): "inert: adds exactly 0 to the residual" + bias_note,
                   str(REAL): "the vlmspec drafter's decoder layer"},
        "draft_vocab_size": None if vocab is None else int(vocab.numel()),
        "vocabulary": ("widened (--full-vocab): the vlmspec drafter drafted over "
                       f"{drafter.draft_vocab.numel()} ids, this export drafts over the target's whole vocabulary; "
                       "proposals can differ, outputs stay lossless (the engine verifies)")
                      if full_vocab and drafter.draft_vocab is not None else "as trained",
        "token_map": TOKEN_MAP_NAME if trimmed else None,
        "launch": launch_hint(engine, out.resolve(), target_name, trimmed),
    }
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        save_file(tensors, str(staging / "model.safetensors"), metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if trimmed:  # SGLang's load_token_map: torch.load(weights_only=True) -> torch.tensor(ids, int64)
            torch.save([int(i) for i in vocab.tolist()], staging / TOKEN_MAP_NAME)
        (staging / EXPORT_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
        atomic_replace_dir(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


__all__ = ["ENGINES", "FORMATS", "UnsupportedExport", "check_exportable", "eagle_config", "eagle_tensors",
           "export_drafter"]
