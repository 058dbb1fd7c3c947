"""`vlmspec export`: vlmspec drafters as vLLM / SGLang EAGLE draft checkpoints.

Neither engine imports on this CPU-only machine, so the engines' loaders are encoded here AS DATA,
from the engine source read (PyPI wheels vllm 0.34.0, commit 62d4bc3c7, and sglang 0.5.23):
  vLLM   vllm/model_executor/models/llama_eagle.py: EagleLlamaForCausalLM.load_weights prefixes
         "model." to every name but lm_head*; LlamaModel holds embed_tokens (shared with the target
         when the checkpoint has none: v1/worker/gpu/spec_decode/eagle/utils.py), layers[i] (vLLM
         LlamaDecoderLayer; for i == 0 input_layernorm is nn.Identity: no weight, so a checkpoint
         weight there makes AutoWeightsLoader raise), fc = ReplicatedLinear(2H, H, bias=False)
         (AutoWeightsLoader silently ignores an unexpected ".bias"); no lm_head (the target's).
         q/k/v -> qkv_proj and gate/up -> gate_up_proj; attention_bias gives q/k/v AND o_proj biases
         (llama.py LlamaDecoderLayer: bias_o_proj = attention_bias). Forward: fc(cat(embed, h)),
         layers with a carried residual, out = hidden + residual, logits = lm_head(out).
  SGLang sglang/srt/models/llama_eagle.py: LlamaForCausalLMEagle.load_weights skips lm_head*,
         prefixes "model."; LlamaModel: embed_tokens, layers[i] (layer 0 deletes input_layernorm and
         reads the residual plainly), fc = nn.Linear(2H, H) WITH a bias; unknown names are skipped
         silently (llama.py load_weights). Same forward. A trimmed vocabulary is the
         --speculative-token-map file: torch.load -> torch.tensor(ids, int64) = hot_token_id;
         the head becomes target_head[hot_token_id] and a draft index j means target id
         hot_token_id[j] (speculative/eagle_worker_v2.py init_token_map / init_lm_head).
The numerical test re-implements that engine forward in plain torch from the exported tensors and
compares it with the vlmspec drafter on the same inputs.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig

from vlmspec import DrafterMismatchError, InputError, ModelLoadError, Target
from vlmspec.cli import main as cli_main
from vlmspec.drafters.eagle import EagleConfig, EagleDrafter
from vlmspec.drafters.msd import MSDConfig, MSDDrafter
from vlmspec.drafters.specvlm import SpecVLMConfig, SpecVLMDrafter
from vlmspec.drafters.vispec import ViSpecConfig, ViSpecDrafter
from vlmspec.export import UnsupportedExport, export_drafter

TRIMMED_VOCAB = [5, 17, 3, 60, 42, 9, 88, 1]  # frequency order, not sorted: the map must keep it


@torch.no_grad()
def randomize(drafter: EagleDrafter, seed: int) -> EagleDrafter:
    """Trained-looking weights: fc mixes embedding and hidden, norms are not 1, the fc bias is not 0."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in drafter.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        p.copy_(1 + 0.2 * noise if "norm" in name else 0.2 * noise)
    return drafter


@pytest.fixture(scope="module")
def target(tiny_llava_path):
    return Target.load(tiny_llava_path)


@pytest.fixture(scope="module")
def saved(target, tmp_path_factory):
    """Saved drafter folders by name."""
    root = tmp_path_factory.mktemp("drafters")
    chain = dict(tree="chain")
    drafters = {
        "bias": randomize(EagleDrafter.from_target(target, EagleConfig(**chain)), 1),
        "nobias": randomize(EagleDrafter.from_target(target, EagleConfig(fc_bias=False, **chain)), 2),
        "trimmed": randomize(EagleDrafter.from_target(target, EagleConfig(**chain), draft_vocab=TRIMMED_VOCAB), 3),
        "trainable": EagleDrafter.from_target(target, EagleConfig(trainable_head=True, **chain),
                                              draft_vocab=TRIMMED_VOCAB),
        "fused": EagleDrafter.from_target(target, EagleConfig(feature_layers=[1, 2], **chain)),
        "input_norm": EagleDrafter.from_target(target, EagleConfig(input_norm=True, **chain)),
        "vispec": ViSpecDrafter.from_target(target, ViSpecConfig(**chain)),
        "msd": MSDDrafter.from_target(target, MSDConfig(**chain)),
        "specvlm": SpecVLMDrafter.from_target(target, SpecVLMConfig(**chain)),
    }
    paths = {}
    for name, drafter in drafters.items():
        paths[name] = drafter.save_pretrained(root / name)
    return {"paths": paths, "drafters": drafters}


# ------------------------------------------------------------------ the engines' layout, as data
def expected_layout(engine: str, text, fc_bias: bool) -> dict[str, tuple[int, ...]]:
    """name -> shape each engine's EAGLE-1/2 loader takes (module docstring), for 2 exported layers."""
    H, I = text.hidden_size, text.intermediate_size
    q = text.num_attention_heads * text.head_dim
    kv = text.num_key_value_heads * text.head_dim
    layout = {"fc.weight": (H, 2 * H)}
    if engine == "sglang":
        layout["fc.bias"] = (H,)
    attention_bias = engine == "vllm" and fc_bias  # the fc bias rides on layer 0's o_proj bias
    for i in (0, 1):
        p = f"layers.{i}."
        layout.update({p + "self_attn.q_proj.weight": (q, H), p + "self_attn.k_proj.weight": (kv, H),
                       p + "self_attn.v_proj.weight": (kv, H), p + "self_attn.o_proj.weight": (H, q),
                       p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                       p + "mlp.down_proj.weight": (H, I), p + "post_attention_layernorm.weight": (H,)})
        if attention_bias:
            layout.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                           p + "self_attn.v_proj.bias": (kv,), p + "self_attn.o_proj.bias": (H,)})
    layout["layers.1.input_layernorm.weight"] = (H,)  # layer 0 has none in either engine
    return layout


def read_export(out):
    return load_file(str(out / "model.safetensors")), json.loads((out / "config.json").read_text())


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize("name", ["bias", "nobias"])
def test_names_shapes_dtypes_and_config_follow_the_engine_loader(saved, target, tiny_llava_path, tmp_path,
                                                                 engine, name):
    out = export_drafter(saved["paths"][name], tmp_path / "out", format="eagle", engine=engine,
                         target=tiny_llava_path)
    tensors, config = read_export(out)
    text = target.model.config.get_text_config()
    layout = expected_layout(engine, text, fc_bias=name == "bias")
    assert {k: tuple(v.shape) for k, v in tensors.items()} == layout
    assert {v.dtype for v in tensors.values()} == {torch.float32}
    assert not any(k.startswith(("lm_head", "embed_tokens", "model.")) for k in tensors)  # shared with the target
    assert config["architectures"] == [{"vllm": "LlamaForCausalLM", "sglang": "LlamaForCausalLMEagle"}[engine]]
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 2
    for field in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                  "rms_norm_eps", "vocab_size", "max_position_embeddings", "hidden_act"):
        assert config[field] == getattr(text, field), field
    assert config["rope_theta"] == text.rope_parameters["rope_theta"]
    assert config["tie_word_embeddings"] is False and config["dtype"] == "float32"
    assert config["attention_bias"] is (engine == "vllm" and name == "bias")
    assert "hot_vocab_size" not in config
    # the fc input order: both engines cat(embed, hidden), as vlmspec's [embed ; h] -> fc.weight as is
    assert torch.equal(tensors["fc.weight"], saved["drafters"][name].fc.weight)
    info = json.loads((out / "vlmspec_export.json").read_text())
    assert info["engine"] == engine and info["format"] == "eagle" and str(tiny_llava_path) in info["launch"]


def test_the_dtype_option_casts_tensors_and_config(saved, tiny_llava_path, tmp_path):
    out = export_drafter(saved["paths"]["bias"], tmp_path / "bf16", engine="vllm", target=tiny_llava_path,
                         dtype="bfloat16")
    tensors, config = read_export(out)
    assert {v.dtype for v in tensors.values()} == {torch.bfloat16}
    assert config["dtype"] == config["torch_dtype"] == "bfloat16"


# ------------------------------------------------------------------ the engine's forward, in plain torch
def rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope(x, positions, theta):
    """Neox-style rotary embedding (vLLM get_rope / SGLang, is_neox_style=True) on x [T, heads, d]."""
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = positions.float()[:, None] * inv_freq[None]  # [T, d/2]
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def linear(t, name, x):
    return F.linear(x, t[name + ".weight"], t.get(name + ".bias"))


def engine_eagle_forward(t, config, embed, head, token_ids, hidden):
    """llama_eagle.py LlamaModel.forward + LlamaDecoderLayer.forward (vLLM and SGLang alike):
    token_ids [T], hidden [T, H] -> (out [T, H], logits [T, rows of head])."""
    eps, theta = config["rms_norm_eps"], config["rope_theta"]
    heads, kv_heads, d = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    T = token_ids.shape[0]
    positions = torch.arange(T)
    assert "layers.0.input_layernorm.weight" not in t  # the engines' first layer has no input norm
    h = linear(t, "fc", torch.cat([embed[token_ids], hidden], dim=-1))
    residual = None
    for i in range(config["num_hidden_layers"]):
        p = f"layers.{i}."
        if residual is None:  # first layer: residual = input; no input norm at layer 0
            residual, a = h, h
        else:  # fused add + RMSNorm
            residual = h + residual
            a = rms(residual, t[p + "input_layernorm.weight"], eps)
        q = linear(t, p + "self_attn.q_proj", a).view(T, heads, d)
        k = linear(t, p + "self_attn.k_proj", a).view(T, kv_heads, d)
        v = linear(t, p + "self_attn.v_proj", a).view(T, kv_heads, d)
        q, k = rope(q, positions, theta), rope(k, positions, theta)
        k, v = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
        scores = torch.einsum("qhd,khd->hqk", q, k) * d ** -0.5
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(T, heads * d)
        attn = linear(t, p + "self_attn.o_proj", attn)
        residual = attn + residual
        m = rms(residual, t[p + "post_attention_layernorm.weight"], eps)
        m = linear(t, p + "mlp.down_proj", F.silu(linear(t, p + "mlp.gate_proj", m)) * linear(t, p + "mlp.up_proj", m))
        h = m
    out = h + residual
    return out, out @ head.T


@pytest.mark.parametrize("engine, name", [("vllm", "bias"), ("vllm", "nobias"), ("sglang", "bias"),
                                          ("sglang", "nobias"), ("sglang", "trimmed")])
def test_the_engine_forward_of_the_export_equals_the_vlmspec_drafter(saved, target, tiny_llava_path, tmp_path,
                                                                     engine, name):
    out = export_drafter(saved["paths"][name], tmp_path / "out", engine=engine, target=tiny_llava_path)
    tensors, config = read_export(out)
    drafter = EagleDrafter.from_pretrained(saved["paths"][name], target)
    embed = target.model.get_input_embeddings().weight.detach()
    head = target.model.get_output_embeddings().weight.detach()
    if name == "trimmed":  # SGLang: head.data[hot_token_id], hot_token_id from the token map file
        hot_token_id = torch.tensor(torch.load(out / "hot_token_map.pt", weights_only=True), dtype=torch.int64)
        head = head[hot_token_id]
    gen = torch.Generator().manual_seed(7)
    T = 12
    token_ids = torch.randint(0, embed.shape[0], (T,), generator=gen)
    hidden = torch.randn(T, embed.shape[1], generator=gen)
    with torch.no_grad():
        want_hidden, want_logits = drafter.forward_train(token_ids[None], hidden[None])
        got_hidden, got_logits = engine_eagle_forward(tensors, config, embed, head, token_ids, hidden)
    assert want_hidden.abs().max() > 1  # a non-trivial function of both inputs
    torch.testing.assert_close(got_hidden, want_hidden[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_logits, want_logits[0], rtol=1e-4, atol=1e-4)
    assert torch.equal(got_logits.argmax(-1), want_logits[0].argmax(-1))


def test_a_trimmed_vocabulary_becomes_sglangs_token_map(saved, tiny_llava_path, tmp_path):
    out = export_drafter(saved["paths"]["trimmed"], tmp_path / "out", engine="sglang", target=tiny_llava_path)
    _, config = read_export(out)
    ids = torch.load(out / "hot_token_map.pt", weights_only=True)
    assert ids == TRIMMED_VOCAB  # draft id j -> target id ids[j], in the drafter's own order
    assert config["hot_vocab_size"] == len(TRIMMED_VOCAB)
    drafter = saved["drafters"]["trimmed"]
    draft_ids = torch.arange(len(TRIMMED_VOCAB))
    hot_token_id = torch.tensor(ids, dtype=torch.int64)
    assert torch.equal(hot_token_id[draft_ids], drafter._to_target_ids(draft_ids))  # SGLang: topk_index map
    info = json.loads((out / "vlmspec_export.json").read_text())
    assert info["token_map"] == "hot_token_map.pt" and "--speculative-token-map" in info["launch"]


def test_full_vocab_widens_a_trimmed_drafter_for_vllm(saved, target, tiny_llava_path, tmp_path):
    """Opt-in: the same weights drafting over the whole target vocabulary (vLLM takes no token map);
    hidden states equal the vlmspec drafter's, logits are the full head's, and the export says so."""
    out = export_drafter(saved["paths"]["trimmed"], tmp_path / "out", engine="vllm", target=tiny_llava_path,
                         full_vocab=True)
    tensors, config = read_export(out)
    assert not (out / "hot_token_map.pt").exists() and "hot_vocab_size" not in config
    info = json.loads((out / "vlmspec_export.json").read_text())
    assert info["vocabulary"].startswith("widened") and info["draft_vocab_size"] is None
    drafter = EagleDrafter.from_pretrained(saved["paths"]["trimmed"], target)
    embed = target.model.get_input_embeddings().weight.detach()
    head = target.model.get_output_embeddings().weight.detach()
    gen = torch.Generator().manual_seed(8)
    token_ids = torch.randint(0, embed.shape[0], (10,), generator=gen)
    hidden = torch.randn(10, embed.shape[1], generator=gen)
    with torch.no_grad():
        want_hidden, want_logits = drafter.forward_train(token_ids[None], hidden[None])
        got_hidden, got_logits = engine_eagle_forward(tensors, config, embed, head, token_ids, hidden)
    torch.testing.assert_close(got_hidden, want_hidden[0], rtol=1e-4, atol=1e-4)
    assert got_logits.shape[-1] == embed.shape[0] and want_logits.shape[-1] == len(TRIMMED_VOCAB)
    # on the draft vocabulary's ids the widened logits are the drafter's own
    torch.testing.assert_close(got_logits[:, torch.tensor(TRIMMED_VOCAB)], want_logits[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(UnsupportedExport, match="trainable_head"):
        export_drafter(saved["paths"]["trainable"], tmp_path / "out2", engine="vllm", target=tiny_llava_path,
                       full_vocab=True)


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("name, engine, fmt, words", [
    ("bias", "vllm", "eagle3", "llama_eagle3.py"),
    ("bias", "sglang", "eagle3", "llama_eagle3.py"),
    ("fused", "vllm", "eagle", "feature_layers=[1, 2]"),
    ("fused", "sglang", "eagle3", "fused features, feature_layers=[1, 2]"),
    ("input_norm", "sglang", "eagle", "input_norm"),
    ("vispec", "vllm", "eagle", "vision adaptor"),
    ("msd", "sglang", "eagle", "projected visual embeddings"),
    ("specvlm", "vllm", "eagle3", "compressor"),
    ("trimmed", "vllm", "eagle", "--engine sglang"),
    ("trainable", "sglang", "eagle", "trainable_head"),
])
def test_combinations_that_would_compute_another_drafter_are_refused(saved, tiny_llava_path, tmp_path, name,
                                                                     engine, fmt, words):
    with pytest.raises(UnsupportedExport, match="Supported: --format eagle") as info:
        export_drafter(saved["paths"][name], tmp_path / "out", format=fmt, engine=engine, target=tiny_llava_path)
    assert words in str(info.value)
    assert not (tmp_path / "out").exists()


def test_bad_folders_and_another_target_are_clear_errors(saved, tiny_llava_path, tmp_path):
    with pytest.raises(ModelLoadError, match="not a saved vlmspec drafter"):
        export_drafter(tmp_path, tmp_path / "out", target=tiny_llava_path)
    with pytest.raises(ModelLoadError, match="not a directory"):
        export_drafter(tmp_path / "missing", tmp_path / "out", target=tiny_llava_path)
    other = AutoConfig.from_pretrained(tiny_llava_path)
    other.text_config.num_hidden_layers = 3
    with pytest.raises(DrafterMismatchError, match="num_layers"):
        export_drafter(saved["paths"]["bias"], tmp_path / "out", target=other)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an earlier vlmspec export"):
        export_drafter(saved["paths"]["bias"], busy, target=tiny_llava_path)
    assert (busy / "notes.txt").read_text() == "mine"
    with pytest.raises(InputError, match="drafter folder itself"):
        export_drafter(saved["paths"]["bias"], saved["paths"]["bias"], target=tiny_llava_path)


def test_an_earlier_export_is_replaced_whole(saved, tiny_llava_path, tmp_path):
    out = tmp_path / "out"
    export_drafter(saved["paths"]["trimmed"], out, engine="sglang", target=tiny_llava_path)
    export_drafter(saved["paths"]["bias"], out, engine="sglang", target=tiny_llava_path)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "vlmspec_export.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


# ------------------------------------------------------------------ command line
def test_cli_exports_and_refuses_with_one_line_and_exit_2(saved, tiny_llava_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["export", "--format", "eagle", "--engine", "vllm", "--target", str(tiny_llava_path),
                     str(saved["paths"]["bias"]), str(out)]) == 0
    assert "vllm serve" in capsys.readouterr().out and (out / "model.safetensors").is_file()
    for args in (["--format", "eagle3", "--engine", "vllm", str(saved["paths"]["bias"])],
                 ["--format", "eagle", "--engine", "sglang", str(saved["paths"]["msd"])],
                 ["--format", "eagle", "--engine", "vllm", str(tmp_path / "nowhere")]):
        code = cli_main(["export", *args, "--target", str(tiny_llava_path), str(tmp_path / "refused")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "refused").exists()
