"""scripts/ end to end on a tiny Multi30k-style corpus made here: tokenizer, training (also resumed and under
`accelerate launch` with two processes), averaging, evaluation, translation and the Hub folder."""

import gzip
import io
import json
import logging
import math
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import accelerate
import pytest
import torch
from conftest import REPO, gz_lines, script
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hf_vanilla_transformer import VanillaTransformerForConditionalGeneration
from hf_vanilla_transformer.batching import batch_by_tokens
from hf_vanilla_transformer.cli import (
    GenerationArguments,
    ModelArguments,
    build_model,
    load_for_generation,
    parse_args,
)
from hf_vanilla_transformer.data import load_parallel_corpus, tokenize_corpus
from hf_vanilla_transformer.metrics import (
    moses_detokenize,
    moses_preprocess,
    multi_bleu,
    sacrebleu_scores,
    tokenized_bleu,
)
from hf_vanilla_transformer.schedule import noam_lr
from hf_vanilla_transformer.tokenization import train_bpe_tokenizer

EN_DE = {
    "a": "ein",
    "man": "Mann",
    "woman": "Frau",
    "dog": "Hund",
    "cat": "Katze",
    "red": "roter",
    "big": "großer",
    "small": "kleiner",
    "runs": "rennt",
    "sits": "sitzt",
    "on": "auf",
    "the": "der",
    "street": "Straße",
    "grass": "Gras",
}
SIZES = {"train": 200, "val": 12, "test_2016_flickr": 12}
TINY_MODEL = {
    "preset": "tiny",
    "d_model": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "dropout": 0.0,
}


def flags(options: dict) -> list[str]:
    argv = []
    for key, value in options.items():
        argv += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return argv


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: a second thread slows these tiny models down
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Word-by-word en->de "captions" as gzip SPLIT.LANG files, with Multi30k-style tok/ files for one test split."""
    root = tmp_path_factory.mktemp("multi30k")
    (root / "tok").mkdir()
    rng = random.Random(0)
    for split, size in SIZES.items():
        en = [
            " ".join(rng.choice(list(EN_DE)) for _ in range(rng.randint(2, 7))).capitalize() + "." for _ in range(size)
        ]
        de = [" ".join(EN_DE[word.lower().rstrip(".")] for word in line.split()) + "." for line in en]
        for lang, lines in (("en", en), ("de", de)):
            (root / f"{split}.{lang}.gz").write_bytes(gzip.compress("".join(f"{s}\n" for s in lines).encode()))
            if split == "test_2016_flickr":
                tok = moses_preprocess(lines, lang)
                (root / "tok" / f"{split}.lc.norm.tok.{lang}.gz").write_bytes(
                    gzip.compress("".join(f"{s}\n" for s in tok).encode())
                )
    return root


@pytest.fixture(scope="module")
def tokenizer_dir(corpus, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("bpe")
    script("train_tokenizer").main(["--dataset", str(corpus), "--vocab_size", "300", "--output_dir", str(output)])
    return output


def train_options(corpus: Path, output_dir: Path, **overrides) -> dict:
    return {
        "dataset": str(corpus),
        **TINY_MODEL,
        "max_tokens": 200,
        "warmup_steps": 20,
        "lr_scale": 0.3,
        "logging_steps": 20,
        "eval_splits": ["test_2016_flickr"],
        "max_eval_samples": 8,
        "per_device_eval_batch_size": 8,
        "use_cpu": True,
        "report_to": "none",
        "disable_tqdm": True,
        "output_dir": str(output_dir),
        **overrides,
    }


@pytest.fixture(scope="module")
def run(corpus, tokenizer_dir, tmp_path_factory) -> Path:
    """A training run from a JSON argument file: 120 updates, checkpoints every 30, last 3 averaged."""
    output_dir = tmp_path_factory.mktemp("run")
    options = train_options(
        corpus,
        output_dir,
        tokenizer_name_or_path=str(tokenizer_dir),
        max_steps=120,
        save_steps=30,
        average_last=3,
    )
    args_file = output_dir.parent / f"{output_dir.name}.json"
    args_file.write_text(json.dumps(options))
    script("train").main([str(args_file)])
    return output_dir


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def generate_one_by_one(model, tokenizer, lines: list[str], **kwargs) -> list[str]:
    """Reference translations: one sentence per generate() call, so no padding is involved."""
    outputs = []
    for line in lines:
        ids = model.generate(**tokenizer(line, return_tensors="pt"), **kwargs)
        outputs.append(tokenizer.decode(ids[0], skip_special_tokens=True))
    return outputs


def test_train_tokenizer_learns_one_bpe_on_both_languages(corpus, tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    train = load_parallel_corpus(corpus, "en", "de", splits=["train"])["train"]
    expected = train_bpe_tokenizer(list(train["en"]) + list(train["de"]), 300)
    assert tokenizer.get_vocab() == expected.get_vocab()
    assert len(tokenizer) == 300
    for line in [train[0]["en"], train[0]["de"]]:
        ids = tokenizer(line)["input_ids"]
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == line


def test_train_saves_checkpoints_model_average_and_scores(corpus, run):
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [f"checkpoint-{s}" for s in (120, 30, 60, 90)]
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 120
    losses = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in losses] == [20, 40, 60, 80, 100, 120]
    assert losses[-1]["loss"] < losses[0]["loss"] - 1.0
    assert all(0 < entry["nll_loss"] < entry["loss"] for entry in losses)
    assert AutoModelForSeq2SeqLM.from_pretrained(run).config.d_model == 32

    # §6.1 averaging of the last 3 checkpoints
    averaged = load_file(run / "averaged" / "model.safetensors")
    last = [load_file(run / f"checkpoint-{s}" / "model.safetensors") for s in (60, 90, 120)]
    for key, tensor in averaged.items():
        torch.testing.assert_close(tensor, sum(weights[key] for weights in last) / 3, msg=key)

    # results.json beside the scored (averaged) model, scores recomputable from the hypotheses written
    results = json.loads((run / "averaged" / "results.json").read_text())
    training = results.pop("training")  # for the model card
    assert training["command"].startswith(f"python scripts/train.py {run.parent / run.name}.json")
    assert (training["updates"], training["languages"]) == (120, ["en", "de"])
    assert training["hardware"].startswith("1 x CPU") and training["minutes"] >= 0
    assert sorted(results) == ["test_2016_flickr", "val"]
    raw = load_parallel_corpus(corpus, "en", "de", splits=["val", "test_2016_flickr"])
    tok = load_parallel_corpus(corpus / "tok", "en", "de")
    for split, scores in results.items():
        hypotheses = read_lines(run / "averaged" / f"hypotheses.{split}.de.txt")
        assert len(hypotheses) == scores["sentences"] == 8
        assert any(hypotheses), "a trained model writes something"
        expected = sacrebleu_scores(hypotheses, list(raw[split]["de"])[:8])
        assert {k: scores[k] for k in expected} == expected
        assert scores["decoding"] == {
            "num_beams": 4,
            "length_penalty": 0.6,
            "length_penalty_form": "gnmt",
            "max_length_offset": 50,
            "early_stopping": "never",
        }
    assert "tok_bleu" not in results["val"]  # no tok/val files
    hypotheses = read_lines(run / "averaged" / "hypotheses.test_2016_flickr.de.txt")
    expected = tokenized_bleu(hypotheses, list(tok["test_2016_flickr"]["de"])[:8], "de")
    assert results["test_2016_flickr"]["tok_bleu"] == expected["bleu"]


def test_train_resumes_from_the_last_checkpoint(corpus, run, tmp_path, caplog):
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)  # keeps modification times
    first_checkpoint = resumed / "checkpoint-30" / "model.safetensors"
    before = first_checkpoint.stat().st_mtime_ns
    caplog.set_level("INFO")
    options = train_options(corpus, resumed, max_steps=150, save_steps=30, max_eval_samples=2)
    script("train").main(flags(options))  # no tokenizer given: the one saved in output_dir is reused

    assert f"Resuming from {resumed / 'checkpoint-120'}" in caplog.text
    assert "Training a joint BPE" not in caplog.text
    state = json.loads((resumed / "trainer_state.json").read_text())
    assert state["global_step"] == 150
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [20, 40, 60, 80, 100, 120, 140]
    assert first_checkpoint.stat().st_mtime_ns == before  # not retrained from scratch
    assert (resumed / "checkpoint-150").is_dir()


def test_train_goes_on_from_a_trained_model(corpus, run, tmp_path, caplog):
    caplog.set_level("INFO")
    start = run / "averaged"
    options = train_options(corpus, tmp_path / "more", max_steps=3, logging_steps=1, save_strategy="no")
    options = {k: v for k, v in options.items() if k not in TINY_MODEL}  # the trained model's config decides
    script("train").main(flags({**options, "model_name_or_path": str(start), "schedule_start": 120}))

    assert "Training a joint BPE" not in caplog.text
    assert (
        AutoTokenizer.from_pretrained(tmp_path / "more").get_vocab()
        == AutoTokenizer.from_pretrained(start).get_vocab()
    )
    state = json.loads((tmp_path / "more" / "trainer_state.json").read_text())
    lrs = [entry["learning_rate"] for entry in state["log_history"] if "loss" in entry]
    assert lrs == pytest.approx([noam_lr(k, 32, 20, 0.3) for k in (121, 122, 123)], rel=1e-6)
    first = json.loads((tmp_path / "more" / "trainer_state.json").read_text())["log_history"][0]
    before = [e["loss"] for e in json.loads((run / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert first["loss"] < before[0] - 1.0  # it starts from the trained weights, not from new ones
    training = json.loads((tmp_path / "more" / "results.json").read_text())["training"]
    first_stage = json.loads((start / "results.json").read_text())["training"]
    assert training["started_from"] == {"model": str(start)} | first_stage
    assert "--model_name_or_path" in training["command"] and first_stage["updates"] == 120

    with pytest.raises(ValueError, match=r"--model_name_or_path .*averaged fixes the model's config: drop --d_model"):
        script("train").main(flags({**options, "model_name_or_path": str(start), "d_model": 64}))
    with pytest.raises(FileNotFoundError, match="model folder .*nowhere does not exist"):
        script("train").main(flags({**options, "model_name_or_path": str(tmp_path / "nowhere")}))
    with pytest.raises(ValueError, match="schedule_start must be a number of updates >= 0, got -1"):
        script("train").main(flags({**options, "model_name_or_path": str(start), "schedule_start": -1}))


def test_average_checkpoints_script(run, tmp_path):
    output = script("average_checkpoints").main([str(run), "--last", "2", "--output_dir", str(tmp_path / "avg")])
    averaged = load_file(output / "model.safetensors")
    a, b = (load_file(run / f"checkpoint-{s}" / "model.safetensors") for s in (90, 120))
    for key, tensor in averaged.items():
        torch.testing.assert_close(tensor, (a[key] + b[key]) / 2, msg=key)
    assert AutoModelForSeq2SeqLM.from_pretrained(output).config.d_model == 32
    with pytest.raises(ValueError, match="asked for the last 9 checkpoints but .* has only 4"):
        script("average_checkpoints").main([str(run), "--last", "9"])


def test_evaluate_script_writes_hypotheses_and_scores(corpus, run, tmp_path, caplog):
    model_dir = run / "averaged"
    argv = flags(
        {
            "model_name_or_path": str(model_dir),
            "dataset": str(corpus),
            "eval_splits": ["test_2016_flickr", "test_2016_flickr"],  # named twice: translated once
            "max_eval_samples": 6,
            "num_beams": 1,
            "early_stopping": "true",
            "batch_size": 4,
            "output_dir": str(tmp_path),
        }
    )
    with caplog.at_level(logging.INFO, logger="hf_vanilla_transformer.cli"):
        results = script("evaluate_bleu").main(argv)
    assert sum(r.getMessage().startswith("test_2016_flickr (6 sentences)") for r in caplog.records) == 1

    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    sources = list(load_parallel_corpus(corpus, "en", "de", splits=["test_2016_flickr"])["test_2016_flickr"]["en"])
    hypotheses = read_lines(tmp_path / "hypotheses.test_2016_flickr.de.txt")
    assert hypotheses == generate_one_by_one(model, tokenizer, sources[:6], num_beams=1)
    scores = json.loads((tmp_path / "results.json").read_text())["test_2016_flickr"]
    assert scores == results["test_2016_flickr"]
    assert scores["decoding"]["num_beams"] == 1 and scores["sentences"] == 6
    assert scores["decoding"]["early_stopping"] is True
    assert "tok_bleu" in scores
    with pytest.raises(ValueError, match=r"early_stopping must be one of \['never', 'true', 'false'\], got 'yes'"):
        GenerationArguments(early_stopping="yes")
    with pytest.raises(ValueError, match="--output_dir is required"):
        script("evaluate_bleu").main(["--model_name_or_path", "someone/some-model", "--dataset", str(corpus)])


def test_evaluate_script_scores_a_model_of_tokenised_text_as_the_literature_does(corpus, run, tmp_path):
    # DATASET holds Multi30k-style tok/ files: the sources given to the model are lowercased and tokenised.
    options = {
        "model_name_or_path": str(run / "averaged"),
        "dataset": str(corpus / "tok"),
        "raw_references": str(corpus),
        "eval_splits": ["test_2016_flickr"],
        "max_eval_samples": 6,
        "num_beams": 1,
        "output_dir": str(tmp_path / "scores"),
    }
    results = script("evaluate_bleu").main(flags(options))["test_2016_flickr"]

    model_dir = run / "averaged"
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    tok = load_parallel_corpus(corpus / "tok", "en", "de")["test_2016_flickr"][:6]
    raw = load_parallel_corpus(corpus, "en", "de")["test_2016_flickr"][:6]
    output = generate_one_by_one(model, tokenizer, tok["en"], num_beams=1)
    assert read_lines(tmp_path / "scores" / "hypotheses.test_2016_flickr.de.txt") == moses_detokenize(output, "de")
    assert results["bleu"] == sacrebleu_scores(moses_detokenize(output, "de"), raw["de"])["bleu"]
    assert results["tok_bleu"] == multi_bleu(output, tok["de"])["bleu"]  # the tokenised output as it is

    misaligned = tmp_path / "misaligned"
    misaligned.mkdir()
    for lang in ("en", "de"):
        lines = gz_lines(corpus / f"test_2016_flickr.{lang}.gz")[:-1]
        (misaligned / f"test_2016_flickr.{lang}").write_text("".join(f"{line}\n" for line in lines))
    for folder, error, message in (
        (misaligned, ValueError, "has 11 pairs in split 'test_2016_flickr' but dataset .* has 12"),
        (tmp_path / "none", FileNotFoundError, "raw_references .*none is not a directory"),
    ):
        with pytest.raises(error, match=message):
            script("evaluate_bleu").main(flags(options | {"raw_references": str(folder)}))


def test_translate_script_from_file_and_stdin(corpus, run, tmp_path, monkeypatch, capsys):
    model_dir = run / "averaged"
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    sources = ["A man.", "A big red dog runs on the grass.", "", "The cat sits.", "A small woman runs on a street."]
    (tmp_path / "src.en").write_text("\n".join(sources) + "\n")
    translate = script("translate")
    options = {"model_name_or_path": str(model_dir), "batch_size": 2, "num_beams": 2}
    out = translate.main(flags({**options, "input": str(tmp_path / "src.en"), "output": str(tmp_path / "hyp.de")}))
    expected = generate_one_by_one(model, tokenizer, sources, num_beams=2)
    assert read_lines(tmp_path / "hyp.de") == out == expected
    assert any(expected)

    # stdin to stdout; CRLF line ends and a missing final line end are read as in data.py
    monkeypatch.setattr(sys, "stdin", io.StringIO("A man.\r\nThe cat sits."))
    capsys.readouterr()
    translate.main(flags(options))
    assert capsys.readouterr().out == f"{expected[0]}\n{expected[3]}\n"


def test_real_sentences_benchmark_compares_equal_searches_with_marian(corpus, run, tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import real_sentences  # noqa: PLC0415 (benchmarks/ is not a package)

    model_class = VanillaTransformerForConditionalGeneration
    drop, dropped = model_class._drop_sentences, []

    def spy(*args):
        rows, *rest = drop(*args)
        dropped.append(rows is not None)
        return rows, *rest

    output = tmp_path / "out"  # made by the script
    argv = [str(run / "averaged"), "--dataset", str(corpus), "--batch_size", "4", "--repetitions", "2"]
    argv += ["--output_json", str(output / "r.json"), "--output_md", str(output / "r.md")]
    with mock.patch.object(model_class, "_drop_sentences", staticmethod(spy)):
        result = real_sentences.main(argv)
    assert any(dropped)  # sentences did leave the batch
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["ours", "ours_all_rows", "marian", "ours_paper"]
    # the same weights and the same search: the same translations, sentences dropped from the batch or not
    assert rows["ours"]["same_as_marian"] == rows["ours_all_rows"]["same_as_marian"] == SIZES["val"]
    assert all(len(row["seconds"]) == 2 for row in rows.values()) and rows["marian"]["x_marian"] == 1.0
    assert json.loads((output / "r.json").read_text()) == result
    assert f"| ours | {rows['ours']['median_seconds']:.2f} |" in (output / "r.md").read_text()
    with pytest.raises(SystemExit):
        real_sentences.parse_args([str(run / "averaged"), "--batch_size", "0"])


def test_decoding_on_cpu_keeps_freed_blocks_for_reuse(run, tmp_path):
    """translate.py (as evaluate_bleu.py) loads through load_for_generation: malloc tuned on a CPU, not elsewhere."""
    model_dir = run / "averaged"
    with mock.patch("hf_vanilla_transformer.cli.reuse_freed_cpu_memory", return_value=True) as reuse:
        model, _ = load_for_generation(model_dir, torch.device("meta"))
        assert model.device.type == "meta" and reuse.call_count == 0
        model, _ = load_for_generation(model_dir, torch.device("cpu"))
        assert model.device.type == "cpu" and reuse.call_count == 1
        (tmp_path / "src.en").write_text("A man.\n")
        script("translate").main(flags({"model_name_or_path": str(model_dir), "input": str(tmp_path / "src.en")}))
        assert reuse.call_count == 2


EXPECTED_HUB_FILES = [
    "README.md",
    "config.json",
    "configuration_vanilla_transformer.py",
    "generation_config.json",
    "model.safetensors",
    "modeling_vanilla_transformer.py",
    "pipeline_vanilla_transformer.py",
    "tokenizer.json",
    "tokenizer_config.json",
]

REMOTE_LOAD = """
import json, sys
from transformers import AutoModelForSeq2SeqLM, pipeline
folder = sys.argv[1]
model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True)
translator = pipeline("translation", model=folder, trust_remote_code=True)
print(json.dumps({"class": type(model).__module__ + "." + type(model).__name__,
                  "text": translator("A big dog runs.")[0]["translation_text"]}))
"""


def test_push_to_hub_dry_run_writes_a_self_contained_repo(run, tmp_path):
    model_dir = run / "averaged"
    push = script("push_to_hub")
    folder = push.main([str(model_dir), "--repo_id", "me/tiny", "--dry_run", str(tmp_path / "up")])
    assert sorted(p.name for p in folder.iterdir()) == EXPECTED_HUB_FILES
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vanilla_transformer.VanillaTransformerConfig",
        "AutoModel": "modeling_vanilla_transformer.VanillaTransformerModel",
        "AutoModelForSeq2SeqLM": "modeling_vanilla_transformer.VanillaTransformerForConditionalGeneration",
    }
    assert config["custom_pipelines"]["translation"]["impl"] == "pipeline_vanilla_transformer.TranslationPipeline"
    generation = json.loads((folder / "generation_config.json").read_text())
    assert (generation["num_beams"], generation["length_penalty_form"], generation["max_length_offset"]) == (
        4,
        "gnmt",
        50,
    )
    # the card names the repo and reports the scores of MODEL_DIR/results.json
    card = (folder / "README.md").read_text()
    scores = json.loads((model_dir / "results.json").read_text())
    assert 'pipeline("translation", model="me/tiny", trust_remote_code=True)' in card
    assert f"| val | {scores['val']['bleu']:.2f} | {scores['val']['chrf']:.2f} | - |" in card
    assert f"{scores['training']['updates']} updates" in card

    # the folder generates what the trained model generates, in this process and as remote code elsewhere
    trained = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(folder)
    batch = tokenizer(["A big dog runs.", "The woman sits on the grass."], return_tensors="pt", padding=True)
    assert torch.equal(reloaded.generate(**batch), trained.generate(**batch))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    remote = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD, str(folder)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert remote.returncode == 0, remote.stderr[-3000:]
    loaded = json.loads(remote.stdout.strip().splitlines()[-1])
    assert not loaded["class"].startswith("hf_vanilla_transformer")  # the copied file, not our package
    assert loaded["class"].endswith("VanillaTransformerForConditionalGeneration")
    single = tokenizer("A big dog runs.", return_tensors="pt")
    assert loaded["text"] == tokenizer.decode(trained.generate(**single)[0], skip_special_tokens=True)

    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        push.main([str(model_dir), "--repo_id", "me/tiny", "--dry_run", str(folder)])


def test_push_to_hub_uploads_the_same_folder(run, monkeypatch):
    model_dir = run / "averaged"
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, private, exist_ok):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    push = script("push_to_hub")
    monkeypatch.setattr(push, "HfApi", FakeApi)
    push.main([str(model_dir), "--repo_id", "me/tiny", "--private"])
    assert calls == [("create_repo", "me/tiny", True, True), ("upload_folder", "me/tiny", EXPECTED_HUB_FILES)]


def test_train_rejects_bad_arguments(corpus, tokenizer_dir, tmp_path):
    options = train_options(corpus, tmp_path / "bad", tokenizer_name_or_path=str(tokenizer_dir), max_steps=1)
    with pytest.raises(ValueError, match="Unknown preset 'huge'; known presets: base, big, small, tiny"):
        script("train").main(flags({**options, "preset": "huge"}))
    with pytest.raises(FileNotFoundError, match="corpus directory .*missing does not exist"):
        script("train").main(flags({**options, "dataset": str(tmp_path / "missing")}))
    with pytest.raises(FileNotFoundError, match="argument file .*nope.json not found"):
        script("train").main([str(tmp_path / "nope.json")])


def test_attention_biases_are_a_model_argument_off_by_default(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    for argv, biased in (([], False), (["--attention_bias", "true"], True)):
        (model_args,) = parse_args((ModelArguments,), ["--d_model", "32", *argv])
        model = build_model(model_args, tokenizer)
        assert model.config.attention_bias is biased
        assert (model.model.decoder.layers[0].encoder_attn.out_proj.bias is not None) is biased


def test_train_leaves_the_process_group_after_saving_and_before_scoring(corpus, tokenizer_dir, tmp_path, monkeypatch):
    output_dir = tmp_path / "ended"
    seen = []
    # what was on disk when the run ended its distributed state: the saved model, and no scores yet
    monkeypatch.setattr(
        accelerate.Accelerator,
        "end_training",
        lambda self: seen.append(sorted(path.name for path in output_dir.iterdir())),
    )
    options = train_options(
        corpus,
        output_dir,
        tokenizer_name_or_path=str(tokenizer_dir),
        max_steps=2,
        save_strategy="no",
        max_eval_samples=2,
    )
    script("train").main(flags(options))
    assert len(seen) == 1 and "model.safetensors" in seen[0] and "results.json" not in seen[0]
    assert "val" in json.loads((output_dir / "results.json").read_text())


def test_accelerate_launch_trains_on_two_processes(corpus, tmp_path):
    output_dir = tmp_path / "ddp"
    options = train_options(
        corpus,
        output_dir,
        vocab_size=300,
        max_tokens=100,
        num_train_epochs=1,
        save_strategy="no",
        max_eval_samples=2,
        log_level_replica="info",
        seed=7,
    )
    # accelerate's --cpu runs one process; --multi_gpu starts torchrun, and --use_cpu (in options) makes it gloo.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [*launch, str(REPO / "scripts" / "train.py"), *flags(options)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    finished = dict(re.findall(r"Process (\d) of 2 finished training after (\d+) updates", done.stderr))
    # the tokenizer the main process trained (the other one loaded it), and the batches both built from it
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    train = tokenize_corpus(load_parallel_corpus(corpus, "en", "de", splits=["train"]), tokenizer, "en", "de")
    batches = batch_by_tokens(train["train"]["src_len"], train["train"]["tgt_len"], 100, seed=7, epoch=0)
    assert finished == {"0": str(math.ceil(len(batches) / 2)), "1": str(math.ceil(len(batches) / 2))}
    assert AutoModelForSeq2SeqLM.from_pretrained(output_dir).config.vocab_size == len(tokenizer)
    assert json.loads((output_dir / "results.json").read_text())["val"]["sentences"] == 2


def test_scripts_name_a_missing_or_incomplete_model_folder(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder .*no-such-model does not exist"):
        script("translate").main(["--model_name_or_path", str(tmp_path / "no-such-model"), "--input", os.devnull])
    incomplete = tmp_path / "incomplete"
    shutil.copytree(run / "averaged", incomplete)
    (incomplete / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="is not a complete model folder: it has no model.safetensors"):
        script("evaluate_bleu").main(["--model_name_or_path", str(incomplete), "--eval_splits", "val"])


@pytest.mark.parametrize("config", sorted((REPO / "scripts" / "configs").glob("*.json")), ids=lambda path: path.name)
def test_every_committed_config_is_a_valid_train_argument_file(config):
    """A misspelt key would otherwise stop a documented command only after its data and tokenizer were loaded."""
    from hf_vanilla_transformer.cli import DataArguments
    from hf_vanilla_transformer.trainer import VanillaSeq2SeqTrainingArguments

    model_args, data_args, training_args = parse_args(
        (ModelArguments, DataArguments, VanillaSeq2SeqTrainingArguments), [str(config)]
    )
    raw = json.loads(config.read_text())
    parsed = {**vars(model_args), **vars(data_args), **training_args.to_dict()}
    for key, value in raw.items():
        assert parsed[key] == value, key
