"""Shared fixtures: a tiny model (in the spirit of Marian's tester config) so every test runs on CPU in seconds."""

import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from hf_vanilla_transformer import (  # noqa: E402
    VanillaTransformerConfig,
    VanillaTransformerForConditionalGeneration,
)

REPO = Path(__file__).resolve().parents[1]


def script(name: str):
    """Imports scripts/NAME.py (not a package) so that its main(argv) runs in this process."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The shared Multi30k copy beside the checkout (MULTI30K_DIR overrides); tests that read it skip without it.
MULTI30K = Path(os.environ.get("MULTI30K_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"))
needs_multi30k = pytest.mark.skipif(
    not MULTI30K.is_dir(), reason=f"Multi30k not found at {MULTI30K} (set MULTI30K_DIR)"
)


def gz_lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[:-1]


TINY = {
    "vocab_size": 99,
    "d_model": 16,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
}


@pytest.fixture
def tiny_config() -> VanillaTransformerConfig:
    return VanillaTransformerConfig(**TINY)


def make_tiny_model(**overrides) -> VanillaTransformerForConditionalGeneration:
    torch.manual_seed(0)
    return VanillaTransformerForConditionalGeneration(VanillaTransformerConfig(**{**TINY, **overrides})).eval()


def randomize_attention_biases(model: torch.nn.Module, std: float) -> None:
    """N(0, std) attention biases (initialised to zero), so that a bias dropped or misplaced changes the outputs."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("_proj.bias"):
                parameter.normal_(std=std)


@pytest.fixture
def tiny_model() -> VanillaTransformerForConditionalGeneration:
    return make_tiny_model()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """Two source sentences (the second padded) and their labels (the second padded with -100)."""
    input_ids = torch.tensor([[5, 6, 7, 8, 9, 2], [10, 11, 12, 2, 0, 0]])
    labels = torch.tensor([[13, 14, 15, 16, 2], [17, 18, 2, -100, -100]])
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(), "labels": labels}


# Prepended to scripts that must run where our package cannot be imported: only a model folder's files serve.
_BLOCK_PACKAGE = """
import importlib.abc, sys

class BlockPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hf_vanilla_transformer":
            raise ModuleNotFoundError(f"blocked: {name}")

sys.meta_path.insert(0, BlockPackage())
try:
    import hf_vanilla_transformer  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("hf_vanilla_transformer is importable: the remote-code test would prove nothing")
"""


def run_without_package(script: str, args: list[str], tmp_path) -> dict:
    """Runs `script` in a fresh interpreter, elsewhere, offline, unable to import hf_vanilla_transformer.

    The script prints one JSON line last; it is returned parsed.
    """
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_PACKAGE + script, *args],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
