#!/usr/bin/env bash
# One call of about 5 minutes on a GPU machine of the device tool (nvidia-h100-x1 or nvidia-h200):
#   1. installs the wheels carried in .whl/ (our transformers version, ctranslate2): that machine has no network;
#   2. sanity: the model and generation tests (they run on its CPU; they check the install, not CUDA);
#   3. the side-by-side benchmark on CUDA with bf16 autocast for tiny, small and base (2000-token batches);
#   4. base training alone at the paper's batch of about 25000 target tokens (§5.1), for tokens/s and MFU.
# Everything lands in $OUT (8 files at most come back).
#
# Here, once:   scripts/fetch_gpu_wheels.sh
# Then:         device run  command="bash scripts/gpu_check.sh"  carry=[".whl"]  timeout_s=540
#
# MFU = achieved FLOP/s / dense bf16 peak of the datasheet (989.4 TFLOP/s for H100 SXM and H200; a plain
# 8192^3 bf16 matmul reaches about 790-800 there, see the device notes). FLOPs are counted analytically per
# padded batch: 2 x d_in x d_out per token per projection, 4 x d_model per query-key pair for attention (causal
# not halved), times 3 for forward + backward (`training_flops` in benchmarks/benchmark.py, checked against
# torch.utils.flop_counter in tests/test_benchmark.py).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed: run scripts/fetch_gpu_wheels.sh here and carry .whl"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c "import torch, transformers, ctranslate2 as c; print('torch', torch.__version__, torch.version.cuda, \
torch.cuda.get_device_name(), '| transformers', transformers.__version__, '| ctranslate2', c.__version__, \
'CUDA devices:', c.get_cuda_device_count())"
} 2>&1 | tee "$OUT/env.txt"

timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_modeling.py tests/test_generation.py 2>&1 \
    | tail -n 30 | tee "$OUT/pytest.txt"

timeout 260 python3 benchmarks/benchmark.py --device cuda --bf16 --presets tiny small base \
    --train_reps 20 --sentences 128 --latency_sentences 4 \
    --output_json "$OUT/gpu_benchmark.json" --output_md "$OUT/gpu_benchmark.md" 2>&1 | tee "$OUT/benchmark.log"

timeout 90 python3 benchmarks/benchmark.py --device cuda --bf16 --presets base --token_budget 25000 \
    --train_reps 20 --skip_inference \
    --output_json "$OUT/base_25k.json" --output_md "$OUT/base_25k.md" 2>&1 | tee -a "$OUT/benchmark.log"

python3 - "$OUT" <<'EOF'
import json, sys
for name in ("gpu_benchmark", "base_25k"):
    try:
        report = json.load(open(f"{sys.argv[1]}/{name}.json"))
    except FileNotFoundError:
        print(name, "missing: see benchmark.log")
        continue
    for r in report["training"]:
        if r["size"] == "base":
            mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
            budget = report["settings"]["token_budget"]
            print(f"{name}: base {r['model']}: {r['tokens_per_s']:,.0f} target tokens/s at {budget} tokens/batch, "
                  f"{r['achieved_tflops']:.1f} TFLOP/s, MFU {mfu}, {r['memory_mib']:,.0f} MiB")
EOF
