"""Real sentences: a trained model of ours and MarianMTModel holding its weights translate a corpus split with the
same beam search, alternately in one process; sentences per second, and whether their translations agree.

`benchmark.py` forces every output to one length, so that every engine does the same work. Real translations end
at different lengths, and a batch's beam search runs until its last sentence is done: our loop stops running the
sentences whose hypotheses are final (`_drop_sentences`), transformers' keeps them to the end. This script measures
that case: `ours` (sentences dropped), `ours_all_rows` (the same loop with dropping off: every sentence to the
batch's end, as transformers' loop) and `marian` (transformers' loop), all with transformers' length normalisation
(`length_penalty_form="hf"` for ours) and one `max_new_tokens`, so that they search alike; and `ours_paper`, our
model's own decoding (§6.1: GNMT penalty, input + 50 per sentence), which ranks hypotheses differently.

    python benchmarks/real_sentences.py runs/MODEL/averaged --split val --output_json real.json --output_md real.md
"""

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
import transformers
from transformers import MarianMTModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import cpu_model, marian_config, port_to_marian  # noqa: E402

from hf_vanilla_transformer import cli  # noqa: E402
from hf_vanilla_transformer.data import load_parallel_corpus  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a model folder of ours (model, tokenizer, generation config)")
    parser.add_argument("--dataset", default=str(DEFAULT_DATA), help="a corpus directory or Hub dataset name")
    parser.add_argument("--source_lang", default="en")
    parser.add_argument("--target_lang", default="de")
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_beams", type=int, default=4)
    parser.add_argument("--length_penalty", type=float, default=0.6)
    parser.add_argument("--early_stopping", default="never", choices=list(cli.EARLY_STOPPING))
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output_json")
    parser.add_argument("--output_md")
    args = parser.parse_args(argv)
    for name in ("batch_size", "num_beams", "repetitions", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}")
    args.early_stopping = cli.EARLY_STOPPING[args.early_stopping]
    return args


def arms(ours, marian, tokenizer, lines: list[str], args: argparse.Namespace) -> dict[str, Callable[[], list[str]]]:
    """Each arm translates `lines` in batches of similar length (`cli.translate`) and returns the translations."""
    longest = max(len(ids) for ids in tokenizer(lines)["input_ids"])
    common = {
        "num_beams": args.num_beams,
        "length_penalty": args.length_penalty,
        "early_stopping": args.early_stopping,
        "max_new_tokens": longest + 50,
    }

    def translate(model, **kwargs) -> list[str]:
        return cli.translate(model, tokenizer, lines, args.batch_size, **kwargs)

    def all_rows() -> list[str]:
        with mock.patch.object(type(ours), "_can_drop_sentences", return_value=False):
            return translate(ours, length_penalty_form="hf", **common)

    return {
        "ours": lambda: translate(ours, length_penalty_form="hf", **common),
        "ours_all_rows": all_rows,
        "marian": lambda: translate(marian, **common),
        "ours_paper": lambda: translate(ours),
    }


def measure(runs: dict[str, Callable[[], list[str]]], repetitions: int) -> tuple[dict, dict]:
    """Seconds of every arm at every repetition, the first arm rotating, and each arm's first translations."""
    seconds = {name: [] for name in runs}
    translations = {}
    names = list(runs)
    for rep in range(repetitions):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            start = time.perf_counter()
            output = runs[name]()
            seconds[name].append(time.perf_counter() - start)
            translations.setdefault(name, output)
    return seconds, translations


def report(seconds: dict, translations: dict, sentences: int, args: argparse.Namespace) -> dict:
    marian = statistics.median(seconds["marian"])
    rows = []
    for name, times in seconds.items():
        median = statistics.median(times)
        same = sum(a == b for a, b in zip(translations[name], translations["marian"], strict=True))
        rows.append(
            {
                "name": name,
                "seconds": [round(t, 3) for t in times],
                "median_seconds": round(median, 3),
                "sentences_per_second": round(sentences / median, 1),
                "x_marian": round(marian / median, 2),
                "same_as_marian": same,
            }
        )
    return {
        "command": "python benchmarks/real_sentences.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "split": args.split,
        "sentences": sentences,
        "batch_size": args.batch_size,
        "decoding": {name: getattr(args, name) for name in ("num_beams", "length_penalty", "early_stopping")},
        "machine": {"cpu": cpu_model(), "python": platform.python_version(), "torch_threads": torch.get_num_threads()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"`{result['command']}`: {result['sentences']} sentences of {result['split']}, batches of "
        f"{result['batch_size']}, {result['machine']['cpu']}, {result['machine']['torch_threads']} torch threads.",
        "",
        "| engine | seconds (median) | sentences/s | × Marian | translations equal to Marian's |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['name']} | {row['median_seconds']:.2f} | {row['sentences_per_second']:.1f} | "
            f"{row['x_marian']:.2f} | {row['same_as_marian']} / {result['sentences']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    for output in (args.output_json, args.output_md):  # before minutes of measuring
        if output:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ours, tokenizer = cli.load_for_generation(args.model, torch.device("cpu"))
    marian = MarianMTModel(marian_config(ours.config)).eval()
    port_to_marian(ours, marian, our_positions=True)  # the same function as ours, so the same translations
    corpus = load_parallel_corpus(args.dataset, args.source_lang, args.target_lang, [args.split])
    lines = list(corpus[args.split][args.source_lang])
    seconds, translations = measure(arms(ours, marian, tokenizer, lines, args), args.repetitions)
    result = report(seconds, translations, len(lines), args)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")
    if args.output_md:
        Path(args.output_md).write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
