"""Model cards (README.md with Hub metadata) for trained models, from their config and measured scores.

`results` is what `cli.evaluate_splits` writes to results.json: per split sacreBLEU/chrF (with signatures) and,
for Multi30k, tokenised BLEU; plus an optional "training" entry (command, hardware, minutes, updates).
"""

import json
import os
import tempfile
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

# Not a Hub id: the Hub's copies of Multi30k (e.g. bentrevett/multi30k) lack French and Czech and name their splits
# train/validation/test. The card names the source, github.com/multi30k/dataset, in its text.
DATASET_ID = "multi30k"

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "cs": "Czech"}

# Published figures to compare with (tokenised BLEU on Multi30k test_2016_flickr, text-only models).
PUBLISHED = {
    ("en", "de"): "41.02 tokenised BLEU, Transformer-Tiny (Wu et al., ACL 2021, beam 5, last 10 checkpoints averaged)",
    ("de", "en"): "36.5 BLEU of a popular tutorial Transformer with its own tokenisation (not directly comparable)",
}

_PAPER_ARCHITECTURE = (
    "post-LN, sinusoidal positions, ReLU FFN, embeddings scaled by sqrt(d_model) and shared three ways"
)
_OUTPUT_PROJECTION = "The output projection has no bias (it is the tied embedding)."


def architecture(attention_bias: bool) -> str:
    """The card's architecture line: the paper's §3, with or without biases on the attention projections."""
    if not attention_bias:
        return (
            f"- Architecture: exactly §3 of the paper ({_PAPER_ARCHITECTURE}, attention projections W^Q, W^K, W^V, "
            f"W^O without biases). {_OUTPUT_PROJECTION}"
        )
    return (
        f"- Architecture: §3 of the paper ({_PAPER_ARCHITECTURE}), except that the attention projections W^Q, W^K, "
        "W^V, W^O carry biases, as fairseq's and Marian's do (`--attention_bias true`; the paper's have none). "
        f"{_OUTPUT_PROJECTION}"
    )


DEPARTURES = """\
- Initialisation (not given in the paper): Xavier-uniform projections, embeddings N(0, d_model^-0.5).
- Decoding: beam 4, GNMT length penalty ((5+|Y|)/6)^0.6 (transformers' own `length_penalty` divides by |Y|^alpha,
  which is not the paper's), maximum output length = source length + 50, and a sentence's search ends once no
  running hypothesis can still win (§6.1's "terminate early when possible": transformers' `early_stopping="never"`).
- Data: Multi30k (29k sentence pairs) instead of WMT 2014; one joint byte-level BPE vocabulary."""


def _eval_results(src: str, tgt: str, results: dict) -> list[EvalResult]:
    """One `EvalResult` per split and metric, for the Hub's model-index."""
    entries = []
    for split, scores in results.items():
        if split == "training":
            continue
        metrics = [("bleu", "sacreBLEU", scores["bleu"]), ("chrf", "chrF", scores["chrf"])]
        if "tok_bleu" in scores:
            metrics.append(("bleu", "tokenised BLEU (tok/ references)", scores["tok_bleu"]))
        entries += [
            EvalResult(
                task_type="translation",
                task_name=f"Translation {src}-{tgt}",
                dataset_type=DATASET_ID,
                dataset_name="Multi30k",
                dataset_split=split,
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=round(value, 2),
            )
            for metric_type, metric_name, value in metrics
        ]
    return entries


def render_model_card(config: dict, results: dict, name: str) -> str:
    """README.md text: Hub YAML metadata, usage, training, scores and the comparison with published figures."""
    src, tgt = results.get("training", {}).get("languages", ["en", "de"])
    metadata = ModelCardData(
        language=[src, tgt],
        license="cc-by-nc-4.0",
        library_name="transformers",
        pipeline_tag="translation",
        datasets=[DATASET_ID],
        metrics=["bleu", "chrf"],
        tags=["translation", "vanilla-transformer", "attention-is-all-you-need"],
        model_name=name,
        eval_results=_eval_results(src, tgt, results),
    )
    rows = [
        f"| {split} | {s['bleu']:.2f} | {s['chrf']:.2f} | {s['tok_bleu']:.2f} |"
        if "tok_bleu" in s
        else f"| {split} | {s['bleu']:.2f} | {s['chrf']:.2f} | - |"
        for split, s in results.items()
        if split != "training"
    ]
    signatures = sorted({s["bleu_signature"] for split, s in results.items() if split != "training"})
    training = results.get("training", {})
    size = (
        f"{config['encoder_layers']}+{config['decoder_layers']} layers, d_model {config['d_model']}, "
        f"d_ff {config['encoder_ffn_dim']}, {config['encoder_attention_heads']} heads, dropout {config['dropout']}, "
        f"vocabulary {config['vocab_size']}"
    )
    published = PUBLISHED.get((src, tgt), "no directly comparable published figure")
    resumed = (
        f" (the last run of the command only: it resumed the training at update {training['resumed_from_update']})"
        if "resumed_from_update" in training
        else ""
    )
    start = training.get("started_from")
    started_from = (
        f"- Started from `{start['model']}`, trained with `{start.get('command', 'a command not recorded')}` "
        f"({start.get('hardware', 'hardware not recorded')}, {start.get('minutes', '?')} minutes, "
        f"{start.get('updates', '?')} updates); then this run:\n"
        if start
        else ""
    )
    return f"""---
{metadata.to_yaml()}
---

# {name}

The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), {LANGUAGE_NAMES.get(src, src)} to
{LANGUAGE_NAMES.get(tgt, tgt)}, trained on Multi30k with the
`hf_vanilla_transformer` package ({size}).

```python
from transformers import pipeline

translate = pipeline("translation", model="{name}", trust_remote_code=True)
print(translate("A man rides a bicycle down the street."))
```

`trust_remote_code=True` runs the Python files in this repository: `configuration_vanilla_transformer.py`,
`modeling_vanilla_transformer.py` and `pipeline_vanilla_transformer.py`, which import only torch and
transformers. The weights are safetensors.

## Scores

| split | sacreBLEU | chrF | tokenised BLEU |
| --- | --- | --- | --- |
{chr(10).join(rows)}

sacreBLEU is cased and detokenised, against the raw references ({", ".join(f"`{s}`" for s in signatures)}).
Tokenised BLEU lowercases, normalises punctuation and Moses-tokenises the output and scores it against
Multi30k's `tok/` references, as multimodal-MT papers do. Published: {published}.
Checkpoints and settings were chosen on `val` only.

## Training

{started_from}- Command: `{training.get("command", "not recorded")}`
- Hardware: {training.get("hardware", "not recorded")}
- Wall time: {training.get("minutes", "not recorded")} minutes, {training.get("updates", "?")} updates, \
{training.get("target_tokens_per_s", "?")} target tokens/s{resumed}

## Departures from the paper

{architecture(config.get("attention_bias", True))}
{DEPARTURES}

## Data and licence

Multi30k (Elliott et al., 2016; 2017; Barrault et al., 2018; task 1 of github.com/multi30k/dataset, splits `train`,
`val`, `test_2016_flickr`, `test_2017_flickr`) is derived from Flickr30K captions and provided
for non-commercial research and education; these weights carry the same restriction (CC BY-NC 4.0).
"""


def write_model_card(model_dir: str | Path, results: dict, name: str | None = None) -> Path:
    """Writes MODEL_DIR/README.md (atomically) from its config.json and `results`."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    card = render_model_card(config, results, name or model_dir.name)
    path = model_dir / "README.md"
    # Written beside and renamed over: a crash never leaves a half-written card where a good one was.
    with tempfile.NamedTemporaryFile("w", dir=model_dir, suffix=".tmp", delete=False, encoding="utf-8") as file:
        file.write(card)
    try:
        os.replace(file.name, path)
    finally:
        Path(file.name).unlink(missing_ok=True)
    return path
