"""The text going in and out of the models: the prompts of each stage, and the answer read
back from a generation (the last `\\boxed{...}`, else the last line)."""

from __future__ import annotations

import re
from typing import Sequence

# Stage 2 teacher-forces each answer after this user turn (with the image).
SCORING_PROMPT = "Question: {question}\nAnswer:"

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_PREFIX = re.compile(r"^\s*(?:the\s+)?(?:final\s+)?answer\s*(?:is)?\s*[:\-]?\s*", re.IGNORECASE)
_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|mathrm)\{(.*)\}$", re.DOTALL)


def instructed_prompt(question: str, instruction: str) -> str:
    """The question followed by an instruction on its own line (stages 1 and 3)."""
    return f"{question}\n{instruction}" if instruction else question


def verdict_prompt(question: str, instruction: str, reasoning: Sequence[str], answers: Sequence[str]) -> str:
    """Stage 4: the question, the instruction and every reasoning path with its answer."""
    parts = [f"Question: {question}", instruction]
    for number, (path, answer) in enumerate(zip(reasoning, answers), start=1):
        parts.append(f"Reasoning path {number}:\n{path.strip()}\nAnswer {number}: {answer}")
    parts.append("Final answer in the form \\boxed{answer}:")
    return "\n\n".join(part for part in parts if part)


def extract_boxed(text: str) -> tuple[str, bool]:
    """The content of the last complete, non-empty `\\boxed{...}` (nested braces allowed).

    Returns (answer, True) when found; otherwise (fallback_answer(text), False).
    """
    candidates: list[str] = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for pos in range(start, len(text)):
            if text[pos] == "{":
                depth += 1
            elif text[pos] == "}":
                depth -= 1
                if depth == 0:
                    candidates.append(text[start:pos])
                    break
    for content in reversed(candidates):
        content = content.strip()
        wrapped = _TEXT_WRAPPER.match(content)
        if wrapped:
            content = wrapped.group(1).strip()
        if content:
            return content, True
    return fallback_answer(text), False


def fallback_answer(text: str) -> str:
    """A short answer from unboxed text: its last non-empty line, without an 'Answer:' prefix."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = _BOXED.sub("", lines[-1])  # an unclosed \boxed{ cut off by the token limit
    line = _ANSWER_PREFIX.sub("", line).strip()
    return line.rstrip(".").strip() or lines[-1]
