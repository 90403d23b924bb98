"""sacreBLEU and chrF as one offline `evaluate` metric, built on the installed sacrebleu package.

Load it with ``evaluate.load(PATH)``, where PATH is this folder or this file (``hf_vanilla_transformer.metrics``
has it as ``METRIC_PATH``): unlike ``evaluate.load("sacrebleu")`` nothing is fetched from the Hub. The script
imports nothing from hf_vanilla_transformer, so the folder also works on its own (copied or pushed to the Hub).
"""

import datasets
import evaluate
from sacrebleu.metrics import BLEU, CHRF

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    pages = "186--191",
}
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovi{\\'c}, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    year = "2015",
    pages = "392--395",
}
"""

_DESCRIPTION = """\
Corpus-level sacreBLEU (cased, 13a tokenisation, exponential smoothing) and chrF (character 6-grams, beta 2) of
detokenised hypotheses against one reference each, computed by the sacrebleu package with its default settings,
with the signatures that make the numbers reproducible.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): detokenised system outputs.
    references (list of str): one detokenised reference per prediction.
Returns:
    bleu (float): corpus BLEU, 0-100.
    chrf (float): corpus chrF, 0-100.
    bleu_signature (str), chrf_signature (str): sacrebleu signatures of the two scores.
Examples:
    >>> metric = evaluate.load("hf_vanilla_transformer/evaluate_metrics/sacrebleu_chrf")
    >>> metric.compute(predictions=["The cat sat on the mat."], references=["The cat sat on the mat."])["bleu"]
    100.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SacrebleuChrf(evaluate.Metric):
    """sacreBLEU (Post 2018) and chrF (Popović 2015) from the sacrebleu package."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            homepage="https://github.com/mjpost/sacrebleu",
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/W18-6319", "https://aclanthology.org/W15-3049"],
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float | str]:
        bleu, chrf = BLEU(), CHRF()
        return {
            "bleu": bleu.corpus_score(predictions, [references]).score,
            "chrf": chrf.corpus_score(predictions, [references]).score,
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
        }
