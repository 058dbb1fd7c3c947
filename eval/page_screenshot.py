"""Drive `vlmspec serve`'s page in headless Chromium and save a screenshot of a finished answer.

Starts a server on 127.0.0.1 (the default model unless --target), opens `/`, uploads an
image, types the prompt, presses Generate, waits until the stats line says the answer
finished, checks that tokens of both marks are on the page, and saves a PNG.

Needs Chromium (Debian: `apt-get install chromium`, at /usr/bin/chromium) and the
`playwright` Python package (`pip install playwright`; its own browser download is not used).

    python eval/page_screenshot.py                       # -> eval/results/serve-page.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """The system Chromium, if any (Playwright's own downloaded browsers are never used)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def finished_answer(base_url: str, image: str, prompt: str, screenshot: str | os.PathLike | None,
                    max_tokens: int = 96, timeout_s: float = 120.0) -> dict:
    """Run the page once; returns the answer text, the count of tokens of each mark and the stats line."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no Chromium found: install it (Debian: apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(base_url + "/")
            page.set_input_files("#image", image)
            page.wait_for_selector("#preview", state="visible")
            page.fill("#prompt", prompt)
            page.fill("#max", str(max_tokens))
            page.fill("#temp", "0")
            page.click("#go")
            page.wait_for_function("document.getElementById('stats').textContent.includes('finished')",
                                   timeout=timeout_s * 1000)
            result = {
                "text": page.inner_text("#answer"),
                "draft_tokens": page.locator("#answer .tok-draft").count(),
                "target_tokens": page.locator("#answer .tok-target").count(),
                "stats": page.inner_text("#stats"),
                "errors": page.locator("#answer .err").count(),
            }
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                png = page.screenshot(full_page=True)
                from vlmspec.atomic import atomic_write_bytes

                atomic_write_bytes(screenshot, png)
            return result
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=None)
    parser.add_argument("--drafter", default="auto")
    parser.add_argument("--image", default="examples/scene.png")
    parser.add_argument("--prompt", default="Describe the image in detail.")
    parser.add_argument("--out", default="eval/results/serve-page.png")
    args = parser.parse_args(argv)

    from vlmspec.serving.launch import start_server

    command = ["--drafter", args.drafter, "--max-batch", "4"] + (["--target", args.target] if args.target else [])
    proc, base, _ = start_server(command, timeout_s=300.0)
    try:
        result = finished_answer(base, args.image, args.prompt, args.out)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    print(result)
    ok = result["errors"] == 0 and result["draft_tokens"] > 0 and result["target_tokens"] > 0
    print(f"screenshot: {args.out}" if ok else "the page did not show a finished answer with both marks")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
