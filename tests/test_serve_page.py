"""The live page of `vlmspec serve` in headless Chromium: upload an image, type a prompt, press
Generate; the finished answer is the target's own greedy text, its tokens marked by how they
arrived (drafted and accepted vs the target's own). Skipped where Chromium or playwright is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vlmspec import Target
from vlmspec.api import Pipeline
from vlmspec.drafters.registry import build_drafter

from conftest import random_image, start_serve_process

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from page_screenshot import chromium_path, finished_answer  # noqa: E402

pytest.importorskip("playwright.sync_api", reason="the page test needs `pip install playwright`")
if chromium_path() is None:
    pytest.skip("the page test needs Chromium (Debian: apt-get install chromium)", allow_module_level=True)


def test_page_streams_a_marked_answer_equal_to_generate(tiny_llava_path, tmp_path):
    image = random_image(11)
    image.save(tmp_path / "upload.png")
    proc, base = start_serve_process(tiny_llava_path, "--drafter", f"model:{tiny_llava_path}")
    try:
        shown = finished_answer(base, str(tmp_path / "upload.png"), "Describe this.", tmp_path / "page.png",
                                max_tokens=24)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    target = Target.load(tiny_llava_path)
    alone = Pipeline(target, build_drafter(f"model:{tiny_llava_path}", target)).generate(
        image, "Describe this.", max_new_tokens=24)
    assert shown["errors"] == 0
    assert shown["text"] == alone.text
    assert f"{alone.metrics.new_tokens} tokens" in shown["stats"]  # tokens with no text get no span
    assert shown["draft_tokens"] + shown["target_tokens"] <= alone.metrics.new_tokens
    assert shown["draft_tokens"] > 0 and shown["target_tokens"] > 0  # the drafter is the target itself
    assert "finished" in shown["stats"] and "lossless" in shown["stats"]
    assert (tmp_path / "page.png").stat().st_size > 1000
