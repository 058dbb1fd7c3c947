"""Each benchmark loader on a small fixture of its format; malformed files give clear errors."""

import json
from pathlib import Path

import pytest
from PIL import Image

from vlmspec.errors import InputError
from vlmspec.evaluation.loaders import (
    BUILTINS,
    FORMATS,
    SHORT_ANSWER_INSTRUCTION,
    BenchmarkConfig,
    BenchmarkFormatError,
    build_prompt,
    load_benchmark,
)

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def load(source, **kwargs):
    return load_benchmark(BenchmarkConfig(source=str(source), **kwargs))


def assert_images_load(bench):
    for sample in bench.samples:
        image = sample.load_image()
        assert image.mode == "RGB" and image.size == (8, 8)


# ----------------------------------------------------------------- prompt styles
def test_build_prompt_styles():
    assert build_prompt("What is it?", style="raw") == "What is it?"
    assert build_prompt("What is it?", style="short") == f"What is it?\n{SHORT_ANSWER_INSTRUCTION}"
    choice = build_prompt("Which?", ["cat", "dog"], style="short")
    assert choice.startswith("Which?\nA. cat\nB. dog\n") and "option's letter" in choice
    assert "in detail" in build_prompt("Why?", style="detailed")
    with pytest.raises(InputError, match="prompt style"):
        build_prompt("q", style="verbose")


# ----------------------------------------------------------------------- generic
def test_generic_jsonl():
    bench = load(FIXTURES / "generic" / "samples.jsonl")
    assert (bench.format, bench.metric, bench.prompt_style) == ("generic", "exact", "short")
    assert [s.sample_id for s in bench.samples] == ["g1", "g2", "2"]
    assert bench.samples[0].answers == ("red",)
    assert bench.samples[1].answers == ("blue",)          # a string answer becomes a 1-list
    assert bench.samples[2].answers == ()
    assert bench.samples[0].prompt.endswith(SHORT_ANSWER_INSTRUCTION)
    assert_images_load(bench)


def test_generic_choices_switch_metric_and_letters():
    bench = load(FIXTURES / "generic" / "choices.jsonl")
    assert bench.metric == "choice"
    assert [s.answer_index for s in bench.samples] == [1, 0]   # index and letter
    assert "B. red" in bench.samples[0].prompt


def test_limit_style_and_metric_overrides():
    bench = load(FIXTURES / "generic" / "samples.jsonl", limit=2, prompt_style="raw", metric="vqa")
    assert len(bench.samples) == 2 and bench.metric == "vqa"
    assert bench.samples[0].prompt == "What color is the square?"


def test_generic_parquet_and_save_to_disk(tmp_path):
    import datasets

    rows = [{"id": "p1", "image": {"bytes": (FIXTURES / "generic/images/red.png").read_bytes(), "path": None},
             "question": "Color?", "answers": ["red"]}]
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "question": datasets.Value("string"),
                                  "answers": datasets.List(datasets.Value("string"))})
    ds = datasets.Dataset.from_list(rows, features=features)
    ds.to_parquet(str(tmp_path / "bench.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "saved_dict"))
    for source in ("bench.parquet", "saved", "saved_dict"):
        bench = load(tmp_path / source)
        assert [s.sample_id for s in bench.samples] == ["p1"], source
        assert bench.samples[0].answers == ("red",)
        assert isinstance(bench.samples[0].image, bytes)
        assert_images_load(bench)


def test_generic_imagefolder(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.new("RGB", (8, 8), (0, 255, 0)).save(folder / "green.png")
    (folder / "metadata.jsonl").write_text(json.dumps(
        {"file_name": "green.png", "question": "Color?", "answers": ["green"]}) + "\n")
    bench = load(folder)
    assert len(bench.samples) == 1 and bench.samples[0].answers == ("green",)
    assert_images_load(bench)


# --------------------------------------------------------------- known formats
def test_textvqa():
    bench = load(FIXTURES / "textvqa" / "TextVQA_0.5.1_val.json")   # recognised from its structure
    assert (bench.format, bench.metric) == ("textvqa", "vqa")
    (sample,) = bench.samples
    assert sample.sample_id == "34602" and len(sample.answers) == 10
    assert sample.image.endswith("train_images/0054c91397f2fe05.jpg")
    assert_images_load(bench)


def test_vqav2_questions_joined_with_annotations():
    bench = load(FIXTURES / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json")
    assert (bench.format, bench.metric) == ("vqav2", "vqa")
    assert [s.sample_id for s in bench.samples] == ["420", "421"]
    assert bench.samples[0].answers.count("2") == 8 and len(bench.samples[0].answers) == 10
    assert bench.samples[0].image.endswith("val2014/COCO_val2014_000000000042.jpg")
    assert_images_load(bench)


def test_coco_karpathy_test_split():
    bench = load(FIXTURES / "coco" / "dataset_coco.json")
    assert (bench.format, bench.metric, bench.skipped) == ("coco", "rouge_l", 1)
    (sample,) = bench.samples
    assert sample.sample_id == "42" and sample.answers == ("A gray square.", "A plain gray image.")
    assert "caption" in sample.prompt
    assert_images_load(bench)


def test_gqa():
    bench = load(FIXTURES / "gqa" / "testdev_balanced_questions.json")
    assert (bench.format, bench.metric) == ("gqa", "exact")
    assert bench.samples[0].answers == ("yes",) and bench.samples[0].sample_id == "20968379"
    assert_images_load(bench)


def test_scienceqa_image_questions_of_split():
    bench = load(FIXTURES / "scienceqa" / "problems.json")
    assert (bench.format, bench.metric) == ("scienceqa", "choice")
    assert [s.sample_id for s in bench.samples] == ["7"] and bench.skipped == 2   # no image / train split
    sample = bench.samples[0]
    assert sample.answer_index == 0 and sample.choices[0] == "West Virginia"
    assert "A. West Virginia" in sample.prompt
    assert_images_load(bench)


def test_chartqa():
    bench = load(f"chartqa:{FIXTURES / 'chartqa' / 'test_human.json'}")
    assert (bench.format, bench.metric) == ("chartqa", "relaxed")
    assert bench.samples[0].answers == ("87.5",)
    assert_images_load(bench)


def test_docvqa_and_infovqa():
    doc = load(FIXTURES / "docvqa" / "val_v1.0.json")
    assert (doc.format, doc.metric) == ("docvqa", "anls")
    assert doc.samples[0].answers == ("1/8/93", "01/08/93")
    info = load(f"infovqa:{FIXTURES / 'infovqa' / 'infographicsVQA_val_v1.0.json'}")
    assert (info.format, info.metric) == ("infovqa", "anls")
    assert info.samples[0].answers == ("52%",)
    assert_images_load(doc)
    assert_images_load(info)


def test_mmvet_and_llava_bench_long_answer_sets():
    mmvet = load(FIXTURES / "mmvet" / "mm-vet.json")
    assert (mmvet.format, mmvet.metric, mmvet.prompt_style) == ("mmvet", "none", "raw")
    assert mmvet.samples[0].prompt == "What is x in the equation?"
    bench = load(f"llava-bench:{FIXTURES / 'llava-bench' / 'questions.jsonl'}", prompt_style="detailed")
    assert [s.sample_id for s in bench.samples] == ["0", "1"]
    assert "in detail" in bench.samples[0].prompt
    assert_images_load(mmvet)
    assert_images_load(bench)


def test_every_format_has_a_fixture_test():
    tested = {"generic", "textvqa", "vqav2", "coco", "gqa", "scienceqa", "chartqa", "docvqa",
              "infovqa", "mmvet", "llava-bench",
              "mme", "pope", "mmmu", "mmbench"}   # these four: tests/test_eval_lmms_tasks.py
    assert set(FORMATS) == tested


# -------------------------------------------------------------------- built-ins
def test_builtin_synthetic_sets():
    long = load("synthetic-long", limit=2)
    assert (long.metric, long.prompt_style, len(long.samples)) == ("rouge_l", "raw", 2)
    assert long.samples[0].prompt == "Describe the image in detail."
    assert len(long.samples[0].answers[0].split()) > 20
    qa = load("synthetic-qa", limit=3)
    assert qa.metric == "exact" and len(qa.samples) == 3
    assert all(s.answers and "?" in s.prompt for s in qa.samples)
    assert len({s.sample_id for s in qa.samples}) == 3
    assert long.samples[0].load_image().mode == "RGB"
    again = load("synthetic-qa", limit=3)
    assert [s.prompt for s in again.samples] == [s.prompt for s in qa.samples]   # deterministic
    assert set(BUILTINS) == {"synthetic-long", "synthetic-qa", "prompt-mix", "prompt-mix-indist"}


# ------------------------------------------------------------------- errors
def test_malformed_jsonl_names_file_and_line():
    path = FIXTURES / "malformed" / "bad_line.jsonl"
    with pytest.raises(BenchmarkFormatError, match=r"bad_line\.jsonl, line 3: invalid JSON"):
        load(path)


def test_malformed_json_names_file_and_line():
    with pytest.raises(BenchmarkFormatError, match=r"bad\.json, line 3, column \d+: invalid JSON"):
        load(FIXTURES / "malformed" / "bad.json")


def test_missing_field_names_field_and_line():
    with pytest.raises(BenchmarkFormatError) as info:
        load(FIXTURES / "malformed" / "missing_field.jsonl")
    message = str(info.value)
    assert "missing_field.jsonl, line 2" in message and "'question'" in message and "prompt" in message


def test_non_object_line():
    with pytest.raises(BenchmarkFormatError, match=r"line 1: expected a JSON object"):
        load(FIXTURES / "malformed" / "not_object.jsonl")


def test_missing_image_and_unknown_source(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"image": "nowhere.png", "question": "q"}) + "\n")
    with pytest.raises(BenchmarkFormatError, match=r"b\.jsonl, line 1: image 'nowhere.png' not found.*--image-root"):
        load(path)
    with pytest.raises(BenchmarkFormatError, match="neither a built-in"):
        load(tmp_path / "missing.jsonl")


def test_image_root_and_config_validation(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"image": "red.png", "question": "q"}) + "\n")
    bench = load(path, image_root=str(FIXTURES / "generic" / "images"))
    assert_images_load(bench)
    with pytest.raises(InputError, match="limit"):
        BenchmarkConfig(source="synthetic-qa", limit=0)
    with pytest.raises(InputError, match="unknown metric"):
        BenchmarkConfig(source="synthetic-qa", metric="bleu")


def test_errors_are_vlmspec_input_errors():
    assert issubclass(BenchmarkFormatError, InputError)


def test_prompt_mix_builtins_carry_the_prompt_style_and_text_only_rows():
    from vlmspec.evaluation import BenchmarkConfig, load_benchmark

    heldout = load_benchmark(BenchmarkConfig(source="prompt-mix", limit=40))
    indist = load_benchmark(BenchmarkConfig(source="prompt-mix-indist", limit=40))
    assert heldout.metric == "none" and {s.category for s in heldout.samples} >= {"describe", "open", "chat", "photo"}
    chats = [s for s in heldout.samples if s.category == "chat"]
    assert chats and all(s.image is None and s.load_image() is None for s in chats)
    assert all(s.load_image() is not None for s in heldout.samples if s.category != "chat")
    # the held-out wordings are not the training distribution's (short factual questions aside)
    assert not {s.prompt for s in heldout.samples if s.category != "short"} & {
        s.prompt for s in indist.samples if s.category != "short"}
    # the in-distribution rows are not the rows a recipe trains on (prompt_mix seed 0)
    from vlmspec.data.prompt_mix import prompt_mix

    assert not {s.sample_id for s in indist.samples} & {p.id for p in prompt_mix(40, 0)}
