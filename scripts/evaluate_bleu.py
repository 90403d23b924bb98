"""Translates splits with a trained model and scores them: sacreBLEU/chrF, and tokenised BLEU where `tok/`
references exist. Writes hypotheses.SPLIT.LANG.txt and results.json.

    python scripts/evaluate_bleu.py --model_name_or_path runs/tiny-en-de/averaged --eval_splits test_2016_flickr
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hf_vanilla_transformer.cli import (
    DataArguments,
    GenerationArguments,
    evaluate_splits,
    load_for_generation,
    parse_args,
    setup_logging,
)

logger = logging.getLogger(__name__)


@dataclass
class EvaluateArguments:
    model_name_or_path: str = field(metadata={"help": "A trained model folder (or Hub name) with its tokenizer."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where to write hypotheses and results.json (default: the model folder)."}
    )


def main(argv: list[str] | None = None) -> dict:
    eval_args, data_args, generation_args = parse_args((EvaluateArguments, DataArguments, GenerationArguments), argv)
    setup_logging()
    output_dir = eval_args.output_dir or eval_args.model_name_or_path
    if eval_args.output_dir is None and not Path(output_dir).is_dir():
        raise ValueError(f"--output_dir is required when --model_name_or_path is not a folder: {output_dir!r}")
    model, tokenizer = load_for_generation(eval_args.model_name_or_path, generation_args.torch_device())
    return evaluate_splits(
        model,
        tokenizer,
        data_args,
        data_args.eval_splits,
        output_dir,
        batch_size=generation_args.batch_size,
        **generation_args.generate_kwargs(),
    )


if __name__ == "__main__":
    main()
