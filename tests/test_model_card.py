"""Model cards: Hub metadata that parses back to the measured scores, and an atomic write."""

import json
import os

import pytest
from huggingface_hub import ModelCard

from hf_vanilla_transformer import VanillaTransformerConfig
from hf_vanilla_transformer.model_card import write_model_card

RESULTS = {
    "val": {"bleu": 38.123, "chrf": 64.5, "bleu_signature": "nrefs:1|case:mixed|tok:13a", "tok_bleu": 40.01},
    "test_2016_flickr": {"bleu": 37.0, "chrf": 63.25, "bleu_signature": "nrefs:1|case:mixed|tok:13a"},
    "training": {
        "command": "python scripts/train.py --preset tiny",
        "hardware": "2 CPU cores",
        "minutes": 25.0,
        "updates": 1200,
        "languages": ["en", "de"],
    },
}


@pytest.fixture
def model_dir(tmp_path):
    VanillaTransformerConfig.from_preset("tiny", vocab_size=8000).save_pretrained(tmp_path)
    return tmp_path


def test_card_metadata_holds_the_measured_scores(model_dir):
    card = ModelCard.load(write_model_card(model_dir, RESULTS, name="tiny-en-de"))
    assert card.data.language == ["en", "de"] and card.data.pipeline_tag == "translation"
    assert card.data.license == "cc-by-nc-4.0" and card.data.datasets == ["multi30k"]
    scores = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert scores == {
        ("val", "sacreBLEU"): 38.12,
        ("val", "chrF"): 64.5,
        ("val", "tokenised BLEU (tok/ references)"): 40.01,
        ("test_2016_flickr", "sacreBLEU"): 37.0,
        ("test_2016_flickr", "chrF"): 63.25,
    }
    assert "| test_2016_flickr | 37.00 | 63.25 | - |" in card.text
    assert "`python scripts/train.py --preset tiny`" in card.text and "2 CPU cores" in card.text
    assert "4+4 layers, d_model 128, d_ff 256, 4 heads, dropout 0.3, vocabulary 8000" in card.text
    assert "41.02" in card.text  # the published En-De figure to compare with
    assert "github.com/multi30k/dataset" in card.text  # where the data came from, not being a Hub id


def test_a_failed_write_keeps_the_previous_card(model_dir, monkeypatch):
    write_model_card(model_dir, RESULTS)
    before = (model_dir / "README.md").read_text()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_model_card(model_dir, {**RESULTS, "val": {**RESULTS["val"], "bleu": 1.0}})
    assert (model_dir / "README.md").read_text() == before
    assert not list(model_dir.glob("*.tmp"))
    assert json.loads((model_dir / "config.json").read_text())["d_model"] == 128


def test_a_resumed_runs_card_says_its_time_is_the_last_runs(model_dir):
    training = RESULTS["training"] | {"updates": 400, "resumed_from_update": 300}
    card = ModelCard.load(write_model_card(model_dir, RESULTS | {"training": training}))
    assert "(the last run of the command only: it resumed the training at update 300)" in card.text
    assert "the last run of the command only" not in ModelCard.load(write_model_card(model_dir, RESULTS)).text


def test_a_card_gives_both_stages_of_a_model_trained_on_from_another(model_dir):
    first = {"model": "runs/first/averaged", "command": "python scripts/train.py --bf16 true", "hardware": "1 x GPU"}
    training = RESULTS["training"] | {"started_from": first | {"minutes": 7.8, "updates": 8796}}
    text = ModelCard.load(write_model_card(model_dir, RESULTS | {"training": training})).text
    assert (
        "- Started from `runs/first/averaged`, trained with `python scripts/train.py --bf16 true` (1 x GPU, 7.8 "
        "minutes, 8796 updates); then this run:\n- Command: `python scripts/train.py --preset tiny`"
    ) in text
    assert "Started from" not in ModelCard.load(write_model_card(model_dir, RESULTS)).text


@pytest.mark.parametrize("attention_bias", [False, True])
def test_the_card_says_whether_the_attention_projections_carry_biases(tmp_path, attention_bias):
    VanillaTransformerConfig.from_preset("tiny", vocab_size=8000, attention_bias=attention_bias).save_pretrained(
        tmp_path
    )
    text = ModelCard.load(write_model_card(tmp_path, RESULTS)).text
    assert ("W^Q, W^K, W^V, W^O without biases" in text) is not attention_bias
    assert ("W^Q, W^K, W^V, W^O carry biases" in text) is attention_bias


def test_a_card_for_a_config_from_before_attention_bias_says_biases(model_dir):
    """Configs saved before the field existed describe models with biases (see `VanillaTransformerConfig`)."""
    config = json.loads((model_dir / "config.json").read_text())
    del config["attention_bias"]
    (model_dir / "config.json").write_text(json.dumps(config))
    assert "W^Q, W^K, W^V, W^O carry biases" in ModelCard.load(write_model_card(model_dir, RESULTS)).text
