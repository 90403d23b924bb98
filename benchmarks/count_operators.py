"""How many torch operators one training step dispatches, per model: on a GPU each is a kernel launch, and
launching bounds the step of models of these sizes (benchmarks/RESULTS.md). Counted on the CPU, exactly.

    python benchmarks/count_operators.py --preset base --bf16

The step is benchmark.py's (forward + backward + fused Adam step) on one batch of random sentences, taken once
untimed (Adam's state) and then counted. Views (`view`, `transpose`, ...) launch nothing and are not counted. Our
model runs as on a GPU: without skipping padding, which it does on a CPU only.
"""

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hf_vanilla_transformer.modeling_vanilla_transformer as modeling
from hf_vanilla_transformer import VanillaTransformerConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark  # noqa: E402

VIEWS = {
    "alias", "as_strided", "detach", "expand", "lift_fresh", "permute", "select", "slice", "split",
    "split_with_sizes", "squeeze", "t", "transpose", "unbind", "unflatten", "unsqueeze", "view", "_unsafe_view",
}  # fmt: skip


class OperatorCounter(TorchDispatchMode):
    """Counts the aten operators dispatched inside it, by name, views excluded."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def operator_counts(function: Callable, *args, **kwargs) -> Counter:
    """The operators `function(*args, **kwargs)` dispatches, by name."""
    with OperatorCounter() as counter:
        function(*args, **kwargs)
    return counter.counts


def step_counts(
    config: VanillaTransformerConfig, settings: benchmark.Settings, sentences: int = 16, seed: int = 0
) -> dict[str, Counter]:
    """The operators of one training step of each model of benchmark.py on the same batch."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(10, 20, (2, sentences), generator=generator).tolist()
    sources, targets = (
        [torch.randint(4, config.vocab_size, (n,), generator=generator).tolist() + [benchmark.EOS] for n in side]
        for side in lengths
    )
    batch = benchmark.TrainBatch.of(sources, targets)
    counts = {}
    with mock.patch.object(modeling, "_on_eager_cpu", lambda device: False):
        for name, model in benchmark.build_models(config, seed).items():
            optimizer = benchmark.adam(model.train())
            benchmark.train_step(model, optimizer, batch, settings)  # Adam's state, allocated once
            counts[name] = operator_counts(benchmark.train_step, model, optimizer, batch, settings)
    return counts


def report(counts: dict[str, Counter], rows: int) -> str:
    names = list(counts)
    lines = ["| operator | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    lines.append("| all | " + " | ".join(f"{sum(counts[n].values()):,}" for n in names) + " |")
    for operator, _ in sum(counts.values(), Counter()).most_common(rows):
        lines.append(f"| `{operator}` | " + " | ".join(str(counts[n][operator]) for n in names) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base", help="tiny, small, base, big or NAME:D_MODEL:LAYERS:HEADS:FFN")
    parser.add_argument("--vocab_size", type=int, default=10000)
    parser.add_argument("--bf16", action="store_true", help="under bf16 autocast, as the GPU runs train")
    parser.add_argument("--rows", type=int, default=12, help="operators listed, the most frequent first")
    args = parser.parse_args(argv)
    if args.rows < 1:
        raise ValueError(f"--rows must be a positive integer, got {args.rows}.")
    size, config = benchmark.parse_size(args.preset, args.vocab_size)
    counts = step_counts(config, benchmark.Settings(sizes={size: config}, bf16=args.bf16))
    table = report(counts, args.rows)
    print(f"# Operators of one training step ({size}{', bf16 autocast' if args.bf16 else ''}, 16 sentences)\n")
    print(table)
    return table


if __name__ == "__main__":
    main()
