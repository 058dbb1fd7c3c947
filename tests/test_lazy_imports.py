"""The command line's parser and `import vlmspec` load no torch / transformers; every export resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

import vlmspec


def test_help_and_version_import_no_torch():
    code = (
        "import sys, vlmspec.cli as cli\n"
        "cli.build_parser()\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'accelerate', 'datasets') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    version = subprocess.run([sys.executable, "-m", "vlmspec", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("vlmspec ")


@pytest.mark.parametrize("package", ["vlmspec", "vlmspec.evaluation", "vlmspec.training", "vlmspec.verdict"])
def test_every_export_resolves(package):
    __import__(package)
    module = sys.modules[package]
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr(module, "nope")


def test_verdict_stays_the_function_after_its_subpackage_is_imported():
    import vlmspec.verdict.config  # noqa: F401  (records the subpackage on the parent)

    assert callable(vlmspec.verdict) and vlmspec.verdict.__name__ == "verdict"


def test_loading_prints_no_transformers_bars(tiny_llava_path, capfd):
    from transformers.utils import logging as hf_logging

    from vlmspec import ModelDrafter, Target

    Target.load(tiny_llava_path)
    ModelDrafter.from_pretrained(tiny_llava_path)
    err = capfd.readouterr().err
    assert "Loading weights" not in err, err
    assert hf_logging.is_progress_bar_enabled()  # restored for the user's own transformers calls


def test_quiet_transformers_silences_the_gguf_bar_and_restores_it(capfd):
    from transformers import modeling_gguf_pytorch_utils as gguf_module

    from vlmspec.quiet import quiet_transformers

    original = gguf_module.tqdm
    with quiet_transformers():
        for _ in gguf_module.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            pass
    assert "de-quantizing" not in capfd.readouterr().err
    assert gguf_module.tqdm is original
