"""One joint source-target BPE vocabulary, as in §5.1 of "Attention Is All You Need" (Vaswani et al., 2017).

The paper encodes WMT En-De "using byte-pair encoding, which has a shared source-target vocabulary of about
37000 tokens". We train the BPE with the `tokenizers` library and wrap it in a transformers tokenizer.

Note: the paper does not say how text is split before BPE. We use byte-level BPE (GPT-2's pre-tokenizer,
without a prefix space) and no normalizer, so that decoding returns the input text exactly: every string is a
byte sequence, so nothing is ever unknown and no spacing is lost. `<unk>` is kept only as a conventional id.
"""

import itertools
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedConfig, PreTrainedTokenizerFast

# Order = ids: must equal VanillaTransformerConfig's pad/bos(=decoder start)/eos defaults.
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
BYTE_ALPHABET = pre_tokenizers.ByteLevel.alphabet()


def _checked_texts(texts: Iterable[str]) -> Iterator[str]:
    """Yields `texts`, raising a ValueError on an empty iterable or a non-string item."""
    iterator = iter(texts)
    first = next(iterator, None)
    if first is None:
        raise ValueError("`texts` is empty: train_bpe_tokenizer needs at least one sentence.")
    for index, text in enumerate(itertools.chain([first], iterator)):
        if not isinstance(text, str):
            raise ValueError(f"`texts` must hold strings, got {type(text).__name__} at position {index}.")
        yield text


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2, model_max_length: int = 1024
) -> PreTrainedTokenizerFast:
    """Trains one byte-level BPE vocabulary on `texts` (all languages together, §5.1).

    `vocab_size` counts the special tokens and the 256 byte symbols; the result can be smaller when `texts`
    allow fewer merges of at least `min_frequency` occurrences. Encoding appends `</s>` (source and
    `text_target` alike); the decoder's `<s>` start comes from shifting the labels in the model.
    """
    minimum = len(SPECIAL_TOKENS) + len(BYTE_ALPHABET)
    if vocab_size < minimum:
        raise ValueError(
            f"`vocab_size` must be at least {minimum} ({len(SPECIAL_TOKENS)} special tokens + "
            f"{len(BYTE_ALPHABET)} byte symbols), got {vocab_size}."
        )
    if min_frequency < 1:
        raise ValueError(f"`min_frequency` must be at least 1, got {min_frequency}.")
    if model_max_length < 1:
        raise ValueError(f"`model_max_length` must be a positive integer, got {model_max_length}.")

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    # No prefix space: decode(encode(text)) == text, even for a leading word (GPT-2 style would add a space).
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=BYTE_ALPHABET,
        show_progress=False,
    )
    bpe.train_from_iterator(_checked_texts(texts), trainer=trainer)
    eos_id = bpe.token_to_id("</s>")
    bpe.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        # The default cleanup deletes spaces before punctuation ("a , b" -> "a, b"): not lossless.
        clean_up_tokenization_spaces=False,
        # A literal "</s>" in a sentence is text, not the end-of-sentence token.
        split_special_tokens=True,
    )


def check_tokenizer_matches_config(tokenizer: PreTrainedTokenizerFast, config: PreTrainedConfig) -> None:
    """Raises a ValueError if `tokenizer` has ids the model cannot embed or special ids the model does not use."""
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but config.vocab_size is {config.vocab_size}: "
            "the model could not embed every token id."
        )
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        tokenizer_id, config_id = getattr(tokenizer, name), getattr(config, name)
        if tokenizer_id != config_id:
            raise ValueError(f"tokenizer.{name} is {tokenizer_id} but config.{name} is {config_id}.")


__all__ = ["SPECIAL_TOKENS", "check_tokenizer_matches_config", "train_bpe_tokenizer"]
