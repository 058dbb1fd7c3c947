"""lmms-eval task names, the MME / POPE / MMMU / MMBench loaders and their set-level scores.

Every fixture is written at test time in the layout of the Hugging Face parquet release
lmms-eval loads (``data/test-00000-of-00001.parquet``, ...), with 8x8 PIL images, so no
binary is committed. The network is closed for the whole module: nothing may download.
"""

import base64
import io
import json
import socket

import pytest
from PIL import Image

from vlmspec.evaluation import cli as eval_cli
from vlmspec.evaluation.aggregates import aggregate, aggregate_by_method
from vlmspec.evaluation.loaders import (
    FORMATS,
    SHORT_ANSWER_INSTRUCTION,
    TASKS,
    BenchmarkConfig,
    BenchmarkFormatError,
    load_benchmark,
)
from vlmspec.evaluation.metrics import open_match, parse_yes_no, score_prediction


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a benchmark loader tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


RED, GREEN, BLUE = png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255))


def write_parquet(path, rows, image_columns=("image",)):
    """rows with image bytes -> a parquet file whose image columns are `datasets` Images."""
    import datasets

    cells = []
    for i, row in enumerate(rows):
        cells.append({k: ({"bytes": v, "path": f"{k}_{i}.png"} if k in image_columns and v is not None else v)
                      for k, v in row.items()})
    dataset = datasets.Dataset.from_list(cells)
    for column in image_columns:
        if column in dataset.column_names:
            dataset = dataset.cast_column(column, datasets.Image())
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(path))
    return path


def load(source, **kwargs):
    return load_benchmark(BenchmarkConfig(source=str(source), **kwargs))


def assert_images_load(bench):
    for sample in bench.samples:
        image = sample.load_image()
        assert image.mode == "RGB" and image.size == (8, 8)


# ------------------------------------------------------------------------------ MME
MME_ROWS = [
    # image 1 (existence): yes + no; image 2 (existence): yes + no; image 3 (code_reasoning): yes + no
    {"question_id": "existence/1.png", "image": RED, "question": "Is there a red square? Please answer yes or no.",
     "answer": "Yes", "category": "existence"},
    {"question_id": "existence/1.png", "image": RED, "question": "Is there a dog? Please answer yes or no.",
     "answer": "No", "category": "existence"},
    {"question_id": "existence/2.png", "image": GREEN, "question": "Is it green? Please answer yes or no.",
     "answer": "Yes", "category": "existence"},
    {"question_id": "existence/2.png", "image": GREEN, "question": "Is it blue? Please answer yes or no.",
     "answer": "No", "category": "existence"},
    {"question_id": "code_reasoning/3.png", "image": BLUE, "question": "Does it print 3? Please answer yes or no.",
     "answer": "Yes", "category": "code_reasoning"},
    {"question_id": "code_reasoning/3.png", "image": BLUE, "question": "Does it print 4? Please answer yes or no.",
     "answer": "No", "category": "code_reasoning"},
]


@pytest.fixture
def mme_release(tmp_path):
    write_parquet(tmp_path / "MME" / "data" / "test-00000-of-00001.parquet", MME_ROWS)
    return tmp_path / "MME"


def test_mme_rows_pairs_and_images(mme_release):
    bench = load(f"mme:{mme_release}")
    assert (bench.format, bench.metric, bench.task, bench.name) == ("mme", "mme", "mme", "mme")
    ids = [s.sample_id for s in bench.samples]
    assert ids == ["existence/1.png#1", "existence/1.png#2", "existence/2.png#1", "existence/2.png#2",
                   "code_reasoning/3.png#1", "code_reasoning/3.png#2"]
    first = bench.samples[0]
    assert (first.category, first.group, first.answers) == ("existence", "existence/1.png", ("yes",))
    assert first.prompt.endswith(f"Please answer yes or no.\n{SHORT_ANSWER_INSTRUCTION}")
    assert isinstance(first.image, bytes)
    assert_images_load(bench)


def test_mme_score_acc_plus_needs_both_questions_of_an_image(mme_release):
    bench = load(f"mme:{mme_release}")
    predictions = dict(zip([s.sample_id for s in bench.samples],
                           ["Yes", "No.",            # image 1: both right
                            "Yes", "Yes",            # image 2: one right, one wrong (half right)
                            "yes, it does", "No"]))  # image 3: both right
    result = aggregate("mme", bench.samples, predictions)
    existence = result["categories"]["existence"]
    assert existence["acc"] == pytest.approx(75.0)         # 3 of 4 questions
    assert existence["acc_plus"] == pytest.approx(50.0)    # 1 of 2 images with both right
    assert existence["score"] == pytest.approx(125.0)
    assert result["categories"]["code_reasoning"]["score"] == pytest.approx(200.0)
    assert (result["perception"], result["cognition"], result["score"]) == pytest.approx((125.0, 200.0, 325.0))
    # the per-sample metric is plain yes/no accuracy
    scores = [score_prediction("mme", predictions[s.sample_id], s.answers) for s in bench.samples]
    assert scores == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]


def test_mme_answer_must_be_yes_or_no(tmp_path):
    path = tmp_path / "mme.jsonl"
    Image.open(io.BytesIO(RED)).save(tmp_path / "a.png")
    path.write_text(json.dumps({"question_id": "color/a.png", "image": "a.png", "question": "Red?",
                                "answer": "maybe", "category": "color"}) + "\n")
    with pytest.raises(BenchmarkFormatError, match=r"mme\.jsonl, line 1: MME answers must be yes or no"):
        load(f"mme:{path}")


# ----------------------------------------------------------------------------- POPE
POPE_TRUTH = ["yes", "yes", "yes", "no", "no", "no", "yes", "no"]
POPE_PRED = ["Yes", "yes.", "No", "Yes", "no", "No, there is none", "I cannot tell", "no"]


@pytest.fixture
def pope_release(tmp_path):
    rows = [{"id": str(i), "question_id": str(i % 4), "question": f"Is there a thing {i} in the image?",
             "answer": truth, "image_source": f"COCO_{i}", "image": RED if truth == "yes" else BLUE,
             "category": "adversarial" if i < 4 else "random"} for i, truth in enumerate(POPE_TRUTH)]
    write_parquet(tmp_path / "POPE" / "data" / "test-00000-of-00001.parquet", rows)
    # the release's Full/ folder holds other splits: they must not be mixed into "test"
    write_parquet(tmp_path / "POPE" / "Full" / "popular-00000-of-00001.parquet", rows[:1])
    return tmp_path / "POPE"


def test_pope_rows_and_prf_by_hand(pope_release):
    bench = load(f"pope:{pope_release}")
    assert (bench.format, bench.metric, len(bench.samples)) == ("pope", "pope", 8)
    assert bench.samples[0].sample_id == "adversarial/0" and bench.samples[4].sample_id == "random/0"
    assert [s.answers[0] for s in bench.samples] == POPE_TRUTH
    assert_images_load(bench)
    result = aggregate("pope", bench.samples, dict(zip([s.sample_id for s in bench.samples], POPE_PRED)))
    # predicted yes: 0, 1, 3 -> tp = 2 (0, 1), fp = 1 (3); true yes not predicted yes: 2, 6 -> fn = 2;
    # tn = 3 (4, 5, 7); 6 is unparsed
    assert (result["tp"], result["fp"], result["tn"], result["fn"], result["unparsed"]) == (2, 1, 3, 2, 1)
    assert result["accuracy"] == pytest.approx(5 / 8)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 4)
    assert result["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))   # 4/7
    assert result["score"] == pytest.approx(4 / 7)
    assert result["yes_ratio"] == pytest.approx(3 / 8)
    adversarial = result["categories"]["adversarial"]    # samples 0-3: tp 2, fp 1, fn 1, tn 0
    assert (adversarial["precision"], adversarial["recall"]) == pytest.approx((2 / 3, 2 / 3))


def test_pope_repository_json_lines_with_image_root(tmp_path):
    images = tmp_path / "val2014"
    images.mkdir()
    Image.open(io.BytesIO(RED)).save(images / "COCO_val2014_000000000042.jpg")
    lines = [{"question_id": 1, "image": "COCO_val2014_000000000042.jpg", "text": "Is there a car in the image?",
              "label": "no"},
             {"question_id": 2, "image": "COCO_val2014_000000000042.jpg", "text": "Is there a square in the image?",
              "label": "yes"}]
    path = tmp_path / "coco_pope_adversarial.json"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    bench = load(f"pope:{path}", image_root=str(images))
    assert [s.sample_id for s in bench.samples] == ["adversarial/1", "adversarial/2"]
    assert bench.samples[1].answers == ("yes",) and bench.samples[1].category == "adversarial"
    assert_images_load(bench)


# ----------------------------------------------------------------------------- MMMU
@pytest.fixture
def mmmu_release(tmp_path):
    rows = [
        {"id": "validation_Art_Theory_1", "question": "Which style is <image 1>?",
         "options": "['Baroque', 'Cubism', 'Gothic']", "answer": "B", "question_type": "multiple-choice",
         "image_1": RED, "image_2": None},
        {"id": "validation_Math_2", "question": "What is the area in <image 1>?", "options": "[]",
         "answer": "3.5", "question_type": "open", "image_1": GREEN, "image_2": None},
        {"id": "validation_Math_3", "question": "Compare <image 1> and <image 2>.", "options": "['x', 'y']",
         "answer": "A", "question_type": "multiple-choice", "image_1": RED, "image_2": BLUE},
    ]
    write_parquet(tmp_path / "MMMU" / "data" / "validation-00000-of-00001.parquet", rows,
                  image_columns=("image_1", "image_2"))
    write_parquet(tmp_path / "MMMU" / "data" / "dev-00000-of-00001.parquet", rows[:1],
                  image_columns=("image_1", "image_2"))
    return tmp_path / "MMMU"


def test_mmmu_rows_options_and_open_questions(mmmu_release):
    bench = load(f"mmmu_val:{mmmu_release}")
    assert (bench.format, bench.metric, bench.task) == ("mmmu", "mmmu", "mmmu_val")
    assert bench.skipped == 1                        # the two-image question
    choice, open_question = bench.samples
    assert choice.choices == ("Baroque", "Cubism", "Gothic") and choice.answer_index == 1
    assert "A. Baroque\nB. Cubism\nC. Gothic" in choice.prompt and choice.category == "Art_Theory"
    assert open_question.choices == () and open_question.answers == ("3.5",)
    assert open_question.prompt.endswith(SHORT_ANSWER_INSTRUCTION)
    assert_images_load(bench)
    score = lambda s, text: score_prediction("mmmu", text, s.answers, s.choices, s.answer_index)  # noqa: E731
    assert score(choice, "(B)") == 1.0 and score(choice, "Cubism") == 1.0 and score(choice, "A") == 0.0
    assert score(open_question, "The answer is 3.50") == 1.0 and score(open_question, "4") == 0.0
    result = aggregate("mmmu", bench.samples, {choice.sample_id: "B", open_question.sample_id: "7"})
    assert result["score"] == 0.5 and result["categories"]["Art_Theory"]["score"] == 1.0


def test_mmmu_split_pick(mmmu_release):
    assert len(load(f"mmmu:{mmmu_release}", split="dev").samples) == 1


# -------------------------------------------------------------------------- MMBench
MMBENCH_ROWS = [
    {"index": 10, "question": "What color is the square?", "hint": None, "A": "red", "B": "green", "C": "blue",
     "D": None, "answer": "A", "category": "attribute_recognition", "image": RED, "split": "dev"},
    {"index": 11, "question": "Which shape is it?", "hint": "The picture shows one shape.", "A": "circle",
     "B": "square", "C": "triangle", "D": "star", "answer": "B", "category": "shape", "image": GREEN,
     "split": "dev"},
]


def test_mmbench_subset_options_hint_and_letters(tmp_path):
    write_parquet(tmp_path / "MMBench" / "en" / "dev-00000-of-00001.parquet", MMBENCH_ROWS)
    write_parquet(tmp_path / "MMBench" / "cn" / "dev-00000-of-00001.parquet",
                  [dict(MMBENCH_ROWS[0], index=99)])
    bench = load(f"mmbench_en_dev:{tmp_path / 'MMBench'}")       # only the en/ sub-folder
    assert (bench.format, bench.metric) == ("mmbench", "choice")
    assert [s.sample_id for s in bench.samples] == ["10", "11"]
    first, second = bench.samples
    assert first.choices == ("red", "green", "blue") and first.answer_index == 0   # D absent
    assert second.question.startswith("Context: The picture shows one shape.\nWhich shape")
    assert "D. star" in second.prompt and second.answer_index == 1
    assert_images_load(bench)
    result = aggregate("choice", bench.samples, {"10": "A", "11": "The answer is C"})
    assert result["score"] == 0.5
    assert result["categories"] == {"attribute_recognition": {"score": 1.0, "questions": 1},
                                    "shape": {"score": 0.0, "questions": 1}}


def test_mmbench_official_tsv_with_base64_images(tmp_path):
    path = tmp_path / "mmbench_dev_en_20231003.tsv"
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    rows = [["1", "Color?", "nan", "red", "blue", "", "", "B", "color", base64.b64encode(BLUE).decode()]]
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    bench = load(f"mmbench:{path}")
    (sample,) = bench.samples
    assert sample.choices == ("red", "blue") and sample.answer_index == 1 and sample.question == "Color?"
    assert sample.load_image().getpixel((0, 0))[2] > 200


# ------------------------------------------------------------------ task names
@pytest.mark.parametrize("name, fmt, metric", [
    ("textvqa_val", "textvqa", "vqa"), ("textvqa", "textvqa", "vqa"),
    ("docvqa_val", "docvqa", "anls"), ("docvqa", "docvqa", "anls"), ("infovqa_val", "infovqa", "anls"),
    ("chartqa", "chartqa", "relaxed"), ("mme", "mme", "mme"), ("pope", "pope", "pope"),
    ("mmmu_val", "mmmu", "mmmu"), ("mmmu", "mmmu", "mmmu"),
    ("mmbench_en_dev", "mmbench", "choice"), ("mmbench", "mmbench", "choice"),
    ("scienceqa_img", "scienceqa", "choice"), ("scienceqa", "scienceqa", "choice"),
    ("coco2017_cap_val", "coco", "rouge_l"),
])
def test_task_names_map_to_loader_and_metric(name, fmt, metric):
    task = TASKS[name]
    assert task.format == fmt and FORMATS[fmt].metric == metric and task.metric == metric


def test_textvqa_val_picks_validation_of_the_release(tmp_path):
    row = {"question_id": 7, "image_id": "abc", "question": "What does it say?", "image": RED,
           "answers": ["stop"] * 10}
    write_parquet(tmp_path / "textvqa" / "data" / "train-00000-of-00002.parquet", [dict(row, question_id=1)])
    write_parquet(tmp_path / "textvqa" / "data" / "validation-00000-of-00001.parquet", [row])
    # the release's test split has no answers; without the task's split a plain load would pick it
    write_parquet(tmp_path / "textvqa" / "data" / "test-00000-of-00001.parquet", [dict(row, question_id=9)])
    assert [s.sample_id for s in load(f"generic:{tmp_path / 'textvqa'}").samples] == ["9"]
    bench = load(f"textvqa_val:{tmp_path / 'textvqa'}")
    assert (bench.metric, [s.sample_id for s in bench.samples]) == ("vqa", ["7"])
    assert len(bench.samples[0].answers) == 10
    assert_images_load(bench)
    assert [s.sample_id for s in load(f"textvqa:{tmp_path / 'textvqa'}", split="train").samples] == ["1"]
    with pytest.raises(BenchmarkFormatError, match=r"no split 'testdev'.*test, train, validation.*--split"):
        load(f"textvqa:{tmp_path / 'textvqa'}", split="testdev")


def test_docvqa_scienceqa_chartqa_coco_releases(tmp_path):
    doc = {"questionId": "q1", "question": "Date?", "image": RED, "answers": ["1/8/93"]}
    write_parquet(tmp_path / "DocVQA" / "DocVQA" / "validation-00000-of-00001.parquet", [doc])
    write_parquet(tmp_path / "DocVQA" / "InfographicVQA" / "validation-00000-of-00001.parquet",
                  [dict(doc, questionId="i1", answers=["52%"])])
    assert [s.sample_id for s in load(f"docvqa_val:{tmp_path / 'DocVQA'}").samples] == ["q1"]
    info = load(f"infovqa_val:{tmp_path / 'DocVQA'}")
    assert (info.metric, info.samples[0].answers) == ("anls", ("52%",))

    sqa = {"image": RED, "question": "Which is a state?", "choices": ["Ohio", "Paris"], "answer": 0,
           "hint": "", "subject": "social science"}
    write_parquet(tmp_path / "ScienceQA" / "ScienceQA-IMG" / "test-00000-of-00001.parquet", [sqa])
    write_parquet(tmp_path / "ScienceQA" / "ScienceQA-FULL" / "test-00000-of-00001.parquet",
                  [sqa, dict(sqa, image=None)])
    bench = load(f"scienceqa_img:{tmp_path / 'ScienceQA'}")
    assert (bench.metric, len(bench.samples), bench.skipped) == ("choice", 1, 0)
    assert bench.samples[0].answer_index == 0

    write_parquet(tmp_path / "ChartQA" / "data" / "test-00000-of-00001.parquet",
                  [{"type": "human_test", "question": "Value?", "answer": "87.5", "image": GREEN}])
    chart = load(f"chartqa:{tmp_path / 'ChartQA'}")
    assert (chart.metric, chart.samples[0].answers, chart.samples[0].category) == ("relaxed", ("87.5",), "human_test")

    write_parquet(tmp_path / "COCO" / "data" / "val-00000-of-00001.parquet",
                  [{"question_id": "000000000042.jpg", "image": BLUE,
                    "question": "Provide a one-sentence caption for the provided image.",
                    "answer": ["A blue square.", "A plain blue image."], "id": 42, "file_name": "000000000042.jpg"}])
    write_parquet(tmp_path / "COCO" / "data" / "test-00000-of-00001.parquet",
                  [{"question_id": "t.jpg", "image": RED, "question": "q", "answer": [], "id": 1, "file_name": "t.jpg"}])
    coco = load(f"coco2017_cap_val:{tmp_path / 'COCO'}")
    assert (coco.metric, [s.sample_id for s in coco.samples]) == ("rouge_l", ["000000000042.jpg"])
    assert coco.samples[0].answers == ("A blue square.", "A plain blue image.")
    for bench in (info, bench, chart, coco):
        assert_images_load(bench)


def test_official_coco_captions_json(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    Image.open(io.BytesIO(BLUE)).save(tmp_path / "val2017" / "000000000042.jpg")
    (tmp_path / "annotations" / "captions_val2017.json").write_text(json.dumps({
        "images": [{"id": 42, "file_name": "000000000042.jpg"}, {"id": 43, "file_name": "none.jpg"}],
        "annotations": [{"image_id": 42, "id": 1, "caption": "A blue square."},
                        {"image_id": 42, "id": 2, "caption": "Blue."}],
    }))
    bench = load(f"coco2017_cap_val:{tmp_path / 'annotations' / 'captions_val2017.json'}")
    assert (bench.format, bench.skipped, [s.sample_id for s in bench.samples]) == ("coco", 1, ["42"])
    assert bench.samples[0].answers == ("A blue square.", "Blue.")
    assert_images_load(bench)


# ------------------------------------------------------------- missing data
def test_task_name_without_path_says_where_the_data_is_expected():
    with pytest.raises(BenchmarkFormatError) as info:
        load("textvqa")
    message = str(info.value)
    for expected in ("never downloads", "--benchmark textvqa:PATH", "lmms-lab/textvqa", "parquet",
                     "save_to_disk", "hf download lmms-lab/textvqa --repo-type dataset",
                     "TextVQA_0.5.1_val.json", "split 'validation'"):
        assert expected in message, expected


def test_task_with_missing_path_and_unknown_names(tmp_path):
    with pytest.raises(BenchmarkFormatError, match=r"benchmark 'mmbench_en_dev': .*nowhere does not exist") as info:
        load(f"mmbench_en_dev:{tmp_path / 'nowhere'}")
    assert "lmms-lab/MMBench" in str(info.value) and "en/ sub-folder" in str(info.value)
    with pytest.raises(BenchmarkFormatError, match=r"--benchmark gqa:PATH"):
        load("gqa")
    with pytest.raises(BenchmarkFormatError, match=r"neither a built-in.*mmbench_en_dev"):
        load("mmbench_en_dev_typo")


def test_cli_reports_missing_data_before_loading_a_model(tmp_path, capsys):
    code = eval_cli.main(["eval", "--benchmark", "mme", "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "error: benchmark 'mme' needs its data on this machine" in err and "--benchmark mme:PATH" in err


# --------------------------------------------------------------------- metrics
@pytest.mark.parametrize("text, parsed", [
    ("Yes", "yes"), ("no.", "no"), ("No, there is not.", "no"), ("It is there, so yes", "yes"),
    ("Yes and no", "yes"), ("maybe", None), ("there is a no-entry sign, yes", None), ("", None),
])
def test_parse_yes_no(text, parsed):
    assert parse_yes_no(text) == parsed


def test_open_match():
    assert open_match("3.50", ["3.5"]) == 1.0
    assert open_match("So the answer is: Paris.", ["paris"]) == 1.0
    assert open_match("3.6", ["3.5"]) == 0.0
    assert open_match("['24/7']", ["24/7"]) == 0.0


def test_aggregate_by_method_uses_first_repeat_and_skips_errors(mme_release):
    bench = load(f"mme:{mme_release}")
    ids = [s.sample_id for s in bench.samples]
    records = [{"sample_id": sid, "method": "plain", "repeat": 0, "text": t, "error": None}
               for sid, t in zip(ids, ["Yes", "No", "Yes", "No", "Yes", "No"])]
    records += [{"sample_id": ids[0], "method": "plain", "repeat": 1, "text": "No", "error": None},
                {"sample_id": ids[0], "method": "fast", "repeat": 0, "error": "boom"},
                {"sample_id": ids[1], "method": "fast", "repeat": 0, "text": "No", "error": None}]
    result = aggregate_by_method("mme", bench.samples, records)
    assert result["plain"]["score"] == pytest.approx(400.0)      # all right: 200 + 200 (repeat 1 ignored)
    assert result["fast"]["categories"]["existence"]["questions"] == 1
    assert list(aggregate_by_method("mme", bench.samples, records, methods=["fast"])) == ["fast"]
    assert aggregate("none", bench.samples, {}) is None
