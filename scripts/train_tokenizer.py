"""Trains the joint source-target BPE vocabulary of §5.1 on a training split and saves it as a tokenizer folder.

    python scripts/train_tokenizer.py --dataset ../shared/data/multi30k --source_lang en --target_lang de \
        --vocab_size 10000 --output_dir runs/bpe-en-de
"""

import logging
from dataclasses import dataclass, field

from hf_vanilla_transformer.cli import DataArguments, parse_args, setup_logging, train_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class TokenizerArguments:
    output_dir: str = field(metadata={"help": "Folder to save the tokenizer to (tokenizer.json, ...)."})
    vocab_size: int = field(default=10000, metadata={"help": "Vocabulary size, special tokens included."})


def main(argv: list[str] | None = None):
    data_args, tokenizer_args = parse_args((DataArguments, TokenizerArguments), argv)
    setup_logging()
    corpus = data_args.load([data_args.train_split], data_args.max_train_samples)[data_args.train_split]
    tokenizer = train_tokenizer(corpus, data_args.source_lang, data_args.target_lang, tokenizer_args.vocab_size)
    tokenizer.save_pretrained(tokenizer_args.output_dir)
    logger.info("Saved a vocabulary of %d tokens to %s", len(tokenizer), tokenizer_args.output_dir)
    return tokenizer


if __name__ == "__main__":
    main()
