#!/usr/bin/env bash
# Downloads into .whl/ the wheels that scripts/gpu_check.sh installs on the GPU machine, which has no network, and
# copies Multi30k into .data/ for its training runs (both folders git-ignored, carried by the device tool).
# That machine (Python 3.12, CUDA torch 2.11) already holds accelerate, tokenizers, safetensors, huggingface_hub,
# pyarrow, pandas, xxhash, fsspec, sacrebleu, pytest and hypothesis (checked on 2026-11-26 with an H200); it lacks
# our transformers version, datasets, evaluate (and their dill, multiprocess) and sacremoses. Their other needs are
# already there (`unzip -p .whl/NAME-*.whl '*/METADATA' | grep ^Requires-Dist`). ctranslate2 (43 MB) goes to
# .whl_ct2/: with Multi30k it would pass the 64 MiB that a call carries, so gpu_check.sh does without it.
# Run from anywhere: about 15 MB of wheels and 5 MB of data.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
for folder in /.whl/ /.whl_ct2/ /.data/; do
    grep -qxF "$folder" .git/info/exclude 2>/dev/null || echo "$folder" >> .git/info/exclude
done
download() {
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$@"
}
download .whl transformers==5.24.0 datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19 sacremoses==0.2.0
download .whl_ct2 ctranslate2==4.8.5
mkdir -p .data && cp -r "${MULTI30K_DIR:-../shared/data/multi30k}" .data/
du -sh .whl .whl_ct2 .data
