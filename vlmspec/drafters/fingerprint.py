"""What a drafter must agree on with its target, and how a saved drafter's record is compared.

A drafter saves its target's fingerprint (architecture, sizes, a hash of the input
embedding and a small probe of its values, and a probe of the last decoder layer's
weights, where a fine-tune of the same base model such as a LoRA shows although the
embedding is the base's) and refuses to load on a target whose fingerprint differs; a
target loaded in another dtype than the drafter was trained against passes when the probed
values agree within that dtype's rounding.
"""

from __future__ import annotations

import hashlib

import torch


def target_fingerprint(target) -> dict:
    """What a drafter must agree on with its target (the embedding hash covers the float32 values).

    Hashing the embedding costs ~0.15 s on a 135M model, so the result is kept on the target,
    keyed on the embedding tensor's storage and version counter: any in-place edit of the
    weights (``load_state_dict``, ``copy_``, an optimiser step) bumps the version and re-hashes.
    """
    model = target.model
    embed = model.get_input_embeddings().weight.detach()  # [vocab, H]
    layer_weights = _last_layer_weights(model)
    key = (embed.data_ptr(), embed._version, tuple(embed.shape), embed.dtype, str(embed.device),
           tuple((w.data_ptr(), w._version) for w in layer_weights))
    cached = getattr(target, "_fingerprint_cache", None)
    if cached is not None and cached[0] == key:
        return dict(cached[1])
    text_config = model.config.get_text_config()
    digest = hashlib.sha256()
    flat = embed.to("cpu", torch.float32).contiguous().view(-1)
    for chunk in flat.split(1 << 22):
        digest.update(chunk.view(torch.uint8).numpy().tobytes())
    fingerprint = {
        "architecture": type(model).__name__,
        "model_type": getattr(model.config, "model_type", None),
        "hidden_size": int(text_config.hidden_size),
        "vocab_size": int(embed.shape[0]),
        "num_layers": int(text_config.num_hidden_layers),
        "embed_sha256": digest.hexdigest(),
        "embed_dtype": str(embed.dtype).removeprefix("torch."),
        "embed_probe": embed_probe(embed),
        "layer_probe": [x for w in layer_weights for x in embed_probe(w, rows=8)],
    }
    try:
        target._fingerprint_cache = (key, fingerprint)
    except AttributeError:  # a target type that takes no attributes: hash every time
        pass
    return dict(fingerprint)


PROBE_ROWS, PROBE_COLS = 64, 8
_PROBE_KEYS = ("embed_dtype", "embed_probe", "layer_probe")


def embed_probe(embed: torch.Tensor, rows: int = PROBE_ROWS) -> list[float]:
    """rows x PROBE_COLS values of a 2-D weight at fixed, evenly spread places: what tells the
    same weights in another dtype (bf16 / fp16 round each value) from other weights."""
    vocab, hidden = embed.shape
    picked = torch.linspace(0, vocab - 1, min(rows, vocab)).long()
    cols = torch.linspace(0, hidden - 1, min(PROBE_COLS, hidden)).long()
    return [round(float(x), 6) for x in embed.detach()[picked][:, cols].to("cpu", torch.float32).flatten()]


def _last_layer_weights(model) -> list[torch.Tensor]:
    """The 2-D weights of the language model's last decoder layer, by name (empty if not found)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not layers:
        return []
    return [w.detach() for _, w in sorted(layers[-1].named_parameters()) if w.ndim == 2]


def _probes_agree(a, b, same_dtype: bool) -> bool:
    """Same dtype: equal values; another dtype: equal within its rounding (bf16 rounds at 2**-8
    relative, fp16 at 2**-11)."""
    if not a or not b or len(a) != len(b):
        return False
    if same_dtype:
        return list(a) == list(b)
    scale = max(abs(x) for x in a) or 1.0
    return max(abs(x - y) for x, y in zip(a, b)) <= 1e-2 * scale


def _same_weights_other_dtype(saved: dict, actual: dict) -> bool:
    """The byte hash differs only because the target is loaded in another dtype than the one the
    drafter was trained against: every probed value agrees to within that dtype's rounding."""
    if saved.get("embed_dtype", "float32") == actual.get("embed_dtype"):
        return False
    return _probes_agree(saved.get("embed_probe"), actual.get("embed_probe"), same_dtype=False)


def fingerprint_mismatch(saved: dict, actual: dict, *, same_fine_tune: bool = True) -> list[str]:
    """'field: drafter X vs target Y' for every fingerprint field that differs. The embedding's
    byte hash may differ when only the dtype does (a float32-trained drafter on a bf16 target):
    then the probed values decide. ``same_fine_tune=False`` (a training warm start) accepts
    another fine-tune of the same base: the decoder-layer probe is not compared."""
    out = []
    for key in actual:
        if key in _PROBE_KEYS or saved.get(key) == actual[key]:
            continue
        if key == "embed_sha256" and _same_weights_other_dtype(saved, actual):
            continue
        out.append(f"{key}: drafter {saved.get(key)!r} vs target {actual[key]!r}")
    if same_fine_tune and actual.get("layer_probe") and not out:  # same base model: the same fine-tune of it?
        same_dtype = saved.get("embed_dtype", "float32") == actual.get("embed_dtype")
        if not saved.get("layer_probe"):
            out.append("layer_probe: the drafter's config has none (saved by an older vlmspec), so it cannot tell "
                       "this target from another fine-tune of the same base model; retrain the drafter")
        elif not _probes_agree(saved["layer_probe"], actual["layer_probe"], same_dtype):
            out.append("layer_probe: the target's decoder weights differ from those the drafter was trained "
                       "against (the same base model, fine-tuned differently)")
    if any(d.startswith("embed_sha256") for d in out) and saved.get("embed_dtype", "float32") != actual.get("embed_dtype"):
        out.append(f"(the target's embeddings are {actual.get('embed_dtype')}, the drafter was trained against "
                   f"{saved.get('embed_dtype', 'float32')}{'' if saved.get('embed_probe') else ', and its config has no embed_probe to compare across dtypes'})")
    return out


__all__ = ["embed_probe", "fingerprint_mismatch", "target_fingerprint"]
