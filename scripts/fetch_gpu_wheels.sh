#!/usr/bin/env bash
# Downloads into .whl/ the wheels that scripts/gpu_check.sh installs on the GPU machine, which has no network.
# That machine (Python 3.12, CUDA torch) already holds accelerate, tokenizers, safetensors, huggingface_hub,
# pytest and hypothesis; it lacks our transformers version and ctranslate2. Their other needs are already there
# (checked with `unzip -p .whl/NAME-*.whl '*/METADATA' | grep ^Requires-Dist`).
# Run from anywhere; the wheels (about 60 MB) go to the repository's git-ignored .whl/.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl transformers==5.24.0 ctranslate2==4.8.5
ls -l .whl
du -sh .whl
