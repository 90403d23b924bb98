import logging
import math
import socket

import evaluate
import numpy as np
import pytest
import sacrebleu
from conftest import MULTI30K, gz_lines, needs_multi30k
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import EvalPrediction, PreTrainedTokenizerFast

from hf_vanilla_transformer.metrics import (
    METRIC_PATH,
    build_compute_metrics,
    load_metric,
    moses_detokenize,
    moses_preprocess,
    multi_bleu,
    sacrebleu_scores,
    tokenized_bleu,
)

HYPS = ["The cat sat on the mat", "a b c d e f"]
REFS = ["The cat sat on the mat.", "a b c d x f"]


# --- sacreBLEU / chrF ----------------------------------------------------------------------------------------


def test_perfect_match_is_100():
    scores = sacrebleu_scores(REFS, REFS)
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0)
    assert scores["bleu_signature"] == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert scores["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|")


def test_bleu_by_hand():
    # 13a splits the final "." off: 6 hypothesis tokens, 7 reference tokens, every n-gram matches -> only BP < 1.
    assert sacrebleu_scores(HYPS[:1], REFS[:1])["bleu"] == pytest.approx(100 * math.exp(1 - 7 / 6))
    # Equal lengths (BP = 1); n-gram precisions 5/6, 3/5, 2/4, 1/3.
    assert sacrebleu_scores(HYPS[1:], REFS[1:])["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    # Corpus BLEU sums the counts (11/12, 8/10, 6/8, 4/6; lengths 12 vs 13): not a mean of sentence scores.
    corpus = 100 * math.exp(1 - 13 / 12) * (11 / 12 * 8 / 10 * 6 / 8 * 4 / 6) ** 0.25
    scores = sacrebleu_scores(HYPS, REFS)
    assert scores["bleu"] == pytest.approx(corpus)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert 0 < scores["chrf"] < 100


def test_bleu_is_cased():
    assert sacrebleu_scores(["the cat sat on the mat."], ["The cat sat on the mat."])["bleu"] < 100


@pytest.mark.parametrize(
    "hyps, refs, match",
    [
        (["a b c d", "x"], ["a b c d"], "got 2 hypotheses and 1 references"),  # sacreBLEU alone would score 100
        ([], [], "got 0 hypotheses and 0 references"),
        ("a b c d", ["a b c d"], "hypotheses must be a list of strings, got str"),
        (["a b c d"], [["a b c d"]], "references must be a list of strings, got list"),
    ],
)
def test_sacrebleu_scores_rejects_bad_input(hyps, refs, match):
    with pytest.raises(ValueError, match=match):
        sacrebleu_scores(hyps, refs)


# --- the packaged evaluate metric ----------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)


def test_metric_module_loads_offline_and_matches(no_network):
    assert (METRIC_PATH / "sacrebleu_chrf.py").is_file()
    expected = sacrebleu_scores(HYPS, REFS)
    for metric in (load_metric(), evaluate.load(str(METRIC_PATH / "sacrebleu_chrf.py"))):
        assert metric.name == "sacrebleu_chrf"
        assert metric.compute(predictions=HYPS, references=REFS) == expected
    metric = load_metric()
    for hyp, ref in zip(HYPS, REFS, strict=True):
        metric.add_batch(predictions=[hyp], references=[ref])
    assert metric.compute() == expected


def test_metric_module_is_standalone():
    # evaluate copies only the script (and its relative imports) into its module cache, and the folder is meant
    # to work without our package.
    assert "hf_vanilla_transformer" not in (METRIC_PATH / "sacrebleu_chrf.py").read_text().split('"""')[2]


# --- Multi30k tokenised BLEU ---------------------------------------------------------------------------------


def test_moses_preprocess_lowercases_normalises_and_escapes():
    assert moses_preprocess(["A dog's ball."], "en") == ["a dog &apos;s ball ."]
    # English "quotation," style: commas and periods move inside the closing quote.
    assert moses_preprocess(['They shout "Go!", then run.'], "en") == ["they shout &quot; go ! , &quot; then run ."]
    # French keeps the apostrophe on the article; normalize-punctuation.perl turns ’ between ASCII letters into '
    # and any other ’ into " (train.fr line 6096 of Multi30k: "à l’œuvre" -> "à l &quot; œuvre").
    assert moses_preprocess(["D’un homme à l’œuvre."], "fr") == ["d&apos; un homme à l &quot; œuvre ."]
    # German/French quotes: a sentence-final ." becomes ". as the perl script does with the newline in the line.
    assert moses_preprocess(["Er sagt: „Wir sind da.“"], "de") == ["er sagt : &quot; wir sind da &quot; ."]
    assert moses_preprocess(['Il dit "Bonjour."'], "fr") == ["il dit &quot; bonjour &quot; ."]
    assert moses_preprocess(['He says "Hello".'], "en") == ["he says &quot; hello . &quot;"]


def test_tokenized_bleu_by_hand():
    assert tokenized_bleu(["A DOG'S BALL."], ["a dog &apos;s ball ."], "en")["bleu"] == pytest.approx(100.0)
    # 7 vs 6 tokens (BP = 1); precisions 6/7, 4/6, 2/5, 1/4.
    scores = tokenized_bleu(["A man rides a red bike."], ["a man rides a bike ."], "en")
    assert scores["bleu"] == pytest.approx(100 * (6 / 7 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25)
    assert (
        scores["bleu_signature"] == f"nrefs:1|case:mixed|eff:no|tok:none|smooth:none|version:{sacrebleu.__version__}"
    )
    # multi-bleu.perl has no smoothing: no matching 4-gram means BLEU 0.
    assert tokenized_bleu(["The dog's ball."], ["the dog &apos;s red ball ."], "en")["bleu"] == 0.0
    with pytest.raises(ValueError, match="got 1 hypotheses and 2 tok_references"):
        tokenized_bleu(["a"], ["a", "b"], "en")


def test_moses_detokenize_undoes_tokenisation_and_escaping_not_lowercasing():
    tokenised = ["a dog &apos;s ball , the &quot; welcome &quot; sign .", "er sagt : &quot; wir sind da &quot; ."]
    assert moses_detokenize(tokenised[:1], "en") == ['a dog\'s ball, the "welcome" sign.']
    assert moses_detokenize(tokenised[1:], "de") == ['er sagt: "wir sind da".']
    assert moses_preprocess(moses_detokenize(tokenised[:1], "en"), "en") == tokenised[:1]
    assert moses_preprocess(moses_detokenize(tokenised[1:], "de"), "de") == tokenised[1:]


def test_multi_bleu_scores_tokenised_text_as_it_is():
    assert multi_bleu(["a dog &apos;s ball ."], ["a dog &apos;s ball ."])["bleu"] == pytest.approx(100.0)
    # the same text, not tokenised the same way: tokenized_bleu would tokenise it, multi_bleu does not
    assert multi_bleu(["a dog's ball."], ["a dog &apos;s ball ."])["bleu"] == 0.0
    with pytest.raises(ValueError, match="got 1 hypotheses and 2 tok_references"):
        multi_bleu(["a"], ["a", "b"])


def test_only_the_detokenised_path_warns_about_tokenised_output(caplog):
    lines = ["a dog runs ."] * 100  # sacreBLEU warns from 100 lines ending in " ."
    with caplog.at_level(logging.WARNING):
        assert multi_bleu(lines, lines)["bleu"] == pytest.approx(100.0)
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING):
        sacrebleu_scores(lines, lines)  # here tokenised output is a mistake the user should hear of
    assert "forgot to detokenize" in caplog.text


MULTI30K_FILES = [
    (split, lang)
    for split, langs in (("test_2016_flickr", "en de fr cs"), ("test_2017_flickr", "en de fr"), ("val", "en de fr cs"))
    for lang in langs.split()
]


def _reproduction(split: str, lang: str) -> tuple[list[str], list[str], list[int]]:
    raw = gz_lines(MULTI30K / f"{split}.{lang}.gz")
    tok = gz_lines(MULTI30K / "tok" / f"{split}.lc.norm.tok.{lang}.gz")
    ours = moses_preprocess(raw, lang)
    return raw, tok, [i for i, (a, b) in enumerate(zip(ours, tok, strict=True)) if a != b]


@needs_multi30k
@pytest.mark.parametrize("split, lang", MULTI30K_FILES)
def test_preprocessing_reproduces_multi30k_tok(split, lang):
    # Match rate is 100% for every file (train included, see the slow test); sacremoses' defaults alone miss
    # 28 train/val/test lines (’ -> ' instead of ", and the sentence-final ." rule).
    raw, tok, mismatches = _reproduction(split, lang)
    assert not mismatches, f"{split}.{lang}: match rate {1 - len(mismatches) / len(tok):.4f}, first {mismatches[:5]}"
    if split == "test_2016_flickr":
        assert tokenized_bleu(raw, tok, lang)["bleu"] == pytest.approx(100.0)


@needs_multi30k
@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "de", "fr", "cs"])
def test_preprocessing_reproduces_multi30k_tok_train(lang):
    _, tok, mismatches = _reproduction("train", lang)
    assert not mismatches, f"train.{lang}: match rate {1 - len(mismatches) / len(tok):.4f}, first {mismatches[:5]}"


# --- compute_metrics for Seq2SeqTrainer ----------------------------------------------------------------------

SENTENCES = ["A dog runs on the grass.", "Two men talk.", "Ein Hund rennt.", "Zwei Männer reden auf der Straße."]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Metaspace()
    bpe.train_from_iterator(
        SENTENCES, trainers.BpeTrainer(vocab_size=120, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    )
    bpe.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def padded(rows: list[list[int]], width: int, fill: int) -> np.ndarray:
    return np.array([row + [fill] * (width - len(row)) for row in rows])


def test_compute_metrics_maps_minus_100_and_scores():
    tok = tiny_tokenizer()
    hyps, refs = ["A dog runs.", "Two men talk on the grass."], ["A dog runs on the grass.", "Two men talk."]
    # generate() output: decoder start <s>, tokens, </s>, <pad> up to the batch's longest; the Trainer pads
    # across batches with -100. Labels: tokens, </s>, then -100.
    generated = [[tok.bos_token_id] + tok(h)["input_ids"] for h in hyps]
    longest = max(map(len, generated))
    preds = np.concatenate([padded(generated, longest, tok.pad_token_id), np.full((2, 3), -100)], axis=1)
    labels = padded([tok(text_target=r)["input_ids"] for r in refs], longest + 5, -100)
    metrics = build_compute_metrics(tok)(EvalPrediction(predictions=preds, label_ids=labels))
    expected = sacrebleu_scores(hyps, refs)
    assert metrics == pytest.approx(
        {"bleu": expected["bleu"], "chrf": expected["chrf"], "gen_len": sum(map(len, generated)) / 2}
    )
    assert 0 < metrics["bleu"] < 100
    perfect = build_compute_metrics(tok)(EvalPrediction(predictions=padded(generated, longest, -100), label_ids=preds))
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)


def test_compute_metrics_needs_pad_token():
    tok = tiny_tokenizer()
    tok.pad_token = None
    with pytest.raises(ValueError, match="tokenizer has no pad_token_id"):
        build_compute_metrics(tok)
