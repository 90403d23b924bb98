"""Translation metrics the way the field reports them: sacreBLEU/chrF and Multi30k's tokenised BLEU.

Two BLEU figures exist for Multi30k and they are not comparable (say which one a number is):
- sacreBLEU (Post 2018): cased, detokenised hypotheses against the raw references, 13a tokenisation; reported
  with its signature. This is the reproducible figure (``sacrebleu_scores``).
- Tokenised BLEU (Papineni et al. 2002 as computed by Moses ``multi-bleu.perl``): lowercased,
  punctuation-normalised, Moses-tokenised text against the dataset's ``tok/`` references. This is the figure most
  Multi30k papers report (``tokenized_bleu``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import evaluate
import numpy as np
from sacrebleu.metrics import BLEU, CHRF
from sacremoses import MosesDetokenizer, MosesPunctNormalizer, MosesTokenizer
from transformers import EvalPrediction

# Shipped inside the package: `evaluate.load("sacrebleu")` would fetch its script from the Hub.
METRIC_PATH = Path(__file__).parent / "evaluate_metrics" / "sacrebleu_chrf"


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str], references_name: str) -> None:
    # sacreBLEU silently scores only the first len(references) hypotheses when the counts differ.
    for name, lines in (("hypotheses", hypotheses), (references_name, references)):
        if isinstance(lines, str) or not all(isinstance(line, str) for line in lines):
            raise ValueError(f"{name} must be a list of strings, got {type(lines).__name__}")
    if not hypotheses or len(hypotheses) != len(references):
        raise ValueError(
            f"need one reference per hypothesis and at least one pair, got {len(hypotheses)} hypotheses "
            f"and {len(references)} {references_name}"
        )


def sacrebleu_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float | str]:
    """Corpus sacreBLEU (13a, cased) and chrF of detokenised hypotheses against one reference each, with signatures."""
    _check_pairs(hypotheses, references, "references")
    bleu, chrf = BLEU(), CHRF()
    return {
        "bleu": bleu.corpus_score(list(hypotheses), [list(references)]).score,
        "chrf": chrf.corpus_score(list(hypotheses), [list(references)]).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


@lru_cache(maxsize=8)
def _moses(lang: str) -> tuple[MosesPunctNormalizer, MosesTokenizer]:
    # perl_parity maps ’ to " as normalize-punctuation.perl does (sacremoses' default maps it to ').
    return MosesPunctNormalizer(lang, perl_parity=True), MosesTokenizer(lang)


def moses_preprocess(lines: Sequence[str], lang: str) -> list[str]:
    """Multi30k's ``tok/`` preprocessing: ``lowercase.perl | normalize-punctuation.perl -l L | tokenizer.perl -l L``.

    Note: the perl normaliser sees each line with its newline, so a sentence-final ``."`` (de, fr) becomes ``".``;
    the newline appended here reproduces that. On every raw Multi30k file this gives the ``tok/`` line exactly.
    """
    normalizer, tokenizer = _moses(lang)
    return [
        tokenizer.tokenize(normalizer.normalize(line.lower() + "\n"), escape=True, return_str=True) for line in lines
    ]


def moses_detokenize(lines: Sequence[str], lang: str) -> list[str]:
    """Undoes the tokenisation and escaping of ``moses_preprocess`` (not its lowercasing): the text form of the
    output of a model trained on ``tok/`` files, for sacreBLEU and for reading."""
    detokenizer = MosesDetokenizer(lang)
    return [detokenizer.detokenize(line.split(), unescape=True) for line in lines]


def multi_bleu(tokenised_hypotheses: Sequence[str], tok_references: Sequence[str]) -> dict[str, float | str]:
    """``multi-bleu.perl``'s corpus BLEU of tokenised text as it is: sacreBLEU with ``tokenize="none"`` and no
    smoothing. For the output of a model trained on ``tok/`` text, this is the literature's figure."""
    _check_pairs(tokenised_hypotheses, tok_references, "tok_references")
    # force: the text is tokenised on purpose, so sacreBLEU's "forgot to detokenize" warning would mislead
    bleu = BLEU(tokenize="none", smooth_method="none", force=True)
    return {
        "bleu": bleu.corpus_score(list(tokenised_hypotheses), [list(tok_references)]).score,
        "bleu_signature": str(bleu.get_signature()),
    }


def tokenized_bleu(hypotheses: Sequence[str], tok_references: Sequence[str], lang: str) -> dict[str, float | str]:
    """Multi30k's tokenised BLEU of text output: ``moses_preprocess`` the hypotheses, then ``multi_bleu``."""
    _check_pairs(hypotheses, tok_references, "tok_references")
    return multi_bleu(moses_preprocess(hypotheses, lang), tok_references)


def load_metric() -> evaluate.EvaluationModule:
    """The packaged sacreBLEU+chrF ``evaluate`` metric, loaded from its local script (works offline)."""
    return evaluate.load(str(METRIC_PATH))


def build_compute_metrics(tokenizer) -> Callable[[EvalPrediction], dict[str, float]]:
    """``compute_metrics`` for ``Seq2SeqTrainer(predict_with_generate=True)``: sacreBLEU, chrF and mean length.

    ``gen_len`` counts the non-pad tokens of each generated sequence (decoder start and eos included), as the
    transformers translation example does.
    """
    pad = tokenizer.pad_token_id
    if pad is None:
        raise ValueError("tokenizer has no pad_token_id; it is needed to replace the -100 label padding")

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        # -100 marks ignored label positions (and the Trainer's padding of predictions across batches).
        preds = np.where(prediction.predictions != -100, prediction.predictions, pad)
        labels = np.where(prediction.label_ids != -100, prediction.label_ids, pad)
        hypotheses = tokenizer.batch_decode(preds, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        scores = sacrebleu_scores(hypotheses, references)
        return {
            "bleu": scores["bleu"],
            "chrf": scores["chrf"],
            "gen_len": float(np.mean(np.count_nonzero(preds != pad, axis=-1))),
        }

    return compute_metrics


__all__ = [
    "METRIC_PATH",
    "build_compute_metrics",
    "load_metric",
    "moses_detokenize",
    "moses_preprocess",
    "multi_bleu",
    "sacrebleu_scores",
    "tokenized_bleu",
]
