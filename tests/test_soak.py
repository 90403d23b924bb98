"""Issue 5, load: scripts/translate.py on a few thousand Multi30k sentences, twice, with stable memory and the same
output. Slow (about a minute): run it on purpose with `pytest -m slow tests/test_soak.py -s` to see the figures."""

import gzip
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import MULTI30K, REPO

from hf_vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from hf_vanilla_transformer.tokenization import train_bpe_tokenizer

SOURCE = MULTI30K / "train.en.gz"
SENTENCES = 2000
BATCH_SIZE = 64
MAX_RSS_GROWTH_MIB = 32  # from the first translated batch to the last, where a leak would pile up

# Runs scripts/translate.py as `python scripts/translate.py ARGS` would, recording the resident set size (VmRSS
# of /proc/self/status, in KiB) of this process before the script starts and after every generate() call (batch).
MEASURED_RUN = """
import json, runpy, sys
from pathlib import Path

from hf_vanilla_transformer.modeling_vanilla_transformer import VanillaTransformerForConditionalGeneration as Model


def status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])


report, script, args = sys.argv[1], sys.argv[2], sys.argv[3:]
samples, generate = [], Model.generate


def measured_generate(self, *a, **k):
    output = generate(self, *a, **k)
    samples.append(status_kib("VmRSS"))
    return output


Model.generate = measured_generate
before = status_kib("VmRSS")
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
Path(report).write_text(json.dumps({"before": before, "batches": samples, "peak": status_kib("VmHWM")}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not SOURCE.is_file(), reason=f"needs {SOURCE}")
def test_translate_script_soak_has_stable_memory_and_identical_outputs(tmp_path):
    lines = gzip.decompress(SOURCE.read_bytes()).decode().split("\n")[:SENTENCES]
    (tmp_path / "src.en").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    # Random weights: the translations are nonsense of full length (source + 50 tokens), but deterministic.
    tokenizer = train_bpe_tokenizer(lines, 500)
    config = VanillaTransformerConfig.from_preset(
        "tiny", vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, encoder_attention_heads=4, decoder_attention_heads=4,
    )  # fmt: skip
    torch.manual_seed(0)
    VanillaTransformerForConditionalGeneration(config).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    reports, outputs = [], []
    for run in (1, 2):
        args = ["--model_name_or_path", str(tmp_path / "model"), "--input", str(tmp_path / "src.en")]
        args += ["--output", str(tmp_path / f"hyp{run}.de"), "--batch_size", str(BATCH_SIZE)]
        report = tmp_path / f"rss{run}.json"
        command = [sys.executable, "-c", MEASURED_RUN, str(report), str(REPO / "scripts" / "translate.py"), *args]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        reports.append(json.loads(report.read_text()))
        outputs.append((tmp_path / f"hyp{run}.de").read_bytes())

    assert outputs[0] == outputs[1]
    assert len(outputs[0].decode().split("\n")) == SENTENCES + 1  # one line each, and the final line end
    for run, rss in enumerate(reports, 1):
        assert len(rss["batches"]) == -(-SENTENCES // BATCH_SIZE)
        growth_mib = (rss["batches"][-1] - rss["batches"][0]) / 1024
        print(
            f"run {run}: VmRSS {rss['before'] / 1024:.0f} MiB before the script, {rss['batches'][0] / 1024:.0f} MiB "
            f"after batch 1, {rss['batches'][-1] / 1024:.0f} MiB after batch {len(rss['batches'])} "
            f"({growth_mib:+.1f} MiB), peak {rss['peak'] / 1024:.0f} MiB"
        )
        assert growth_mib < MAX_RSS_GROWTH_MIB
