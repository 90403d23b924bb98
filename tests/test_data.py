import gzip
from pathlib import Path

import datasets
import pytest
from conftest import MULTI30K, gz_lines, needs_multi30k
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from hf_vanilla_transformer.data import load_parallel_corpus, tokenize_corpus

EN = ["A dog runs.", "Two men talk.", "A girl in a red coat."]
DE = ["Ein Hund rennt.", "Zwei Männer reden.", "Ein Mädchen in einem roten Mantel."]


def write(path: Path, text: str | bytes) -> Path:
    data = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """train/valid with en+de, one side gzipped and one plain; a README that must not count as a split."""
    write(tmp_path / "train.en", "\n".join(EN) + "\n")
    write(tmp_path / "train.de.gz", "\n".join(DE) + "\n")
    write(tmp_path / "valid.en.gz", "Hello.\n")
    write(tmp_path / "valid.de", "Hallo.\n")
    write(tmp_path / "README.md", "# notes\n")
    return tmp_path


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Metaspace()
    bpe.train_from_iterator(
        EN + DE, trainers.BpeTrainer(vocab_size=120, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    )
    bpe.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


# --- real Multi30k -------------------------------------------------------------------------------------------


@needs_multi30k
def test_multi30k_raw_splits_sizes_and_lines():
    corpus = load_parallel_corpus(MULTI30K, "en", "de")
    sizes = {split: ds.num_rows for split, ds in corpus.items()}
    assert sizes == {"train": 29000, "val": 1014, "test_2016_flickr": 1000, "test_2017_flickr": 1000}
    assert corpus["train"].column_names == ["en", "de"]
    assert corpus["val"]["de"] == gz_lines(MULTI30K / "val.de.gz")
    assert corpus["test_2016_flickr"][0] == {
        "en": "A man in an orange hat starring at something.",
        "de": "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
    }
    # Edge spaces are kept exactly (40 train.de lines have them).
    assert corpus["train"]["de"] == gz_lines(MULTI30K / "train.de.gz")


@needs_multi30k
def test_multi30k_has_no_czech_2017_test():
    with pytest.raises(
        ValueError,
        match=r"split 'test_2017_flickr' in .*multi30k has no 'cs' file \(languages of that split: de, en, fr\)",
    ):
        load_parallel_corpus(MULTI30K, "en", "cs", splits=["test_2017_flickr"])
    # Without explicit splits, only the splits that have both languages load.
    assert sorted(load_parallel_corpus(MULTI30K, "cs", "en")) == ["test_2016_flickr", "train", "val"]


@needs_multi30k
def test_multi30k_tok_variant_either_direction():
    de_en = load_parallel_corpus(MULTI30K / "tok", "de", "en", splits=["val"])
    en_de = load_parallel_corpus(str(MULTI30K / "tok"), "en", "de", splits=["val"])
    assert de_en["val"].column_names == ["de", "en"] and en_de["val"].column_names == ["en", "de"]
    assert de_en["val"]["de"] == en_de["val"]["de"] == gz_lines(MULTI30K / "tok" / "val.lc.norm.tok.de.gz")
    assert de_en["val"][0] == {
        "de": "eine gruppe von männern lädt baumwolle auf einen lastwagen",
        "en": "a group of men are loading cotton onto a truck",
    }


# --- local files ---------------------------------------------------------------------------------------------


def test_gz_and_plain_files_both_directions(corpus_dir):
    en_de = load_parallel_corpus(corpus_dir, "en", "de")
    assert sorted(en_de) == ["train", "valid"]  # README.md is no split
    assert en_de["train"].to_dict() == {"en": EN, "de": DE}
    assert en_de["valid"].to_dict() == {"en": ["Hello."], "de": ["Hallo."]}
    de_en = load_parallel_corpus(str(corpus_dir), "de", "en", splits=["valid"])
    assert list(de_en) == ["valid"] and de_en["valid"].column_names == ["de", "en"]
    assert de_en["valid"].to_dict() == {"de": ["Hallo."], "en": ["Hello."]}
    assert de_en["valid"].features == datasets.Features(
        {"de": datasets.Value("string"), "en": datasets.Value("string")}
    )


def test_tagged_file_names(tmp_path):
    write(tmp_path / "test.lc.norm.tok.en.gz", "a dog &apos;s ball .\n")
    write(tmp_path / "test.lc.norm.tok.de", "ein ball .\n")
    assert load_parallel_corpus(tmp_path, "en", "de")["test"].to_dict() == {
        "en": ["a dog &apos;s ball ."],
        "de": ["ein ball ."],
    }


def test_line_policy(tmp_path):
    # CRLF ends and a missing final newline are line ends; empty lines, edge/inner whitespace, lone \r,
    # form feed and U+2028 stay inside their lines.
    write(tmp_path / "x.en", "a\r\n\r\n  b\t \n c\rd\x0ce\u2028f\n\nlast")
    write(tmp_path / "x.de.gz", "1\n2\n3\n4\n5\n6\n")
    corpus = load_parallel_corpus(tmp_path, "en", "de")
    assert corpus["x"]["en"] == ["a", "", "  b\t ", " c\rd\x0ce\u2028f", "", "last"]
    assert corpus["x"]["de"] == ["1", "2", "3", "4", "5", "6"]


def test_empty_files_give_empty_split(tmp_path):
    write(tmp_path / "x.en", "")
    write(tmp_path / "x.de.gz", "")
    assert load_parallel_corpus(tmp_path, "en", "de")["x"].num_rows == 0


def test_mismatched_line_counts_name_both_files(corpus_dir):
    write(corpus_dir / "train.de.gz", "\n".join(DE[:2]) + "\n")
    with pytest.raises(
        ValueError, match=r"split 'train' is misaligned: .*train\.en has 3 lines but .*train\.de\.gz has 2"
    ):
        load_parallel_corpus(corpus_dir, "en", "de")


def test_missing_split_lists_available(corpus_dir):
    with pytest.raises(ValueError, match=r"no split 'test' in .* \(available: train, valid\)"):
        load_parallel_corpus(corpus_dir, "en", "de", splits=["train", "test"])


def test_unknown_language_lists_available(corpus_dir):
    with pytest.raises(
        ValueError, match=r"unknown language code 'fr': no SPLIT\.fr\[\.gz\] files in .* \(languages there: de, en\)"
    ):
        load_parallel_corpus(corpus_dir, "fr", "de")


def test_language_missing_in_one_split(corpus_dir):
    write(corpus_dir / "train.fr", "Un chien court.\nDeux hommes parlent.\nUne fille.\n")
    with pytest.raises(ValueError, match=r"split 'valid' in .* has no 'fr' file \(languages of that split: de, en\)"):
        load_parallel_corpus(corpus_dir, "fr", "en", splits=["train", "valid"])
    assert sorted(load_parallel_corpus(corpus_dir, "fr", "en")) == ["train"]


@pytest.mark.parametrize(
    "payload, reason",
    [(b"this is not gzip data", "Not a gzipped file"), (gzip.compress(b"Ein Hund.\n" * 50)[:-12], "end-of-stream")],
    ids=["not-gzip", "truncated"],
)
def test_corrupt_gzip_names_the_file(corpus_dir, payload, reason):
    (corpus_dir / "train.de.gz").write_bytes(payload)
    with pytest.raises(ValueError, match=rf"train\.de\.gz is not a readable gzip file \(.*{reason}"):
        load_parallel_corpus(corpus_dir, "en", "de")


def test_non_utf8_names_file_and_line(corpus_dir):
    write(corpus_dir / "train.de.gz", b"Ein Hund.\nZwei M\xe4nner.\nDrei.\n")
    with pytest.raises(ValueError, match=r"train\.de\.gz is not valid UTF-8: line 2 has the byte\(s\) b'\\xe4'"):
        load_parallel_corpus(corpus_dir, "en", "de")


def test_same_split_and_language_twice_is_ambiguous(corpus_dir):
    write(corpus_dir / "train.en.gz", "\n".join(EN) + "\n")
    with pytest.raises(ValueError, match=r"both .*train\.en and .*train\.en\.gz hold split 'train' in 'en'"):
        load_parallel_corpus(corpus_dir, "en", "de")


def test_argument_errors(corpus_dir, tmp_path):
    with pytest.raises(ValueError, match="src_lang and tgt_lang must differ, both are 'en'"):
        load_parallel_corpus(corpus_dir, "en", "en")
    with pytest.raises(ValueError, match="must be non-empty language codes, got '' and 'de'"):
        load_parallel_corpus(corpus_dir, "", "de")
    with pytest.raises(ValueError, match="splits must be a non-empty sequence of split names or None, got 'train'"):
        load_parallel_corpus(corpus_dir, "en", "de", splits="train")
    with pytest.raises(ValueError, match="config_name is for Hub datasets only"):
        load_parallel_corpus(corpus_dir, "en", "de", config_name="de-en")
    with pytest.raises(FileNotFoundError, match=r"corpus directory .*nowhere does not exist"):
        load_parallel_corpus(tmp_path / "nowhere", "en", "de")


def test_no_split_with_both_languages(tmp_path):
    for name in ("a.en", "a.fr", "b.de", "b.fr"):
        write(tmp_path / name, "x\n")
    with pytest.raises(ValueError, match=r"no split in .* has both 'en' and 'de' files"):
        load_parallel_corpus(tmp_path, "en", "de")


# --- Hub layouts (datasets.load_dataset mocked: no network) -------------------------------------------------


@pytest.fixture
def fake_hub(monkeypatch):
    calls = []
    plain = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"en": EN, "de": DE, "id": [0, 1, 2]}),
            "validation": datasets.Dataset.from_dict({"en": ["Hello."], "de": ["Hallo."], "id": [3]}),
        }
    )
    nested = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"translation": [{"de": d, "en": e} for d, e in zip(DE, EN, strict=True)]},
                features=datasets.Features({"translation": datasets.Translation(languages=["de", "en"])}),
            )
        }
    )

    def load_dataset(path, name=None):
        calls.append((path, name))
        return {"bentrevett/multi30k": plain, "wmt14": nested}[path]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_plain_columns(fake_hub):
    corpus = load_parallel_corpus("bentrevett/multi30k", "de", "en")
    assert fake_hub == [("bentrevett/multi30k", None)]
    assert sorted(corpus) == ["train", "validation"]
    assert corpus["train"].to_dict() == {"de": DE, "en": EN}  # extra columns dropped, order = (src, tgt)
    assert load_parallel_corpus("bentrevett/multi30k", "en", "de", splits=["validation"])["validation"].to_dict() == {
        "en": ["Hello."],
        "de": ["Hallo."],
    }


def test_hub_translation_column(fake_hub):
    corpus = load_parallel_corpus("wmt14", "en", "de", config_name="de-en")
    assert fake_hub == [("wmt14", "de-en")]
    assert list(corpus) == ["train"] and corpus["train"].to_dict() == {"en": EN, "de": DE}
    assert corpus["train"].features == datasets.Features(
        {"en": datasets.Value("string"), "de": datasets.Value("string")}
    )


def test_hub_errors(fake_hub):
    with pytest.raises(
        ValueError,
        match=r"unknown language code 'fr': split 'train' of Hub dataset wmt14 has no such text column "
        r"\(available: de, en\)",
    ):
        load_parallel_corpus("wmt14", "fr", "en", config_name="de-en")
    with pytest.raises(
        ValueError, match=r"no split 'test' in Hub dataset bentrevett/multi30k \(available: train, validation\)"
    ):
        load_parallel_corpus("bentrevett/multi30k", "en", "de", splits=["test"])


# --- tokenize_corpus -----------------------------------------------------------------------------------------


def test_tokenize_corpus_columns_labels_and_lengths(corpus_dir):
    tok = tiny_tokenizer()
    corpus = load_parallel_corpus(corpus_dir, "en", "de")
    encoded = tokenize_corpus(corpus, tok, "en", "de")
    train = encoded["train"]
    assert train.column_names == ["input_ids", "attention_mask", "labels", "src_len", "tgt_len"]
    assert train["input_ids"] == [tok(s)["input_ids"] for s in EN]
    assert train["labels"] == [tok(text_target=t)["input_ids"] for t in DE]
    for row in train:
        assert row["input_ids"][-1] == row["labels"][-1] == tok.eos_token_id
        assert row["attention_mask"] == [1] * len(row["input_ids"])
        assert (row["src_len"], row["tgt_len"]) == (len(row["input_ids"]), len(row["labels"]))
    assert tok.decode(train[2]["labels"], skip_special_tokens=True) == DE[2]
    # Reverse direction swaps the sides.
    assert tokenize_corpus(corpus, tok, "de", "en")["train"]["labels"] == train["input_ids"]


def test_tokenize_corpus_truncation_keeps_eos(corpus_dir):
    tok = tiny_tokenizer()
    encoded = tokenize_corpus(load_parallel_corpus(corpus_dir, "en", "de"), tok, "en", "de", max_length=4)
    full = tokenize_corpus(load_parallel_corpus(corpus_dir, "en", "de"), tok, "en", "de")
    assert max(full["train"]["tgt_len"]) > 4 and max(full["train"]["src_len"]) > 4  # truncation does happen
    for short, whole in zip(encoded["train"], full["train"], strict=True):
        assert short["src_len"] == min(4, whole["src_len"]) and short["tgt_len"] == min(4, whole["tgt_len"])
        assert short["labels"] == whole["labels"][: short["tgt_len"] - 1] + [tok.eos_token_id]


def test_tokenize_corpus_errors(corpus_dir):
    tok = tiny_tokenizer()
    corpus = load_parallel_corpus(corpus_dir, "en", "de")
    with pytest.raises(ValueError, match=r"split 'train' has no column\(s\) 'fr'"):
        tokenize_corpus(corpus, tok, "en", "fr")
    with pytest.raises(ValueError, match="max_length must be a positive int or None, got 0"):
        tokenize_corpus(corpus, tok, "en", "de", max_length=0)
    tok.backend_tokenizer.post_processor = None
    with pytest.raises(ValueError, match=r"tokenizer must append eos_token \('</s>'\) to every sequence"):
        tokenize_corpus(corpus, tok, "en", "de")
