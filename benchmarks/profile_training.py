"""Where a training step's time goes: the CPU queueing work (Python, dispatch, kernel launches) or the device.

    python benchmarks/profile_training.py --preset base --token_budget 25000 --device cuda --bf16 \
        --length_corpus ../shared/data/multi30k en de --output_md profile.md
    python benchmarks/profile_training.py ... --sdpa_backend math     # the same step with one attention kernel

The step is benchmark.py's (forward + backward + Adam step), on batches cut as our trainer cuts them. Two timings
tell a launch-bound step from a device-bound one: the time `train_step` takes to return (the CPU has queued the
step's kernels) and the step's wall time up to the device's last kernel. When the two are equal the device waits
for the CPU, unless the step itself waits for the device (a `.item()`, indexing by a boolean mask): then the
device time per step of torch.profiler tells, which also lists the operators by the time they take themselves on
the device (on a CPU: the CPU).
`--sdpa_backend` makes every attention use one of torch's scaled-dot-product kernels, for comparing them: on an
H200 cuDNN's, torch's choice, took 30-34% of the base step at Multi30k's sentence lengths, and the memory-efficient
ones, which our model now tries first in CUDA training, about half that (benchmarks/RESULTS.md).
"""

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark  # noqa: E402

SDPA_BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "math": SDPBackend.MATH,
}


def timings_ms(model, optimizer, batches: list, settings: benchmark.Settings, reps: int) -> dict[str, float]:
    """Medians over `reps` steps of the time to queue a step and of its wall time, and the total wall time (ms)."""
    queued, wall = [], []
    for rep in range(reps):
        benchmark.synchronize(settings.device)
        start = time.perf_counter()
        benchmark.train_step(model, optimizer, batches[rep % len(batches)], settings)
        queued.append(time.perf_counter() - start)
        benchmark.synchronize(settings.device)
        wall.append(time.perf_counter() - start)
    return {
        "queued_ms": 1000 * statistics.median(queued),
        "wall_ms": 1000 * statistics.median(wall),
        "total_ms": 1000 * sum(wall),
    }


def operator_table(model, optimizer, batches: list, settings: benchmark.Settings, steps: int, rows: int) -> str:
    """torch.profiler's operators over `steps` steps, by their own device time (CPU time on a CPU), and totals."""
    on_gpu = settings.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as profiler:
        for step in range(steps):
            benchmark.train_step(model, optimizer, batches[step % len(batches)], settings)
        benchmark.synchronize(settings.device)
    events = profiler.key_averages()
    own = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    # On a GPU an operator's own device time is that of its kernels, listed too: sum the kernels alone, as
    # torch's table does for its total (an earlier sum over both counted every kernel twice).
    counted = [e for e in events if not on_gpu or (e.device_type == DeviceType.CUDA and not e.is_user_annotation)]
    busy_ms = sum(getattr(event, own) for event in counted) / 1000 / steps
    launches = sum(event.count for event in events if "LaunchKernel" in event.key) / steps
    summary = f"Per step: {busy_ms:.1f} ms of {'device' if on_gpu else 'CPU'} operator time"
    summary += f", {launches:.0f} kernel launches." if on_gpu else "."
    return summary + "\n\n```\n" + events.table(sort_by=own, row_limit=rows) + "\n```\n"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", help="size (a preset, or NAME:D_MODEL:LAYERS:HEADS:FFN)")
    parser.add_argument("--model", choices=benchmark.MODELS, default="ours")
    parser.add_argument("--vocab_size", type=int, default=10000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--token_budget", type=int, default=25000, help="target tokens per batch (§5.1: 25000)")
    parser.add_argument("--length_corpus", nargs=3, metavar=("CORPUS", "SOURCE_LANG", "TARGET_LANG"), default=None)
    parser.add_argument("--reps", type=int, default=20, help="timed steps")
    parser.add_argument("--profiled_steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=30, help="operators listed")
    parser.add_argument(
        "--sdpa_backend", choices=SDPA_BACKENDS, default=None, help="attention kernel (default: the model's choice)"
    )
    parser.add_argument("--output_md", type=Path, default=None)
    args = parser.parse_args(argv)
    for name in ("reps", "profiled_steps", "rows", "token_budget"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}.")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device.")
    size, config = benchmark.parse_size(args.preset, args.vocab_size)
    settings = benchmark.Settings(
        sizes={size: config},
        device=args.device,
        bf16=args.bf16,
        token_budget=args.token_budget,
        length_corpus=tuple(args.length_corpus) if args.length_corpus else None,
    )
    batches = benchmark.training_batches(settings, args.vocab_size)
    model = benchmark.build_model(args.model, config).to(args.device).train()
    optimizer = benchmark.adam(model)
    backend = sdpa_kernel(SDPA_BACKENDS[args.sdpa_backend]) if args.sdpa_backend else contextlib.nullcontext()
    with backend:
        for batch in batches:  # every batch shape once: allocator growth and kernel choices
            benchmark.train_step(model, optimizer, batch, settings)
        times = timings_ms(model, optimizer, batches, settings, args.reps)
        table = operator_table(model, optimizer, batches, settings, args.profiled_steps, args.rows)
    # the model's FLOPs in the timed steps (benchmark.training_flops: real tokens only) over their wall time
    flops = [benchmark.training_flops(config, b.attention_mask, b.labels) for b in batches]
    tflops = sum(flops[rep % len(batches)] for rep in range(args.reps)) / times["total_ms"] / 1e9
    peak = benchmark.peak_tflops(settings)
    report = (
        f"# One training step of {args.model} ({size}) on {args.device}"
        f"{', bf16 autocast' if args.bf16 else ''}, {args.token_budget} target tokens per batch, "
        f"attention: {args.sdpa_backend or 'the model’s choice'}\n\n"
        f"Medians of {args.reps} steps: {times['queued_ms']:.1f} ms to queue a step, {times['wall_ms']:.1f} ms "
        f"until its last kernel has run; {tflops:.1f} TFLOP/s over all"
        + (f", MFU {100 * tflops / peak:.1f}%" if peak else "")
        + ".\n\n"
        + table
    )
    if args.output_md:
        args.output_md.write_text(report)
    print(report)
    return report


if __name__ == "__main__":
    main()
