"""Consensus math: which experts' answers the other experts agree with most.

Pure functions on the NLL matrix from the scoring stage; no models involved.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..errors import InputError


def consensus_scores(nll: Any) -> list[float]:
    """Consensus score of every answer from a square NLL matrix (lower = more agreed on).

    nll[j][i] = mean NLL (= log PPL) of answer i under expert j; row j is scorer j, column i
    answer i, and the diagonal is each expert's own answer. Shape [n_experts, n_experts].
        score(i) = sum_{j != i} |nll[j][i] - nll[j][j]|
    NaN marks an answer that could not be scored (an empty answer): a scorer whose own
    answer is NaN abstains (adds nothing to anyone), and an answer that is NaN for itself
    or for a non-abstaining scorer scores +inf (ranked last).
    """
    matrix = torch.as_tensor(nll, dtype=torch.float64)  # [n_scorers, n_answers]
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise InputError(
            f"The NLL matrix must be square [n_experts, n_experts] (scorer j, answer i), got shape "
            f"{tuple(matrix.shape)}."
        )
    if torch.isinf(matrix).any():
        raise InputError("The NLL matrix contains infinite values; use NaN for answers that cannot be scored.")
    rows = matrix.tolist()
    own = [rows[j][j] for j in range(len(rows))]  # log PPL_j(y_j)
    scorers = [j for j, value in enumerate(own) if not math.isnan(value)]  # the others abstain
    scores: list[float] = []
    for i in range(len(rows)):
        if math.isnan(own[i]):
            scores.append(math.inf)
            continue
        distances = [abs(rows[j][i] - own[j]) for j in scorers if j != i]
        scores.append(math.inf if any(math.isnan(d) for d in distances) else sum(distances, 0.0))
    return scores


def select_consensus(scores: Sequence[float], m: int) -> list[int]:
    """Indices of the m lowest consensus scores, best first; ties go to the lower index."""
    scores = [float(s) for s in scores]
    if any(math.isnan(s) for s in scores):
        raise InputError("Consensus scores contain NaN; compute them with consensus_scores().")
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= len(scores):
        raise InputError(f"m must be between 1 and the number of answers ({len(scores)}), got {m!r}.")
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))[:m]
