"""Every bad input gets one clear vlmspec error that names the problem and the fix."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vlmspec
from vlmspec import (
    DrafterMismatchError,
    ImageError,
    InputError,
    ModelLoadError,
    NumericalError,
    Pipeline,
    PromptError,
    PromptLookupDrafter,
    Target,
    UnsupportedError,
)
from vlmspec.images import load_image
from vlmspec.testing import TinyLlavaConfig, build_tiny_llava

from conftest import random_image


@pytest.fixture(scope="module")
def pipe(tiny_llava_path):
    return vlmspec.load(tiny_llava_path, "prompt-lookup")


# ------------------------------------------------------------------ images
def test_missing_image_file(pipe, tmp_path):
    with pytest.raises(ImageError, match="not found"):
        pipe.generate(tmp_path / "nope.png", "Describe this.")


def test_corrupt_image_bytes(pipe, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageError, match="corrupt or not an image"):
        pipe.generate(bad, "Describe this.")
    with pytest.raises(ImageError, match="corrupt or not an image"):
        pipe.generate(b"definitely not an image", "Describe this.")


def test_empty_file_and_directory(pipe, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        pipe.generate(empty, "Describe this.")
    with pytest.raises(ImageError, match="directory"):
        pipe.generate(tmp_path, "Describe this.")


def test_zero_pixel_images(pipe):
    with pytest.raises(ImageError, match="no pixels|empty"):
        pipe.generate(np.zeros((0, 10, 3), dtype=np.uint8), "Describe this.")
    with pytest.raises(ImageError, match="no pixels"):
        load_image(Image.new("RGB", (0, 0)))


def test_unsupported_type_and_shape(pipe):
    with pytest.raises(ImageError, match="Unsupported image type"):
        pipe.generate(12345, "Describe this.")
    with pytest.raises(ImageError, match="shape"):
        pipe.generate(np.zeros((5, 6, 7), dtype=np.uint8), "Describe this.")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "I;16", "I", "CMYK", "1"])
def test_other_image_modes_are_converted(mode):
    image = random_image(0, 20, 12).convert("RGBA" if mode in ("RGBA", "LA") else "RGB")
    if mode == "I;16":
        image = Image.fromarray((np.asarray(image.convert("L"), dtype=np.uint16) * 257))
        assert image.mode.startswith("I;16")
    elif mode == "I":
        image = image.convert("L").convert("I")
    else:
        image = image.convert(mode)
    rgb = load_image(image)
    assert rgb.mode == "RGB" and rgb.size == (20, 12)


def test_sixteen_bit_grey_keeps_its_range():
    ramp = np.linspace(0, 65535, 16 * 4, dtype=np.uint16).reshape(4, 16)
    rgb = np.asarray(load_image(Image.fromarray(ramp)))
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image(clear)).min() == 255


def test_accepted_image_inputs_give_the_same_answer(pipe, tmp_path):
    image = random_image(3, 30, 20)
    path = tmp_path / "img.png"
    image.save(path)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    answers = {
        kind: pipe.generate(value, "Describe this.", max_new_tokens=8).token_ids
        for kind, value in {
            "pil": image,
            "path": path,
            "str": str(path),
            "bytes": buffer.getvalue(),
            "array": np.asarray(image),
            "float": np.asarray(image) / 255.0,
            "tensor": torch.from_numpy(np.asarray(image).copy()),
        }.items()
    }
    assert len({tuple(v) for v in answers.values()}) == 1


# ------------------------------------------------------------------ prompt and options
@pytest.mark.parametrize("prompt", ["", "   ", "\n"])
def test_empty_prompt(pipe, prompt):
    with pytest.raises(PromptError, match="prompt is empty"):
        pipe.generate(random_image(0), prompt)


def test_missing_prompt(pipe):
    with pytest.raises(PromptError, match="No prompt"):
        pipe.generate(random_image(0))


def test_prompt_past_the_context(pipe):
    with pytest.raises(PromptError, match="exceed the model's context of 1024"):
        pipe.generate(random_image(0), "a" * 1000, max_new_tokens=50)
    with pytest.raises(PromptError, match="lower max_new_tokens"):
        pipe.generate(random_image(0), "Describe this.", max_new_tokens=5000)


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_max_new_tokens_must_be_positive(pipe, value):
    with pytest.raises(InputError, match="max_new_tokens must be a positive integer"):
        pipe.generate(random_image(0), "Describe this.", max_new_tokens=value)


def test_sampling_parameters(pipe):
    with pytest.raises(InputError, match="temperature must be >= 0"):
        pipe.generate(random_image(0), "Describe this.", temperature=-0.5)
    for top_p in (0.0, 1.5, -1):
        with pytest.raises(InputError, match=r"top_p must be in \(0, 1\]"):
            pipe.generate(random_image(0), "Describe this.", temperature=1.0, top_p=top_p)
    with pytest.raises(InputError, match="top_k must be a positive integer"):
        pipe.generate(random_image(0), "Describe this.", temperature=1.0, top_k=0)


def test_inputs_and_prompt_together(pipe):
    inputs = pipe.prepare(random_image(0), "Describe this.")
    with pytest.raises(InputError, match="not both"):
        pipe.generate(random_image(0), "Describe this.", inputs=inputs)
    with pytest.raises(InputError, match="input_ids"):
        pipe.generate(inputs={"pixel_values": inputs["pixel_values"]})


# ------------------------------------------------------------------ models
def test_drafter_with_another_tokenizer(tiny_llava_path, tmp_path):
    model, processor = build_tiny_llava(TinyLlavaConfig())
    processor.tokenizer.add_tokens(["<extra_token>"])
    model.save_pretrained(tmp_path / "drafter")
    processor.save_pretrained(tmp_path / "drafter")
    with pytest.raises(DrafterMismatchError, match="tokenizer differs"):
        vlmspec.load(tiny_llava_path, f"model:{tmp_path / 'drafter'}")


def test_unknown_drafter_spec(tiny_llava_path):
    with pytest.raises(InputError, match="Unknown drafter 'warp-drive'.*prompt-lookup"):
        vlmspec.load(tiny_llava_path, "warp-drive")


def test_missing_draft_model(tiny_llava_path, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        vlmspec.load(tiny_llava_path, f"model:{tmp_path / 'missing'}")


def test_target_that_is_not_llava(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(tmp_path / "llama")
    with pytest.raises(ModelLoadError, match="'llama' checkpoint, not a LLaVA-style"):
        vlmspec.load(tmp_path / "llama")


def test_target_path_problems(tmp_path):
    with pytest.raises(ModelLoadError, match="Could not load a model config"):
        vlmspec.load(tmp_path)  # an empty directory
    with pytest.raises(ModelLoadError, match="not a directory"):
        vlmspec.load(tmp_path / "missing-dir")
    with pytest.raises(ModelLoadError, match="local Hugging Face cache"):
        vlmspec.load("no-such-org/no-such-model")


def test_nan_logits_are_reported(tiny_llava_path):
    target = Target.load(tiny_llava_path)
    with torch.no_grad():
        target.model.lm_head.weight[0, 0] = float("nan")
    pipe = Pipeline(target, PromptLookupDrafter())
    with pytest.raises(NumericalError, match="NaN or infinite logits.*float32"):
        pipe.generate(random_image(0), "Describe this.", max_new_tokens=4)
    pair = (random_image(0), "Describe this.")
    for sampling in ({}, {"temperature": 1.0, "seed": 0}):  # the prefill's logits are checked too
        with pytest.raises(NumericalError, match="NaN or infinite logits"):
            pipe.generate_batch([pair, pair], max_new_tokens=1, **sampling)


def test_cli_reports_errors_in_one_line(tiny_llava_path, tmp_path, capsys):
    from vlmspec.cli import main

    status = main(["generate", "--target", str(tiny_llava_path), "--image", str(tmp_path / "x.png"), "--prompt", "hi"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: Image file not found") and "Traceback" not in err


# ------------------------------------------------------- a newcomer's first hour
@pytest.mark.parametrize("with_template", [True, False])
def test_a_raw_prompt_with_its_placeholder_is_used_as_written(tiny_llava_path, with_template):
    target = Target.load(tiny_llava_path)
    if not with_template:
        target.processor.chat_template = None
        target.tokenizer.chat_template = None
    pipe = Pipeline(target, vlmspec.NoDrafter())
    raw = "USER: <image>\nWhat is the color? ASSISTANT:"
    inputs = pipe.prepare(random_image(3), raw)
    want = target.processor(images=[random_image(3)], text=raw, return_tensors="pt")["input_ids"]
    assert torch.equal(inputs["input_ids"], want)  # one placeholder, the text exactly as given
    assert pipe.generate(random_image(3), raw, max_new_tokens=3).metrics.new_tokens == 3
    with pytest.raises(PromptError, match="2 <image> placeholder.*1 image"):
        pipe.generate(random_image(3), "<image> and <image> compared?", max_new_tokens=2)
    with pytest.raises(PromptError, match="1 <image> placeholder.*0 image"):
        pipe.generate(None, "USER: <image>\nHi ASSISTANT:", max_new_tokens=2)


def test_a_bare_model_is_a_target(tiny_llava_path):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_path)
    pair = Target.load(tiny_llava_path)
    inputs = pair.prepare([random_image(4)], "Describe this.")
    want = vlmspec.generate(inputs=inputs, target=pair, drafter="none", max_new_tokens=6).token_ids
    assert vlmspec.generate(inputs=inputs, target=model, drafter="none", max_new_tokens=6).token_ids == want
    model.name_or_path = ""  # nowhere to find its processor
    model.config._name_or_path = ""
    with pytest.raises(ModelLoadError, match=r"target=\(model, processor\)"):
        vlmspec.generate(inputs=inputs, target=model, max_new_tokens=2)
    with pytest.raises(InputError, match="is not a target"):
        vlmspec.generate(inputs=inputs, target=123, max_new_tokens=2)


@pytest.mark.parametrize("args,message", [
    (["--device", "cuda:7"], "cuda:7"),
    (["--device", "foo"], "Unknown device 'foo'"),
    (["--dtype", "int8"], "Unknown dtype 'int8'"),
])
def test_cli_unusable_device_or_dtype_is_one_line(args, message, capsys, tiny_llava_path):
    from vlmspec.cli import main

    assert main(["generate", "--target", str(tiny_llava_path), "--prompt", "hi", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_version_and_python_m(capsys):
    import subprocess
    import sys

    from vlmspec.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("vlmspec ")
    child = subprocess.run([sys.executable, "-m", "vlmspec", "--version"], capture_output=True, text=True)
    assert child.returncode == 0 and child.stdout.startswith("vlmspec ")


def test_the_drafter_that_ran_is_named_in_the_result(tiny_llava_path):
    pipe = vlmspec.load(tiny_llava_path, "auto")
    result = pipe.generate(random_image(5), "Describe this.", max_new_tokens=3)
    assert result.drafter == "auto -> prompt-lookup"  # no shipped drafter matches a tiny random target
    assert result.to_dict()["drafter"] == "auto -> prompt-lookup"
    assert vlmspec.load(tiny_llava_path, "prompt-lookup:2").generate(
        random_image(5), "Describe this.", max_new_tokens=2).drafter == "prompt-lookup:2"


def test_stop_strings_are_whole_strings(pipe):
    from vlmspec.inputs import stop_strings as _stop_strings

    assert _stop_strings("~xy") == ("~xy",) and _stop_strings(None) == () and _stop_strings(["a", "b"]) == ("a", "b")
    with pytest.raises(InputError, match="empty string"):
        pipe.generate(random_image(1), "Describe this.", stop=[""], max_new_tokens=2)
    with pytest.raises(InputError, match="string or a list of strings"):
        pipe.generate(random_image(1), "Describe this.", stop=5, max_new_tokens=2)


def test_stop_strings_do_not_match_across_special_tokens(pipe):
    """As transformers' stop_strings: matched on token strings, special tokens included."""
    tokenizer = pipe.target.tokenizer
    _, criteria = pipe._decoding_options(20, 0.0, None, None, ("ab",))
    a, b = tokenizer.convert_tokens_to_ids(["a", "b"])
    pad = tokenizer.convert_tokens_to_ids("<pad>")
    from vlmspec.core.stopping import StopTracker

    across = StopTracker(criteria)
    across.add([a, pad, b, a])
    assert not across.done  # "a<pad>ba": no "ab" in the token strings
    across.add([b])
    assert across.finish_reason == "stop_string" and across.generated == [a, pad, b, a, b]


@pytest.mark.parametrize("field,value", [
    ("min_new_tokens", 5), ("suppress_tokens", [3]), ("begin_suppress_tokens", [3]), ("bad_words_ids", [[4]]),
    ("repetition_penalty", 1.3), ("no_repeat_ngram_size", 2),
])
def test_generation_config_processors_are_refused(tiny_llava_path, field, value):
    """These change model.generate()'s tokens; vlmspec refuses them by name instead of differing silently."""
    pipe = vlmspec.load(tiny_llava_path, "prompt-lookup")
    setattr(pipe.target.model.generation_config, field, value)
    with pytest.raises(UnsupportedError, match=f"generation_config sets {field}="):
        pipe.generate(random_image(0), "Describe this.", max_new_tokens=4)
    setattr(pipe.target.model.generation_config, field, None)
    assert pipe.generate(random_image(0), "Describe this.", max_new_tokens=4).metrics.new_tokens >= 1


def test_eos_follows_the_generation_config_as_model_generate_does(tiny_llava_path):
    """No eos_token_id in generation_config: model.generate runs to max_new_tokens, and so does vlmspec."""
    from vlmspec import Target

    target = Target.load(tiny_llava_path)
    assert target.eos_token_ids == [target.model.generation_config.eos_token_id]
    target.model.generation_config.eos_token_id = None
    assert Target(target.model, target.processor).eos_token_ids == []


@pytest.mark.parametrize("options,message", [
    ({"top_p": "x"}, "top_p must be in"), ({"top_p": True}, "top_p must be in"),
    ({"temperature": True}, "temperature must be"), ({"top_k": True}, "top_k must be"),
    ({"seed": "abc", "temperature": 1.0}, "seed must be an integer"), ({"seed": 2**70}, "seed must be an integer"),
    ({"seed": -1}, "seed must be an integer"),
])
def test_bad_sampling_options_are_one_line_errors(pipe, options, message):
    with pytest.raises(InputError, match=message):
        pipe.generate(random_image(0), "Describe this.", max_new_tokens=2, **options)


def test_draft_length_true_is_refused():
    from vlmspec import ScheduleConfig

    with pytest.raises(InputError, match="draft_length must be an integer"):
        ScheduleConfig.parse(True)
    with pytest.raises(InputError, match="draft_length must be an integer"):
        ScheduleConfig(draft_length=True)


def test_checkpoint_names_are_found_in_the_local_cache_without_network(tiny_llava_path, tmp_path, monkeypatch):
    # A hub name is looked up in the Hugging Face cache first, with no network call: a cached
    # snapshot loads even with the network switched on but unreachable; a missing one (offline)
    # names the cache folder it looked in.
    import shutil

    from vlmspec.target import Target

    cache = tmp_path / "hub"
    repo = cache / "models--some-org--tiny-llava"
    snapshot = repo / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_llava_path, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # any network attempt would fail
    target = Target.load("some-org/tiny-llava")
    assert Path(target.model.name_or_path) == snapshot
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=rf"not in the local Hugging Face cache \({re.escape(str(cache))}"):
        Target.load("some-org/not-cached")


# ------------------------------------------------------- damaged files and stray keywords
def _bomb_png(path):
    """A 1x1 PNG whose header claims 30000 x 30000 pixels (PIL's decompression-bomb guard)."""
    import struct
    import zlib

    Image.new("L", (1, 1)).save(path)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"IHDR")
    raw[at + 4 : at + 12] = struct.pack(">II", 30000, 30000)
    raw[at + 17 : at + 21] = struct.pack(">I", zlib.crc32(bytes(raw[at : at + 17])) & 0xFFFFFFFF)
    path.write_bytes(bytes(raw))
    return path


def test_a_decompression_bomb_is_an_image_error(pipe, tmp_path):
    with pytest.raises(ImageError, match="too large to decode safely.*MAX_IMAGE_PIXELS"):
        pipe.generate(_bomb_png(tmp_path / "bomb.png"), "Describe.")


@pytest.fixture(scope="module")
def saved_eagle(tiny_llava_path, tmp_path_factory):
    from vlmspec.drafters.eagle import EagleDrafter

    return EagleDrafter.from_target(vlmspec.Target.load(tiny_llava_path)).save_pretrained(
        tmp_path_factory.mktemp("eagle") / "d")


def _damage(kind, folder):
    import json

    from safetensors.torch import load_file, save_file

    weights = folder / "model.safetensors"
    if kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif kind == "garbage":
        weights.write_bytes(b"not a safetensors file" * 4)
    elif kind == "no-config-section":
        meta = json.loads((folder / "config.json").read_text())
        meta.pop("eagle")
        (folder / "config.json").write_text(json.dumps(meta))
    elif kind == "wrong-shape":
        tensors = load_file(weights)
        name = next(k for k, t in tensors.items() if t.dim() == 2)
        tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
        save_file(tensors, weights, metadata={"format": "pt"})


@pytest.mark.parametrize("kind,message", [
    ("truncated", "not a readable safetensors file.*truncated or corrupt"),
    ("garbage", "not a readable safetensors file"),
    ("no-config-section", 'no "eagle" section'),
    ("wrong-shape", r"do not fit this model's configuration \(fc.weight: file \(65, 128\) vs model \(64, 128\)"),
])
def test_a_damaged_drafter_is_a_load_error_in_the_api_and_the_cli(kind, message, saved_eagle, tiny_llava_path,
                                                                   tmp_path, capsys):
    import shutil

    from vlmspec.cli import main

    folder = shutil.copytree(saved_eagle, tmp_path / kind)
    _damage(kind, folder)
    with pytest.raises(ModelLoadError, match=message):
        vlmspec.build_drafter(f"eagle:{folder}", vlmspec.Target.load(tiny_llava_path))
    assert main(["generate", "--target", str(tiny_llava_path), "--drafter", f"eagle:{folder}", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_damaged_checkpoint_weights_are_load_errors(how, tiny_llava_path, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_llava_path, tmp_path / "ckpt")
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:200] if how == "truncated" else b"xx" * 50)
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        vlmspec.Target.load(folder)
    with pytest.raises(ModelLoadError, match="draft model.*not a readable safetensors file"):
        vlmspec.build_drafter(f"model:{folder}", vlmspec.Target.load(tiny_llava_path))


def test_prompt_of_the_wrong_type_says_so(pipe):
    with pytest.raises(PromptError, match="must be a string, got int"):
        pipe.generate(random_image(0), 123)


def test_bad_pixel_values_in_inputs(pipe):
    inputs = pipe.prepare(random_image(0), "Describe.")
    with pytest.raises(InputError, match=r"\(7, 7\) pixels but the vision tower takes 32x32"):
        pipe.generate(inputs={**inputs, "pixel_values": torch.zeros(1, 3, 7, 7)})
    with pytest.raises(InputError, match="must be a float tensor"):
        pipe.generate(inputs={**inputs, "pixel_values": inputs["pixel_values"].tolist()})


@pytest.mark.parametrize("kwarg,message", [
    ({"repetition_penalty": 1.2}, "repetition_penalty=1.2 changes model.generate"),
    ({"no_repeat_ngram_size": 3}, "not be lossless"),
    ({"do_sample": True}, "temperature > 0"),
    ({"max_length": 30}, "max_new_tokens"),
    ({"num_beams": 2}, "beam search"),
])
def test_model_generate_keywords_get_named_errors(pipe, kwarg, message):
    with pytest.raises(UnsupportedError, match=message):
        pipe.generate(random_image(0), "Describe.", **kwarg)
    with pytest.raises(UnsupportedError, match=message):
        pipe.generate_batch([(random_image(0), "Describe.")], **kwarg)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        pipe.generate(random_image(0), "Describe.", colour="red")
