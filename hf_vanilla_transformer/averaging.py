"""Checkpoint averaging of §6.1: "a single model obtained by averaging the last 5 checkpoints" (20 for big).

Like fairseq's `scripts/average_checkpoints.py`, but over the Trainer's `checkpoint-STEP/model.safetensors`
folders, reading and writing safetensors only (never pickle). transformers has no averaging of its own.
`save_pretrained` stores tied weights once (`model.shared.weight`; the encoder/decoder embeddings and `lm_head`
are re-tied on load), so averaging the stored tensors keeps the tie.
"""

import os
import re
import shutil
import uuid
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

_CHECKPOINT_NAME = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")
# Not copied from the last checkpoint: the weights (rewritten), the Trainer's state (optimizer.pt, scheduler.pt,
# scaler.pt, rng_state*.pth, training_args.bin, trainer_state.json) and any other pickle.
_NOT_COPIED = ("*.safetensors", SAFE_WEIGHTS_INDEX_NAME, "*.bin", "*.pt", "*.pth", "trainer_state.json")


def last_checkpoints(run_dir: str | os.PathLike, n: int, allow_fewer: bool = False) -> list[Path]:
    """The last `n` `checkpoint-STEP` folders of a Trainer run, oldest first (STEP compared as a number).

    Fewer than `n` is an error unless `allow_fewer` (then all there are: a run stopped early by its time budget).
    """
    run_dir = Path(run_dir)
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir {run_dir} is not a directory")
    found = sorted(
        (int(match.group(1)), path)
        for path in run_dir.iterdir()
        if path.is_dir() and (match := _CHECKPOINT_NAME.fullmatch(path.name))
    )
    if not found:
        raise FileNotFoundError(f"no {PREFIX_CHECKPOINT_DIR}-STEP folders in {run_dir}")
    if len(found) < n and not allow_fewer:
        names = ", ".join(path.name for _, path in found)
        raise ValueError(f"asked for the last {n} checkpoints but {run_dir} has only {len(found)}: {names}")
    return [path for _, path in found[-n:]]


def _weights_file(checkpoint_dir: Path) -> Path:
    path = checkpoint_dir / SAFE_WEIGHTS_NAME
    if path.is_file():
        return path
    if (checkpoint_dir / SAFE_WEIGHTS_INDEX_NAME).is_file():
        # save_pretrained shards only above 50GB by default, far above the paper's 213M parameters
        raise ValueError(f"{checkpoint_dir} holds a sharded checkpoint; averaging expects one {SAFE_WEIGHTS_NAME}")
    raise FileNotFoundError(f"{path} not found: checkpoints must be saved as safetensors")


def _check_same_tensors(checkpoint_dir: Path, state: dict, reference: dict, reference_dir: Path) -> None:
    missing, unexpected = sorted(reference.keys() - state.keys()), sorted(state.keys() - reference.keys())
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint_dir} has other keys than {reference_dir}: missing {missing}, unexpected {unexpected}"
        )
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in reference.items() if state[k].shape != v.shape
    ]
    if shapes:
        raise ValueError(f"{checkpoint_dir} has other shapes than {reference_dir}: {', '.join(shapes)}")


def _replace_dir(new: Path, target: Path) -> None:
    """Move `new` to `target`; an existing `target` is removed only once `new` is in its place."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old)


def average_checkpoints(checkpoint_dirs: Sequence[str | os.PathLike], output_dir: str | os.PathLike) -> Path:
    """§6.1: θ_avg = (1/n) Σ_i θ_i over the checkpoints' stored tensors, written as a loadable model folder.

    Floating tensors are summed in float32 and cast back to the first checkpoint's dtype; other tensors must be
    equal in all checkpoints. All checkpoints must hold the same keys and shapes. The safetensors metadata is
    the first checkpoint's; config, generation config, remote-code and tokenizer files are copied from the
    last. The folder is built in a hidden sibling and moved into place at the end: a failure leaves an
    existing `output_dir` as it was (a hard kill during the final two renames leaves it as `.NAME.old-*`).
    """
    dirs = [Path(d) for d in checkpoint_dirs]
    output_dir = Path(output_dir)
    if not dirs:
        raise ValueError("checkpoint_dirs is empty")
    for d in dirs:
        if d.resolve().is_relative_to(output_dir.resolve()):  # replacing output_dir would delete it
            raise ValueError(f"output_dir {output_dir} is or contains the checkpoint {d}")
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output_dir {output_dir} exists and is not a directory")
    weights = [_weights_file(d) for d in dirs]  # fail on a missing file before reading gigabytes

    reference = load_file(weights[0])
    with safe_open(weights[0], framework="pt") as f:
        metadata = {"format": "pt", **(f.metadata() or {})}
    total = {k: v.to(torch.float32, copy=True) if v.is_floating_point() else v for k, v in reference.items()}
    for checkpoint_dir, path in zip(dirs[1:], weights[1:], strict=True):
        state = load_file(path)
        _check_same_tensors(checkpoint_dir, state, reference, dirs[0])
        for key, tensor in state.items():
            if reference[key].is_floating_point():
                total[key] += tensor.float()
            elif not torch.equal(tensor, reference[key]):
                raise ValueError(f"{checkpoint_dir}: non-floating tensor {key} differs from {dirs[0]}")
    averaged = {
        k: (v / len(dirs)).to(reference[k].dtype) if reference[k].is_floating_point() else v for k, v in total.items()
    }

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f".{output_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        save_file(averaged, staging / SAFE_WEIGHTS_NAME, metadata=metadata)
        for path in sorted(dirs[-1].iterdir()):
            if path.is_file() and not any(fnmatch(path.name, pattern) for pattern in _NOT_COPIED):
                shutil.copy2(path, staging / path.name)
        _replace_dir(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir
