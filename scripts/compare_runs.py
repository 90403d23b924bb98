"""Puts trained runs side by side and picks, for each language pair, the run with the best validation score.

    python scripts/compare_runs.py runs/gpu/* [--split val] [--metric tok_bleu] [--best_json best.json]

Each RUN is an output_dir of scripts/train.py; its scores are read from RUN/averaged/results.json when the run
averaged checkpoints, else from RUN/results.json. Selection looks at `--split` only (the validation split: test
scores are reported, never used to choose). Prints a markdown table, the best run of each pair in bold; runs
without that score (unfinished or failed) are listed with empty cells and never chosen.
"""

import argparse
import json
import sys
from pathlib import Path

from hf_vanilla_transformer.cli import read_results

COLUMNS = ("bleu", "chrf", "tok_bleu")


def scored_folder(run: Path) -> Path:
    """The folder whose results.json holds the run's final scores: averaged/ if the run averaged checkpoints."""
    averaged = run / "averaged"
    return averaged if (averaged / "results.json").is_file() else run


def compare(runs: list[Path], split: str, metric: str) -> tuple[list[dict], dict[str, str]]:
    """One row per run (its folder, training entry and scores) and the best run's folder for each language pair."""
    rows = []
    for run in runs:
        if not run.is_dir():
            raise FileNotFoundError(f"run folder {run} does not exist")
        results = read_results(scored_folder(run))
        training = results.get("training", {})
        pair = "-".join(training.get("languages", ["?", "?"]))
        splits = {name: scores for name, scores in results.items() if name != "training"}
        rows.append({"run": str(run), "pair": pair, "training": training, "scores": splits})
    best = {}
    for row in rows:  # a run without the score (unfinished, crashed) is listed but cannot be chosen
        score = row["scores"].get(split, {}).get(metric)
        if score is not None and (row["pair"] not in best or score > best[row["pair"]]["scores"][split][metric]):
            best[row["pair"]] = row
    return rows, {pair: row["run"] for pair, row in best.items()}


def markdown(rows: list[dict], best: dict[str, str]) -> str:
    splits = sorted({name for row in rows for name in row["scores"]}, key=lambda s: (s != "val", s))
    header = ["run", "pair", "minutes", "updates", "tgt tok/s"]
    header += [f"{split} {column}" for split in splits for column in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in sorted(rows, key=lambda r: (r["pair"], r["run"])):
        name = f"**{row['run']}**" if best.get(row["pair"]) == row["run"] else row["run"]
        training = row["training"]
        cells = [name, row["pair"], *(str(training.get(k, "")) for k in ("minutes", "updates", "target_tokens_per_s"))]
        for split in splits:
            scores = row["scores"].get(split, {})
            cells += [f"{scores[c]:.2f}" if c in scores else "" for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="output_dir folders of scripts/train.py")
    parser.add_argument("--split", default="val", help="split that selects the best run (default: val)")
    parser.add_argument("--metric", default="tok_bleu", choices=COLUMNS, help="score that selects (default: tok_bleu)")
    parser.add_argument("--best_json", type=Path, help="also write {pair: best run folder} here")
    args = parser.parse_args(argv)
    rows, best = compare(args.runs, args.split, args.metric)
    sys.stdout.write(markdown(rows, best))
    if args.best_json is not None:
        args.best_json.write_text(json.dumps(best, indent=2) + "\n")
    return best


if __name__ == "__main__":
    main()
