"""Answer-quality metrics of the eval harness: one function per metric, pure Python, no model.

* ``vqa_accuracy``      VQAv2 / TextVQA accuracy: the official answer normalisation
  (punctuation, articles, number words -> digits, contractions), then
  ``min(1, matches / 3)`` averaged over the leave-one-out subsets of the ground truths;
* ``anls``              Average Normalised Levenshtein Similarity (DocVQA / InfographicVQA),
  threshold 0.5;
* ``exact_match``       lower-cased, whitespace-collapsed, trailing-punctuation-stripped
  equality with any reference (GQA, the synthetic short questions);
* ``relaxed_accuracy``  ChartQA: numbers within 5% relative error of the target, exact
  (case-insensitive) match otherwise;
* ``choice_accuracy``   multiple choice (ScienceQA, MMBench): the option letter or the option text;
* ``yes_no_accuracy``   yes/no questions (MME, POPE): the answer read as yes or no
  (:func:`parse_yes_no`) against the reference;
* ``open_match``        MMMU open questions: normalised exact match, or equal numbers
  (rounded to 2 decimals), after an optional "the answer is";
* ``rouge_l``           ROUGE-L F-measure for long-form answers and captions (a quality
  signal for descriptions; the headline metric of the long-form sets is losslessness).

``score_prediction(metric, prediction, answers, choices, answer_index)`` dispatches on the
metric name; ``METRIC_NAMES`` lists the accepted names ("none" scores nothing). The metric
names ``mme`` and ``pope`` score each answer with ``yes_no_accuracy`` and ``mmmu`` with
``choice_accuracy`` (options) or ``open_match`` (open questions); their set-level scores
(MME perception/cognition, POPE precision/recall/F1) are in :mod:`.aggregates`.
"""

from __future__ import annotations

import re
from typing import Sequence

METRIC_NAMES = ("vqa", "anls", "exact", "relaxed", "choice", "rouge_l", "mme", "pope", "mmmu", "none")

# ----------------------------------------------------------------- VQA normalisation
# Tables of the official VQA evaluation script (vqaEval.py), contractions keyed by the
# apostrophe-less spelling a model or an annotator may write.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "id've": "i'd've", "i'dve": "i'd've", "im": "i'm",
    "ive": "i've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebodyd": "somebody'd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the official pattern
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _process_punctuation(text: str) -> str:
    out = text
    for p in _PUNCTUATION:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def _process_digits_articles(text: str) -> str:
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_vqa_answer(text: str) -> str:
    """The official VQA answer normalisation ("Two dogs." -> "2 dogs", "dont" -> "don't")."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _process_digits_articles(_process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy: mean over the leave-one-out subsets of ``min(1, matches / 3)``.

    With the usual 10 human answers, an answer given by 4 or more annotators scores 1.0,
    by 3 annotators 0.9, by 2 annotators 0.6, by 1 annotator 0.3 (means over the ten
    9-answer subsets).
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    pred = normalize_vqa_answer(prediction)
    gts = [normalize_vqa_answer(a) for a in answers]
    if len(gts) == 1:
        return float(pred == gts[0])
    scores = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1:]
        scores.append(min(1.0, sum(g == pred for g in others) / 3.0))
    return sum(scores) / len(scores)


# ------------------------------------------------------------------------------ ANLS
def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _collapse(text: str) -> str:
    return " ".join(text.lower().split())


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """ANLS of one question: max over answers of ``1 - NL`` where ``NL < threshold``, else 0.

    ``NL`` is the Levenshtein distance divided by the longer string's length, on lower-cased,
    whitespace-collapsed strings (the DocVQA convention).
    """
    if not answers:
        raise ValueError("anls needs at least one ground-truth answer")
    pred = _collapse(prediction)
    best = 0.0
    for answer in answers:
        gt = _collapse(answer)
        longest = max(len(pred), len(gt))
        distance = levenshtein(pred, gt) / longest if longest else 0.0
        score = 1.0 - distance if distance < threshold else 0.0
        best = max(best, score)
    return best


# ----------------------------------------------------------------------- exact match
def normalize_text(text: str) -> str:
    """Lower case, collapse whitespace, strip surrounding quotes and trailing punctuation."""
    text = _collapse(text)
    return text.strip(" \"'`").rstrip(".!?;:,").strip()


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised answer, else 0.0."""
    if not answers:
        raise ValueError("exact_match needs at least one ground-truth answer")
    pred = normalize_text(prediction)
    return float(any(pred == normalize_text(a) for a in answers))


# -------------------------------------------------------------------- relaxed (5 %)
def _to_float(text: str) -> float | None:
    text = text.strip().rstrip(".").replace(",", "")
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, answers: Sequence[str], tolerance: float = 0.05) -> float:
    """ChartQA relaxed accuracy: numeric answers within ``tolerance`` relative error count.

    When prediction and answer both parse as numbers and the answer is non-zero, the
    prediction is correct iff ``|pred - gt| / |gt| <= tolerance``; otherwise the strings
    must match case-insensitively. The best answer counts.
    """
    if not answers:
        raise ValueError("relaxed_accuracy needs at least one ground-truth answer")
    pred_text = prediction.strip()
    pred_num = _to_float(pred_text)
    for answer in answers:
        gt_num = _to_float(answer)
        if pred_num is not None and gt_num:  # gt 0 falls back to string equality
            if abs(pred_num - gt_num) / abs(gt_num) <= tolerance + 1e-12:
                return 1.0
        elif normalize_text(pred_text) == normalize_text(answer):
            return 1.0
    return 0.0


# --------------------------------------------------------------------- multi-choice
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTER_ONLY = re.compile(r"^\(?([A-Z])\)?[.:)]?$")                    # "B", "(B)", "B."
_LETTER_STATED = re.compile(r"\b(?i:answer|option|choice) (?i:is):?\s*\(?([A-Z])\b")  # "The answer is B"
_LETTER_LEADING = re.compile(r"^(?:\(([A-Z])\)|([A-Z])[.:)])\s")      # "(B) dog", "B. dog"


def parse_choice(prediction: str, choices: Sequence[str]) -> int | None:
    """The option a free-text prediction picks, or None.

    In order: the option text itself (after normalisation); a bare letter ("B", "(B)");
    "the answer is B"; a leading "B." / "(B)"; the only option whose text the prediction
    contains as whole words. A leading article ("A dog") is not read as a letter.
    """
    text = prediction.strip()
    pred = normalize_text(text)
    normalised = [normalize_text(c) for c in choices]
    if pred in normalised:
        return normalised.index(pred)
    for pattern in (_LETTER_ONLY, _LETTER_STATED, _LETTER_LEADING):
        match = pattern.search(text)
        if match:
            letter = next(g for g in match.groups() if g)
            index = OPTION_LETTERS.index(letter.upper())
            return index if index < len(choices) else None
    contained = [i for i, c in enumerate(normalised) if c and re.search(rf"\b{re.escape(c)}\b", pred)]
    return contained[0] if len(contained) == 1 else None


def choice_accuracy(prediction: str, choices: Sequence[str], answer_index: int) -> float:
    """1.0 if the prediction picks option ``answer_index`` (letter or option text)."""
    if not 0 <= answer_index < len(choices):
        raise ValueError(f"answer_index {answer_index} is outside the {len(choices)} choices")
    return float(parse_choice(prediction, choices) == answer_index)


# --------------------------------------------------------------------------- yes / no
_WORDS = re.compile(r"[a-z]+")


def parse_yes_no(prediction: str) -> str | None:
    """"yes" or "no" as the answer says it, or None.

    The first word when it is yes or no ("Yes.", "no, there is not"); otherwise the only one
    of the two words the answer contains ("There is one, so yes"); otherwise None (counted
    wrong, and as not-yes by POPE).
    """
    words = _WORDS.findall(prediction.lower())
    if words and words[0] in ("yes", "no"):
        return words[0]
    found = {w for w in words if w in ("yes", "no")}
    return found.pop() if len(found) == 1 else None


def yes_no_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the prediction reads as the reference's yes/no (the first reference counts)."""
    if not answers:
        raise ValueError("yes_no_accuracy needs a yes/no reference")
    truth = parse_yes_no(answers[0])
    if truth is None:
        raise ValueError(f"yes_no_accuracy: the reference {answers[0]!r} is not yes or no")
    return float(parse_yes_no(prediction) == truth)


# ------------------------------------------------------------------ open answers
_ANSWER_CUE = re.compile(r"(?i)\banswer(?:\s+is|:)\s*:?")


def _final_answer(text: str) -> str:
    """The text after the last "answer is" / "answer:" if any, else the text."""
    cues = list(_ANSWER_CUE.finditer(text))
    return text[cues[-1].end():].strip() if cues else text


def open_match(prediction: str, answers: Sequence[str]) -> float:
    """MMMU open questions: 1.0 if the (final) answer equals a reference after
    :func:`normalize_text`, or both read as numbers equal when rounded to 2 decimals."""
    if not answers:
        raise ValueError("open_match needs at least one reference answer")
    for candidate in dict.fromkeys((prediction, _final_answer(prediction))):
        pred, pred_num = normalize_text(candidate), _to_float(candidate)
        for answer in answers:
            if pred == normalize_text(answer):
                return 1.0
            gt_num = _to_float(answer)
            if pred_num is not None and gt_num is not None and round(pred_num, 2) == round(gt_num, 2):
                return 1.0
    return 0.0


# --------------------------------------------------------------------------- ROUGE-L
def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l(prediction: str, answers: Sequence[str]) -> float:
    """ROUGE-L F1 on lower-cased word tokens; best over the references."""
    if not answers:
        raise ValueError("rouge_l needs at least one reference")
    pred = _words(prediction)
    best = 0.0
    for answer in answers:
        ref = _words(answer)
        if not pred or not ref:
            continue
        lcs = [0] * (len(ref) + 1)
        for p in pred:
            prev_diag = 0
            for j, r in enumerate(ref, 1):
                prev_row = lcs[j]
                lcs[j] = prev_diag + 1 if p == r else max(lcs[j], lcs[j - 1])
                prev_diag = prev_row
        common = lcs[-1]
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


# -------------------------------------------------------------------------- dispatch
def score_prediction(
    metric: str,
    prediction: str,
    answers: Sequence[str] = (),
    choices: Sequence[str] = (),
    answer_index: int | None = None,
) -> float | None:
    """Score one prediction with the named metric; ``None`` when the metric is "none" or the
    sample carries no reference for it."""
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_NAMES)}")
    if metric == "none":
        return None
    if metric == "choice" or (metric == "mmmu" and choices):
        if answer_index is None or not choices:
            return None
        return choice_accuracy(prediction, choices, answer_index)
    if not answers:
        return None
    if metric == "mmmu":
        return open_match(prediction, answers)
    if metric in ("mme", "pope"):
        return yes_no_accuracy(prediction, answers)
    return {
        "vqa": vqa_accuracy, "anls": anls, "exact": exact_match,
        "relaxed": relaxed_accuracy, "rouge_l": rouge_l,
    }[metric](prediction, answers)
