"""Shared paths and fixtures of the attnviz Python tests.

The capture tests need torch + transformers (the dev venv of scripts/devvenv.sh); without them they
are skipped with that reason. Run: PYTHONPATH=attn-py/python $DEVVENV/bin/python -m pytest attn-py/tests
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG_DIR = ROOT / "attn-py" / "python" / "attnviz"
FIXTURES = ROOT / "attn-extract" / "tests" / "fixtures"
TEXT_FAMILIES = ["bert_tiny", "gpt2_tiny", "llama_tiny", "mistral_tiny", "qwen2_tiny", "qwen3_tiny"]


def _load_pure_modules():
    """attnviz.capture and attnviz.lens, importable before the native module is built.

    `import attnviz` runs the package's __init__, which loads the compiled extension; while that is not
    built (or not installed) the pure-Python modules are loaded from their files under a stand-in
    package name, so that their relative imports work and the tests of the Python-only part still run.
    """
    try:
        return importlib.import_module("attnviz.capture"), importlib.import_module("attnviz.lens")
    except ImportError:
        pass
    name = "_attnviz_pure"
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(PKG_DIR)]
        sys.modules[name] = pkg
    mods = []
    for sub in ("capture", "lens"):
        full = f"{name}.{sub}"
        if full not in sys.modules:
            spec = importlib.util.spec_from_file_location(full, PKG_DIR / f"{sub}.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[full] = mod
            spec.loader.exec_module(mod)
        mods.append(sys.modules[full])
    return tuple(mods)


capture_mod, lens_mod = _load_pure_modules()


@pytest.fixture(scope="session")
def cap():
    return capture_mod


@pytest.fixture(scope="session")
def lens():
    return lens_mod


@pytest.fixture(scope="session")
def torch():
    t = pytest.importorskip("torch", reason="torch is not installed (pip install torch transformers)")
    pytest.importorskip("transformers", reason="transformers is not installed (pip install transformers)")
    t.set_num_threads(min(2, t.get_num_threads()))
    return t


def fixture_inputs(family: str) -> dict:
    return json.loads((FIXTURES / family / "inputs.json").read_text())


def expected(family: str) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(FIXTURES / family / "expected.safetensors"))


_MODELS: dict = {}


def load_fixture(family: str):
    """(model, tokenizer) of a fixture checkpoint, loaded in f32 with the class make_fixtures.py used."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BertForMaskedLM, GPT2LMHeadModel

    if family not in _MODELS:
        path = FIXTURES / family
        cls = {"bert_tiny": BertForMaskedLM, "gpt2_tiny": GPT2LMHeadModel}.get(family, AutoModelForCausalLM)
        model = cls.from_pretrained(path, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path)
        _MODELS[family] = (model, tok)
    return _MODELS[family]


def pytest_configure(config):
    # Skips are reported with their reasons (e.g. the native module not built yet): never silent.
    chars = getattr(config.option, "reportchars", "") or ""
    if "s" not in chars and "a" not in chars and "A" not in chars:
        config.option.reportchars = chars + "s"
