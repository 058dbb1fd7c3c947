"""Set-level scores: what a benchmark reports over all its answers, not per answer.

Per-sample scores (:func:`vlmspec.evaluation.metrics.score_prediction`) average to the
"accuracy" of the report. Some benchmarks' headline numbers need the whole set:

* MME (metric ``mme``): per category (subtask), ``acc`` = % of questions answered right and
  ``acc+`` = % of images with all (both) of their questions right; the category score is
  ``acc + acc+`` (at most 200). ``perception`` sums the 10 perception categories (existence,
  count, position, color, posters, celebrity, scene, landmark, artwork, OCR; at most 2000),
  ``cognition`` the 4 cognition ones (commonsense_reasoning, numerical_calculation,
  text_translation, code_reasoning; at most 800); ``score`` = perception + cognition;
* POPE (metric ``pope``): "yes" is the positive class; accuracy, precision, recall, F1 and
  yes-ratio (share of answers read as yes), overall and per category (adversarial /
  popular / random); an answer read as neither yes nor no is wrong and counts as not-yes;
  ``score`` = F1;
* every other scored metric: ``score`` = the mean per-sample score, and the mean per
  category when samples have one (MMBench abilities, MMMU subjects, ...).

``aggregate(metric, samples, predictions)`` computes them from the samples and their
predicted texts; ``aggregate_by_method(metric, samples, records)`` from a run's records
(the first repeat of each method, errors left out).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from .metrics import parse_yes_no, score_prediction
from .samples import Sample

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "ocr")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def aggregate(metric: str, samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict | None:
    """Set-level scores of ``metric`` (see the module docstring) over the samples that have a
    prediction (``predictions``: sample id -> predicted text); None for metric "none" or
    when no sample has both a prediction and a reference."""
    if metric == "none":
        return None
    answered = [s for s in samples if s.sample_id in predictions]
    if metric == "mme":
        return mme_scores(answered, predictions)
    if metric == "pope":
        return pope_scores(answered, predictions)
    return mean_scores(metric, answered, predictions)


def aggregate_by_method(metric: str, samples: Sequence[Sample], records: Iterable[dict],
                        methods: Iterable[str] | None = None) -> dict[str, dict | None]:
    """``aggregate`` per method (only ``methods`` when given) of a run's ``samples.jsonl``
    records: each sample's first repeat without an error."""
    wanted = set(methods) if methods is not None else None
    first: dict[str, dict[str, tuple[int, str]]] = {}
    for record in records:
        if record.get("error") or record.get("text") is None:
            continue
        if wanted is not None and record["method"] not in wanted:
            continue
        mine = first.setdefault(record["method"], {})
        repeat = int(record.get("repeat", 0))
        if record["sample_id"] not in mine or repeat < mine[record["sample_id"]][0]:
            mine[record["sample_id"]] = (repeat, record["text"])
    return {method: aggregate(metric, samples, {sid: text for sid, (_, text) in texts.items()})
            for method, texts in first.items()}


# ------------------------------------------------------------------------------- MME
def mme_scores(samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict | None:
    by_category: dict[str, dict[str, list[bool]]] = {}
    for sample in samples:
        if not sample.answers:
            continue
        right = parse_yes_no(predictions[sample.sample_id]) == parse_yes_no(sample.answers[0])
        group = sample.group or sample.sample_id
        by_category.setdefault(sample.category or "unknown", {}).setdefault(group, []).append(right)
    if not by_category:
        return None
    categories = {}
    for category, images in sorted(by_category.items()):
        answers = [right for image in images.values() for right in image]
        acc = 100.0 * sum(answers) / len(answers)
        acc_plus = 100.0 * sum(all(image) for image in images.values()) / len(images)
        categories[category] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus,
                                "questions": len(answers), "images": len(images)}
    perception = sum((c["score"] for name, c in categories.items() if name.lower() in MME_PERCEPTION), 0.0)
    cognition = sum((c["score"] for name, c in categories.items() if name.lower() in MME_COGNITION), 0.0)
    other = sorted(name for name in categories if name.lower() not in MME_PERCEPTION + MME_COGNITION)
    return {"metric": "mme", "score": perception + cognition, "perception": perception, "cognition": cognition,
            "categories": categories, "uncounted_categories": other,
            "questions": sum(c["questions"] for c in categories.values())}


# ------------------------------------------------------------------------------ POPE
def _binary_scores(pairs: list[tuple[str | None, str]]) -> dict:
    """(predicted, true) yes/no pairs -> accuracy, precision, recall, F1, yes-ratio (yes = positive)."""
    tp = sum(p == "yes" and t == "yes" for p, t in pairs)
    fp = sum(p == "yes" and t == "no" for p, t in pairs)
    tn = sum(p == "no" and t == "no" for p, t in pairs)
    fn = sum(p != "yes" and t == "yes" for p, t in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(pairs)
    return {"accuracy": (tp + tn) / n, "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": (tp + fp) / n, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "unparsed": sum(p is None for p, _ in pairs), "questions": n}


def pope_scores(samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict | None:
    pairs: dict[str | None, list[tuple[str | None, str]]] = {}
    every = []
    for sample in samples:
        truth = parse_yes_no(sample.answers[0]) if sample.answers else None
        if truth is None:
            continue
        pair = (parse_yes_no(predictions[sample.sample_id]), truth)
        every.append(pair)
        pairs.setdefault(sample.category, []).append(pair)
    if not every:
        return None
    overall = _binary_scores(every)
    categories = {c: _binary_scores(p) for c, p in sorted(pairs.items(), key=lambda kv: str(kv[0])) if c}
    return {"metric": "pope", "score": overall["f1"], **overall, "categories": categories}


# ----------------------------------------------------------------- mean per category
def mean_scores(metric: str, samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict | None:
    scores: dict[str | None, list[float]] = {}
    every = []
    for sample in samples:
        score = score_prediction(metric, predictions[sample.sample_id], sample.answers, sample.choices,
                                 sample.answer_index)
        if score is None:
            continue
        every.append(score)
        scores.setdefault(sample.category, []).append(score)
    if not every:
        return None
    categories = {c: {"score": sum(v) / len(v), "questions": len(v)}
                  for c, v in sorted(scores.items(), key=lambda kv: str(kv[0])) if c}
    return {"metric": metric, "score": sum(every) / len(every), "questions": len(every), "categories": categories}
