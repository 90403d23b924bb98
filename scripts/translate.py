"""Translates one sentence per line, from a file or stdin to a file or stdout, in batches.

echo "A man is riding a bike." | python scripts/translate.py --model_name_or_path runs/tiny-en-de/averaged
python scripts/translate.py --model_name_or_path MODEL --input src.txt --output hyp.txt --num_beams 1
"""

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hf_vanilla_transformer.cli import (
    GenerationArguments,
    load_for_generation,
    parse_args,
    setup_logging,
    translate,
)
from hf_vanilla_transformer.data import decode_utf8, split_lines

logger = logging.getLogger(__name__)


@dataclass
class TranslateArguments:
    model_name_or_path: str = field(metadata={"help": "A trained model folder (or Hub name) with its tokenizer."})
    input: str | None = field(default=None, metadata={"help": "Source sentences, one a line (default: stdin)."})
    output: str | None = field(default=None, metadata={"help": "File for the translations (default: stdout)."})


def read_utf8(path: str | None) -> str:
    """The text of `path` (default: stdin), with a ValueError naming the line of the first byte that is not UTF-8."""
    if path:
        raw, name = Path(path).read_bytes(), path
    else:
        # A replaced sys.stdin (io.StringIO in tests) has no byte buffer and holds text already.
        stdin = getattr(sys.stdin, "buffer", None)
        raw, name = (stdin.read() if stdin is not None else sys.stdin.read().encode()), "stdin"
    return decode_utf8(raw, name)


def main(argv: list[str] | None = None) -> list[str]:
    args, generation_args = parse_args((TranslateArguments, GenerationArguments), argv)
    setup_logging(logging.WARNING)  # stdout may be the translations: keep the chatter on stderr short
    lines = split_lines(read_utf8(args.input))
    model, tokenizer = load_for_generation(args.model_name_or_path, generation_args.torch_device())
    translations = translate(model, tokenizer, lines, generation_args.batch_size, **generation_args.generate_kwargs())
    out = "".join(f"{t}\n" for t in translations)
    if args.output:
        Path(args.output).write_text(out, encoding="utf-8")
    else:
        sys.stdout.write(out)
    return translations


if __name__ == "__main__":
    main()
