"""Inference linear layers on the CPU: torch's `F.linear` (MKL's sgemm) against oneDNN's matrix product, over the
shapes of each preset's layers.

    python benchmarks/linear_shapes.py                      # rows 1-640 x every linear shape of tiny, small, base
    python benchmarks/linear_shapes.py --rows 4 128 --presets base --output_md linears.md
    python benchmarks/linear_shapes.py --generate tiny small --generate_reps 30       # the rule, end to end

Each cell is `F.linear`'s time over oneDNN's (above 1: oneDNN is faster) for one call: `rows` inputs (decoder
rows: sentences x beams; or a batch's source tokens in the encoder) through a layer of the preset, with its bias,
the two timed alternately. `*` marks the shapes where the model runs oneDNN (`_onednn_linear` in
`hf_vanilla_transformer/modeling_vanilla_transformer.py`).

`--generate PRESET ...` measures the rule end to end as `attention_shapes.py --generate` does: `generate()` with
the rule and with `F.linear` everywhere, alternately, the median of the paired time ratios, same tokens checked.
"""

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from hf_vanilla_transformer import VanillaTransformerConfig
from hf_vanilla_transformer import modeling_vanilla_transformer as modeling

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_shapes import add_generate_arguments, run, seconds_per_call  # noqa: E402


def layer_shapes(config: VanillaTransformerConfig, vocab_size: int) -> dict[str, tuple[int, int]]:
    """(in features, out features) of each kind of linear layer of the model."""
    return {
        "attention": (config.d_model, config.d_model),
        "ffn in": (config.d_model, config.decoder_ffn_dim),
        "ffn out": (config.decoder_ffn_dim, config.d_model),
        "output": (config.d_model, vocab_size),
    }


def linear_over_onednn(rows: int, in_features: int, out_features: int, reps: int) -> float:
    """`F.linear`'s time / oneDNN's time for one inference call of this shape."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, in_features, generator=generator)
    layer = torch.nn.Linear(in_features, out_features)
    times = {"linear": 0.0, "onednn": 0.0}
    with torch.inference_mode():
        for _ in range(2):  # alternated, so that drift of the machine hits both
            times["linear"] += seconds_per_call(lambda: F.linear(inputs, layer.weight, layer.bias), reps)
            times["onednn"] += seconds_per_call(lambda: modeling.onednn_linear(inputs, layer.weight, layer.bias), reps)
    return times["linear"] / times["onednn"]


def uses_onednn(rows: int, in_features: int, out_features: int) -> bool:
    """Whether the model runs an inference linear layer of this shape on the CPU through oneDNN."""
    with torch.inference_mode():
        return modeling._onednn_linear(torch.empty(rows, in_features), torch.empty(out_features, in_features))


def linear_everywhere() -> contextlib.AbstractContextManager:
    return mock.patch.object(modeling, "_onednn_linear", lambda inputs, weight: False)


def markdown(grid: dict[str, list[tuple[float, bool]]], rows: Sequence[int]) -> str:
    lines = [f"threads {torch.get_num_threads()}, torch {torch.__version__}; F.linear's time / oneDNN's time"]
    lines += ["", "| preset: layer (in x out) | " + " | ".join(f"{r} rows" for r in rows) + " |"]
    lines.append("| --- |" + " ---: |" * len(rows))
    for name, cells in grid.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{ratio:.2f}" + ("*" if used else "") for ratio, used in cells) + " |"
        )
    lines += ["", "*: the model runs oneDNN at this shape"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    """The grid of cells by preset and layer, then rows; with --generate the end-to-end speed-ups."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 32, 128, 640])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    parser.add_argument("--vocab_size", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    add_generate_arguments(parser)
    parser.add_argument("--output_md", type=Path, default=None)
    args = parser.parse_args(argv)
    counts = [*args.rows, args.vocab_size, args.reps, args.generate_reps, args.generate_beams, args.generate_batch]
    if min(counts) < 1:
        parser.error("--rows, --vocab_size, --reps and the --generate_* counts must be positive integers")

    def grid() -> tuple[dict, str]:
        cells = {}
        for preset in args.presets:
            config = VanillaTransformerConfig.from_preset(preset)  # a clear error for an unknown preset
            for layer, (n_in, n_out) in layer_shapes(config, args.vocab_size).items():
                cells[f"{preset}: {layer} ({n_in} x {n_out})"] = [
                    (linear_over_onednn(r, n_in, n_out, args.reps), uses_onednn(r, n_in, n_out)) for r in args.rows
                ]
        return cells, markdown(cells, args.rows)

    return run(args, grid, linear_everywhere)


if __name__ == "__main__":
    main()
