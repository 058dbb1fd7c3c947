"""Hand-written cases with known answers for every metric of `vlmspec.evaluation.metrics`."""

import pytest

from vlmspec.evaluation.metrics import (
    METRIC_NAMES,
    anls,
    choice_accuracy,
    exact_match,
    levenshtein,
    normalize_vqa_answer,
    parse_choice,
    relaxed_accuracy,
    rouge_l,
    score_prediction,
    vqa_accuracy,
)


# ------------------------------------------------------------------ VQA normalisation
@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("Two dogs.", "2 dogs"),            # number word -> digit, period stripped
        ("The cat", "cat"),                 # article dropped
        ("an apple", "apple"),
        ("dont", "don't"),                  # contraction restored
        ("Yes!", "yes"),
        ("3,000", "3000"),                  # comma between digits: punctuation removed
        ("man, walking", "man walking"),    # "p " present: removed, not spaced
        ("black-and-white", "black and white"),  # no space next to '-': replaced by space
        ("2.5", "2.5"),                     # decimal point kept
        ("  none \n", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),               # only zero..ten are mapped
    ],
)
def test_normalize_vqa_answer(raw, normalised):
    assert normalize_vqa_answer(raw) == normalised


@pytest.mark.parametrize(
    "n_matching, expected",
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_accuracy_leave_one_out(n_matching, expected):
    answers = ["2"] * n_matching + ["3"] * (10 - n_matching)
    assert vqa_accuracy("two", answers) == pytest.approx(expected)


def test_vqa_accuracy_normalises_both_sides():
    answers = ["Black and white"] * 4 + ["gray"] * 6
    assert vqa_accuracy("black-and-white.", answers) == pytest.approx(1.0)
    assert vqa_accuracy("Gray", answers) == pytest.approx(1.0)


def test_vqa_accuracy_single_answer_and_empty():
    assert vqa_accuracy("The dog", ["dog"]) == 1.0
    assert vqa_accuracy("cat", ["dog"]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])


# ---------------------------------------------------------------------------- ANLS
def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("same", "same") == 0


@pytest.mark.parametrize(
    "prediction, answers, expected",
    [
        ("hello", ["hello"], 1.0),
        ("Hello  World", ["hello world"], 1.0),   # case and whitespace insensitive
        ("hallo", ["hello"], 0.8),                # NL = 1/5
        ("abcx", ["abcd"], 0.75),                 # NL = 0.25
        ("abxy", ["abcd"], 0.0),                  # NL = 0.5: not below the threshold
        ("ac", ["ab"], 0.0),                      # NL = 0.5
        ("abcdefghij", ["abcdefgxyz"], 0.7),      # NL = 0.3
        ("xyz", ["abc"], 0.0),
        ("hallo", ["abc", "hello"], 0.8),         # best answer counts
        ("", [""], 1.0),
    ],
)
def test_anls(prediction, answers, expected):
    assert anls(prediction, answers) == pytest.approx(expected)


def test_anls_custom_threshold():
    assert anls("abxy", ["abcd"], threshold=0.6) == pytest.approx(0.5)


# --------------------------------------------------------------------- exact match
@pytest.mark.parametrize(
    "prediction, answers, expected",
    [
        ("Top left.", ["top left"], 1.0),
        ("  red ", ["red"], 1.0),
        ('"B"', ["B"], 1.0),
        ("reddish", ["red"], 0.0),
        ("left", ["top left"], 0.0),
        ("blue", ["red", "Blue"], 1.0),
    ],
)
def test_exact_match(prediction, answers, expected):
    assert exact_match(prediction, answers) == expected


# ---------------------------------------------------------------- relaxed accuracy
@pytest.mark.parametrize(
    "prediction, answers, expected",
    [
        ("10.4", ["10"], 1.0),      # 4 % off
        ("10.5", ["10"], 1.0),      # exactly 5 % off
        ("10.6", ["10"], 0.0),      # 6 % off
        ("9.5", ["10"], 1.0),
        ("5%", ["0.05"], 1.0),      # percent sign divides by 100
        ("1,000", ["1020"], 1.0),   # thousands separator
        ("0", ["0"], 1.0),          # zero target: string equality
        ("0.0", ["0"], 0.0),
        ("Yes", ["yes"], 1.0),      # non-numeric: case-insensitive exact
        ("no", ["yes"], 0.0),
        ("ten", ["10"], 0.0),
        ("20", ["5", "19.5"], 1.0),
    ],
)
def test_relaxed_accuracy(prediction, answers, expected):
    assert relaxed_accuracy(prediction, answers) == expected


# ----------------------------------------------------------------- choice accuracy
CHOICES = ["cat", "dog", "fish"]


@pytest.mark.parametrize(
    "prediction, picked",
    [
        ("B", 1),
        ("(B)", 1),
        ("B.", 1),
        ("The answer is B.", 1),
        ("answer is C", 2),
        ("B. dog", 1),
        ("(C) fish", 2),
        ("dog", 1),
        ("Dog.", 1),
        ("A dog.", 1),          # leading article is not the letter A
        ("It is a dog", 1),
        ("cat or dog", None),   # ambiguous
        ("D", None),            # out of range
        ("bird", None),
    ],
)
def test_parse_choice(prediction, picked):
    assert parse_choice(prediction, CHOICES) == picked


def test_choice_accuracy():
    assert choice_accuracy("B", CHOICES, 1) == 1.0
    assert choice_accuracy("fish", CHOICES, 1) == 0.0
    with pytest.raises(ValueError):
        choice_accuracy("A", CHOICES, 3)


# ------------------------------------------------------------------------- ROUGE-L
def test_rouge_l():
    assert rouge_l("a red circle", ["a red circle"]) == pytest.approx(1.0)
    # LCS("the red circle", "a red big circle") = 2 -> P = 2/3, R = 2/4
    assert rouge_l("the red circle", ["a red big circle"]) == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert rouge_l("", ["x"]) == 0.0
    assert rouge_l("blue", ["red", "blue"]) == pytest.approx(1.0)


# ------------------------------------------------------------------------ dispatch
def test_score_prediction_dispatch():
    assert score_prediction("vqa", "two", ["2"] * 10) == pytest.approx(1.0)
    assert score_prediction("anls", "hallo", ["hello"]) == pytest.approx(0.8)
    assert score_prediction("exact", "Red.", ["red"]) == 1.0
    assert score_prediction("relaxed", "10.4", ["10"]) == 1.0
    assert score_prediction("choice", "B", choices=CHOICES, answer_index=1) == 1.0
    assert score_prediction("rouge_l", "x y", ["x y"]) == pytest.approx(1.0)
    assert score_prediction("none", "anything", ["x"]) is None
    assert score_prediction("exact", "x", []) is None          # no reference: not scored
    assert set(METRIC_NAMES) >= {"vqa", "anls", "exact", "relaxed", "choice", "none"}
    with pytest.raises(ValueError, match="unknown metric"):
        score_prediction("bleu", "x", ["x"])
