"""Inference attention on the CPU: SDPA's kernel against two matrix products and a softmax, over a grid of shapes.

    python benchmarks/attention_shapes.py          # rows 1-128 x queries 1-64 x keys 16-256, tiny's and base's heads
    python benchmarks/attention_shapes.py --rows 32 --queries 1 4 --keys 32 400 --presets base --output_md shapes.md
    python benchmarks/attention_shapes.py --generate tiny small --generate_reps 30     # the rule, end to end

Each cell is SDPA's time over `eager_attention_forward`'s (above 1: the matrix products are faster) for one
attention call of the shape: rows (decoder rows, or sentences whose beams are grouped into its queries) of the
preset's heads, a boolean padding mask as the model passes in inference, the two timed alternately. `*` marks the
shapes where the model runs the products (`_cpu_inference_attention` in
`hf_vanilla_transformer/modeling_vanilla_transformer.py`, whose two limits this grid chose).

`--generate PRESET ...` measures the rule end to end: our model's `generate()` (`--generate_beams`, default 4 with
the paper's scoring) on `--generate_batch` random sentences of 10-30 tokens, outputs forced to 40 tokens as in
`benchmark.py`, with the rule and with SDPA's kernel for every attention, alternately; the ratio of each adjacent
pair of timings, whose median it reports, cancels the machine's slower drift. Both must give the same tokens
(checked).
"""

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from transformers import LogitsProcessorList

from hf_vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from hf_vanilla_transformer import modeling_vanilla_transformer as modeling
from hf_vanilla_transformer.modeling_vanilla_transformer import eager_attention_forward

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark  # noqa: E402


def seconds_per_call(function, reps: int) -> float:
    function()  # warm-up: the first call allocates
    start = time.perf_counter()
    for _ in range(reps):
        function()
    return (time.perf_counter() - start) / reps


def sdpa_over_matmul(rows: int, heads: int, queries: int, keys: int, head_dim: int, reps: int) -> float:
    """SDPA's time / the matrix products' time for one inference attention of this shape."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(rows, heads, queries, head_dim, generator=generator)
    key, value = (torch.randn(rows, heads, keys, head_dim, generator=generator) for _ in range(2))
    mask = torch.ones(rows, 1, 1, keys, dtype=torch.bool)
    mask[: rows // 2, ..., keys - keys // 8 :] = False  # half the rows padded
    module = torch.nn.Module()
    module.is_causal = False
    times = {"sdpa": 0.0, "matmul": 0.0}
    with torch.inference_mode():
        for _ in range(2):  # alternated, so that drift of the machine hits both
            times["sdpa"] += seconds_per_call(lambda: F.scaled_dot_product_attention(query, key, value, mask), reps)
            times["matmul"] += seconds_per_call(
                lambda: eager_attention_forward(module, query, key, value, mask, head_dim**-0.5), reps
            )
    return times["sdpa"] / times["matmul"]


def uses_matmul(rows: int, heads: int, queries: int, keys: int) -> bool:
    """Whether the model runs an inference attention of this shape on the CPU as matrix products."""
    return modeling._cpu_inference_attention(
        torch.empty(rows, heads, queries, 0), torch.empty(rows, heads, keys, 0), False
    )


def sdpa_everywhere() -> contextlib.AbstractContextManager:
    return mock.patch.object(modeling, "_cpu_inference_attention", lambda query, key, training: False)


def generate_speedup(
    preset: str,
    reps: int,
    num_beams: int = 4,
    batch_size: int = 32,
    without_rule: Callable[[], contextlib.AbstractContextManager] = sdpa_everywhere,
) -> dict[str, float]:
    """`generate()` with the model's rule against `without_rule` (default: SDPA's kernel everywhere): median and
    range of the paired time ratios (the time without / with the rule, above 1: the rule is faster)."""
    generator = torch.Generator().manual_seed(0)
    config = VanillaTransformerConfig.from_preset(preset, vocab_size=10000)
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(config).eval()
    input_ids = benchmark.pad(benchmark.random_sentences(batch_size, config.vocab_size, generator))
    kwargs = {"attention_mask": (input_ids != benchmark.PAD).long(), "max_new_tokens": 40, "num_beams": num_beams}
    kwargs["logits_processor"] = LogitsProcessorList([benchmark.SuppressEndOfSentence()])

    def translate(rule: bool) -> tuple[float, torch.Tensor]:
        with contextlib.nullcontext() if rule else without_rule(), torch.inference_mode():
            start = time.perf_counter()
            output = model.generate(input_ids, **kwargs)
            return time.perf_counter() - start, output

    outputs = {rule: translate(rule)[1] for rule in (True, False)}  # also the warm-up
    if not torch.equal(outputs[True], outputs[False]):
        raise RuntimeError(f"{preset}: the rule changed the translations")
    ratios = []
    for rep in range(reps):
        order = (True, False) if rep % 2 == 0 else (False, True)
        seconds = {rule: translate(rule)[0] for rule in order}
        ratios.append(seconds[False] / seconds[True])
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "faster": sum(r > 1 for r in ratios),
    }


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generate", nargs="+", default=[], metavar="PRESET", help="the end-to-end A/B instead")
    parser.add_argument("--generate_reps", type=int, default=20)
    parser.add_argument("--generate_beams", type=int, default=4)
    parser.add_argument("--generate_batch", type=int, default=32)


def report_generate_speedups(
    args: argparse.Namespace, without_rule: Callable[[], contextlib.AbstractContextManager]
) -> dict[str, dict[str, float]]:
    """`generate_speedup` of each preset of `--generate`, printed."""
    speedups = {
        preset: generate_speedup(preset, args.generate_reps, args.generate_beams, args.generate_batch, without_rule)
        for preset in args.generate
    }
    for preset, result in speedups.items():
        print(
            f"{preset}: generate() with {args.generate_beams} beams, {args.generate_batch} sentences a batch: "
            f"{result['median']:.3f}x faster with the rule (median of {args.generate_reps} pairs; "
            f"{result['min']:.2f}-{result['max']:.2f}x; faster in {result['faster']})"
        )
    return speedups


Cell = tuple[float, bool]  # (SDPA's time / the products' time, whether the model runs the products)


def markdown(grid: dict[str, dict[tuple[int, int], Cell]], queries: Sequence[int], keys: Sequence[int]) -> str:
    lines = [f"threads {torch.get_num_threads()}, torch {torch.__version__}; SDPA's time / the matrix products' time"]
    for name, cells in grid.items():
        lines += ["", name, "", "| queries \\ keys | " + " | ".join(map(str, keys)) + " |"]
        lines.append("| ---: |" + " ---: |" * len(keys))
        for q in queries:
            marks = [f"{cells[q, k][0]:.2f}" + ("*" if cells[q, k][1] else "") for k in keys]
            lines.append(f"| {q} | " + " | ".join(marks) + " |")
    lines += ["", "*: the model runs the matrix products at this shape"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    """The grid of cells by preset and rows, then (queries, keys); with --generate the end-to-end speed-ups."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 32, 128], help="decoder rows, or sentences")
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--keys", type=int, nargs="+", default=[16, 32, 64, 256])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"], help="whose heads (small's are base's)")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    add_generate_arguments(parser)
    parser.add_argument("--output_md", type=Path, default=None)
    args = parser.parse_args(argv)
    counts = [*args.rows, *args.queries, *args.keys, args.reps, args.generate_reps, args.generate_beams]
    if min([*counts, args.generate_batch]) < 1:
        parser.error("--rows, --queries, --keys, --reps and the --generate_* counts must be positive integers")

    def grid() -> tuple[dict, str]:
        cells = {}
        for preset in args.presets:
            config = VanillaTransformerConfig.from_preset(preset)  # a clear error for an unknown preset
            heads = config.encoder_attention_heads
            head_dim = config.d_model // heads
            for rows in args.rows:
                cells[f"{preset}: {heads} heads of {head_dim}, {rows} rows"] = {
                    (q, k): (sdpa_over_matmul(rows, heads, q, k, head_dim, args.reps), uses_matmul(rows, heads, q, k))
                    for q in args.queries
                    for k in args.keys
                }
        return cells, markdown(cells, args.queries, args.keys)

    return run(args, grid, sdpa_everywhere)


def run(
    args: argparse.Namespace,
    grid: Callable[[], tuple[dict, str]],
    without_rule: Callable[[], contextlib.AbstractContextManager],
) -> dict:
    """What both scripts do with their arguments: the end-to-end A/B of `--generate`, else the grid, printed and
    written to `--output_md`."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.generate:
        return report_generate_speedups(args, without_rule)
    cells, table = grid()
    print(table)
    if args.output_md:
        args.output_md.write_text(table)
    return cells


if __name__ == "__main__":
    main()
