"""The joint BPE tokenizer: lossless on Multi30k, the config's special ids, reloadable with AutoTokenizer."""

import gzip
import re
from pathlib import Path

import pytest
from conftest import MULTI30K
from hypothesis import example, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from hf_vanilla_transformer import VanillaTransformerConfig
from hf_vanilla_transformer.tokenization import (
    SPECIAL_TOKENS,
    check_tokenizer_matches_config,
    train_bpe_tokenizer,
)

LANGUAGES = ("en", "de", "fr", "cs")
SENTENCES = [
    "A man in an orange hat starring at something.",
    "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
    "Two young, White males are outside near many bushes.",
    "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
]
MIN_VOCAB = len(SPECIAL_TOKENS) + 256  # special tokens + one symbol per byte


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return file.read().splitlines()


@pytest.fixture(scope="module")
def multi30k_train() -> dict[str, list[str]]:
    if not MULTI30K.is_dir():
        pytest.skip(f"Multi30k not found at {MULTI30K} (set MULTI30K_DIR)")
    return {lang: read_lines(MULTI30K / f"train.{lang}.gz") for lang in LANGUAGES}


@pytest.fixture(scope="module")
def multi30k_tokenizer(multi30k_train):
    return train_bpe_tokenizer(multi30k_train["en"] + multi30k_train["de"], 8000)


@pytest.fixture(scope="module")
def small_tokenizer():
    return train_bpe_tokenizer(SENTENCES * 3, 300)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_decode_returns_every_multi30k_train_line_unchanged(multi30k_train, multi30k_tokenizer, lang):
    lines = multi30k_train[lang]
    assert len(lines) == 29000
    input_ids = multi30k_tokenizer(lines).input_ids
    # batch_decode(...) == [decode(ids) for ids in ...]: the batch call only saves time.
    decoded = multi30k_tokenizer.batch_decode(input_ids, skip_special_tokens=True)
    mismatches = [(line, text) for line, text in zip(lines, decoded, strict=True) if line != text]
    assert mismatches == []
    unk_id = multi30k_tokenizer.unk_token_id
    assert all(ids[-1] == multi30k_tokenizer.eos_token_id and unk_id not in ids for ids in input_ids)


def test_vocabulary_is_joint_and_of_the_requested_size(multi30k_tokenizer):
    assert len(multi30k_tokenizer) == 8000
    # Frequent words of both training languages became single tokens ("Ġ" marks the preceding space).
    for text in (" dog", " Hund", " man", " Mann", " playing", " spielen"):
        assert len(multi30k_tokenizer.tokenize(text)) == 1, text


def test_special_token_ids_equal_the_config_defaults(small_tokenizer):
    config = VanillaTransformerConfig()
    assert small_tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (small_tokenizer.pad_token_id, small_tokenizer.bos_token_id, small_tokenizer.eos_token_id) == (
        config.pad_token_id,
        config.bos_token_id,
        config.eos_token_id,
    )
    assert small_tokenizer.unk_token_id == 3
    assert config.decoder_start_token_id == small_tokenizer.convert_tokens_to_ids("<s>")


def test_encoding_appends_eos_and_no_bos(small_tokenizer):
    ids = small_tokenizer(SENTENCES[0]).input_ids
    assert ids == small_tokenizer(SENTENCES[0], add_special_tokens=False).input_ids + [2]
    assert 1 not in ids


def test_text_target_gives_labels_ending_with_eos(small_tokenizer):
    batch = small_tokenizer(SENTENCES[::2], text_target=SENTENCES[1::2])
    assert batch["input_ids"] == small_tokenizer(SENTENCES[::2]).input_ids
    assert batch["labels"] == small_tokenizer(SENTENCES[1::2]).input_ids
    assert all(labels[-1] == small_tokenizer.eos_token_id for labels in batch["labels"])


def test_save_pretrained_then_auto_tokenizer_gives_the_same_tokenizer(multi30k_train, multi30k_tokenizer, tmp_path):
    multi30k_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == multi30k_tokenizer.get_vocab()
    lines = [line for lang in LANGUAGES for line in multi30k_train[lang][:500]]
    assert reloaded(lines).input_ids == multi30k_tokenizer(lines).input_ids
    assert reloaded(lines[:3], text_target=lines[3:6]).labels == multi30k_tokenizer(lines[3:6]).input_ids
    assert reloaded.batch_decode(reloaded(lines).input_ids, skip_special_tokens=True) == lines
    assert reloaded.all_special_tokens == multi30k_tokenizer.all_special_tokens
    assert (reloaded.pad_token_id, reloaded.bos_token_id, reloaded.eos_token_id, reloaded.unk_token_id) == (0, 1, 2, 3)
    assert reloaded.model_max_length == 1024
    assert reloaded.clean_up_tokenization_spaces is False
    assert reloaded.split_special_tokens is True


@settings(max_examples=200, deadline=None)
@given(text=st.text())
@example(text="a , b . c ! d ' s")  # the default cleanup would delete the spaces before punctuation
@example(text="  leading, double  and trailing spaces \t\n")
@example(text="literal </s> and <pad> and <s> and <unk> text")
@example(text="Příliš žluťoučký kůň 🐴")
def test_decode_returns_any_text_unchanged(small_tokenizer, text):
    assert small_tokenizer.decode(small_tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_cleanup_of_tokenization_spaces_is_off(small_tokenizer):
    assert small_tokenizer.clean_up_tokenization_spaces is False


def test_smallest_vocabulary_has_no_merges_and_high_min_frequency_stops_merging():
    assert len(train_bpe_tokenizer(SENTENCES, MIN_VOCAB)) == MIN_VOCAB
    assert len(train_bpe_tokenizer(SENTENCES, 1000, min_frequency=len(SENTENCES) * 100)) == MIN_VOCAB
    assert MIN_VOCAB < len(train_bpe_tokenizer(SENTENCES, 1000, min_frequency=1)) <= 1000


def test_model_max_length_is_set_and_truncates():
    tokenizer = train_bpe_tokenizer(SENTENCES, 300, model_max_length=5)
    assert tokenizer.model_max_length == 5
    ids = tokenizer(SENTENCES[0], truncation=True).input_ids
    assert len(ids) == 5 and ids[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize(
    ("texts", "kwargs", "message"),
    [
        (SENTENCES, {"vocab_size": MIN_VOCAB - 1}, "`vocab_size` must be at least 260 (4 special tokens + 256 byte"),
        (iter(()), {"vocab_size": 300}, "`texts` is empty"),
        ([], {"vocab_size": 300}, "`texts` is empty"),
        (["a b", 3], {"vocab_size": 300}, "`texts` must hold strings, got int at position 1"),
        (SENTENCES, {"vocab_size": 300, "min_frequency": 0}, "`min_frequency` must be at least 1, got 0"),
        (SENTENCES, {"vocab_size": 300, "model_max_length": 0}, "`model_max_length` must be a positive integer"),
    ],
)
def test_bad_arguments_raise_value_error(texts, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        train_bpe_tokenizer(texts, **kwargs)


def test_check_tokenizer_matches_config_accepts_a_matching_config(small_tokenizer):
    check_tokenizer_matches_config(small_tokenizer, VanillaTransformerConfig(vocab_size=len(small_tokenizer)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vocab_size": 299}, "The tokenizer has 300 tokens but config.vocab_size is 299"),
        ({"pad_token_id": 5}, "tokenizer.pad_token_id is 0 but config.pad_token_id is 5"),
        ({"bos_token_id": 5}, "tokenizer.bos_token_id is 1 but config.bos_token_id is 5"),
        ({"eos_token_id": 5}, "tokenizer.eos_token_id is 2 but config.eos_token_id is 5"),
    ],
)
def test_check_tokenizer_matches_config_names_the_mismatch(small_tokenizer, overrides, message):
    assert len(small_tokenizer) == 300
    config = VanillaTransformerConfig(**{"vocab_size": 300, **overrides})
    with pytest.raises(ValueError, match=message):
        check_tokenizer_matches_config(small_tokenizer, config)
