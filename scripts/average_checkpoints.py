"""Averages the weights of the last N checkpoints of a training run (§6.1: 5 for base models, 20 for big).

python scripts/average_checkpoints.py runs/tiny-en-de --last 10 --output_dir runs/tiny-en-de/averaged
"""

import argparse
import logging
from pathlib import Path

from hf_vanilla_transformer.averaging import average_checkpoints, last_checkpoints
from hf_vanilla_transformer.cli import setup_logging

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="A Trainer output_dir holding checkpoint-STEP folders.")
    parser.add_argument("--last", type=int, default=5, help="How many of the last checkpoints to average.")
    parser.add_argument("--output_dir", help="Folder for the averaged model (default: RUN_DIR/averaged).")
    args = parser.parse_args(argv)
    setup_logging()
    checkpoints = last_checkpoints(args.run_dir, args.last)
    output_dir = average_checkpoints(checkpoints, args.output_dir or Path(args.run_dir) / "averaged")
    logger.info("Averaged %s into %s", ", ".join(c.name for c in checkpoints), output_dir)
    return output_dir


if __name__ == "__main__":
    main()
