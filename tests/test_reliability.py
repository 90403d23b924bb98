"""Issue 5, reliability: a killed training resumes to the same weights, bad input gets a clear error, generation
holds its properties on arbitrary text, and weights load only from safetensors.

The error messages asserted here are the ones the README's "Errors you may meet" table quotes.
"""

import ast
import gzip
import io
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import MULTI30K, REPO, make_tiny_model, script
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM

from hf_vanilla_transformer.cli import (
    DataArguments,
    last_complete_checkpoint,
    load_model_and_tokenizer,
    training_summary,
    translate,
)
from hf_vanilla_transformer.tokenization import train_bpe_tokenizer

SENTENCES = [
    "A man runs on the street.",
    "Ein Mann rennt auf der Straße.",
    "Two dogs play in the grass.",
    "Zwei Hunde spielen im Gras.",
    "A woman with a red hat sits.",
    "Eine Frau mit rotem Hut sitzt.",
]
UNUSUAL = [
    "A dog 🐕 runs 🏃‍♀️ fast 🇩🇪.",  # emoji, a ZWJ sequence and a flag
    "Cafe\u0301 na\u0308ive Z\u0327",  # combining accents
    "שלום עולם, مرحبا بالعالم",  # right-to-left scripts
    "\u200f\u202eRTL override\u202c and a zero\u200bwidth space",
    "日本語のテキスト and 한국어",
]
OFFSET = 6  # max_length_offset of the tests: outputs of random models run to the limit, so keep it short


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(SENTENCES * 3, 280)


def tiny_model(tokenizer, **overrides):
    """A random tiny model whose outputs vary with the input (init_std 0.5), decoding up to source + OFFSET."""
    model = make_tiny_model(vocab_size=len(tokenizer), init_std=0.5, **overrides)
    model.generation_config.max_length_offset = OFFSET
    return model


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer, max_position_embeddings=16)


@pytest.fixture(scope="module")
def model_dir(model, tokenizer, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def copy_model_dir(model_dir: Path, destination: Path) -> Path:
    shutil.copytree(model_dir, destination)
    return destination


def alone(model, tokenizer, lines, **kwargs) -> list[str]:
    return [translate(model, tokenizer, [line], **kwargs)[0] for line in lines]


# --- bad input to translate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("num_beams", [1, 4])
def test_empty_and_whitespace_lines_in_a_batch_translate_as_alone(model, tokenizer, num_beams):
    lines = ["", "A man runs on the street.", "   ", " \t ", "Two dogs.", ""]
    assert tokenizer("")["input_ids"] == [tokenizer.eos_token_id]  # an empty line is </s> alone, no crash
    outputs = translate(model, tokenizer, lines, batch_size=len(lines), num_beams=num_beams)
    assert len(outputs) == len(lines) and all(isinstance(out, str) for out in outputs)
    assert outputs == alone(model, tokenizer, lines, num_beams=num_beams)
    assert outputs[0] == outputs[-1]


def test_sinusoidal_model_translates_inputs_longer_than_max_position_embeddings(model, tokenizer):
    long = " ".join(SENTENCES * 3)
    ids = tokenizer(long, return_tensors="pt")
    assert ids["input_ids"].shape[1] > model.config.max_position_embeddings == 16
    generated = model.generate(**ids, num_beams=1)
    assert generated.shape[1] <= ids["input_ids"].shape[1] + OFFSET + 1  # + the decoder start
    assert translate(model, tokenizer, [long], num_beams=1) == [
        tokenizer.decode(generated[0], skip_special_tokens=True)
    ]


def test_learned_positions_refuse_inputs_and_outputs_longer_than_max_position_embeddings(tokenizer):
    model = tiny_model(tokenizer, max_position_embeddings=16, position_embedding_type="learned")
    long = " ".join(SENTENCES * 3)
    length = len(tokenizer(long)["input_ids"])
    with pytest.raises(ValueError, match=rf"^Sequence of length {length} is longer than max_position_embeddings=16 "):
        translate(model, tokenizer, [long], num_beams=1)
    # A short source whose output limit (source length + offset) passes 16 positions stops at the last position
    # (the start token + 16 tokens, the last predicted from position 15) ...
    model.generation_config.max_length_offset = 50
    sources = tokenizer(["A man."], return_tensors="pt")
    out = model.generate(**sources, num_beams=1, suppress_tokens=[model.config.eos_token_id])
    assert out.shape[1] == 17
    # ... while an explicit max_new_tokens beyond them is the same clear error, raised in the decoder.
    with pytest.raises(ValueError, match="^Sequence of length 17 is longer than max_position_embeddings=16 of this"):
        model.generate(**sources, num_beams=1, suppress_tokens=[model.config.eos_token_id], max_new_tokens=17)


def test_unusual_unicode_translates_to_strings_and_round_trips_through_the_tokenizer(model, tokenizer):
    for text in UNUSUAL:
        assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    outputs = translate(model, tokenizer, UNUSUAL, num_beams=4)
    assert all(isinstance(out, str) for out in outputs)
    assert outputs == alone(model, tokenizer, UNUSUAL, num_beams=4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_beams": 0}, "^num_beams must be an integer >= 1, got 0$"),
        ({"max_length_offset": -1}, "^max_length_offset must be an integer >= 0, got -1$"),
        (
            {"num_beams": 4, "num_return_sequences": 2},
            r"^translate returns one translation per line: num_return_sequences must be 1, got 2 \(call "
            r"model.generate for n-best lists\)$",
        ),
        ({"max_new_tokens": 0}, r"^`max_new_tokens` must be greater than 0, but is 0.$"),
        ({"length_penalty_form": "log"}, "^`length_penalty_form` must be 'hf' or 'gnmt', got 'log'.$"),
    ],
)
def test_impossible_generation_settings_in_translate(model, tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        translate(model, tokenizer, ["A man."], **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_beams": 2, "num_return_sequences": 3}, r"^`num_return_sequences` \(3\) has to be smaller or equal to "),
        ({"num_beams": 1, "num_return_sequences": 2}, "^Greedy methods .* do not support `num_return_sequences`"),
        ({"num_beams": 0}, "^num_beams must be an integer >= 1, got 0$"),  # ours: transformers divides by it
        ({"num_beams": -1}, "^num_beams must be an integer >= 1, got -1$"),
    ],
)
def test_impossible_generation_settings_in_generate_are_clear_errors(model, tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate(**tokenizer(["A man."], return_tensors="pt"), **kwargs)


# --- bad input to scripts/translate.py ----------------------------------------------------------------------


def test_translate_script_keeps_empty_whitespace_and_unicode_lines(model, tokenizer, model_dir, tmp_path):
    lines = ["", "A man runs.", "  ", *UNUSUAL, ""]
    source = tmp_path / "src.txt"
    source.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    argv = ["--model_name_or_path", str(model_dir), "--input", str(source), "--output", str(tmp_path / "hyp.txt")]
    out = script("translate").main([*argv, "--num_beams", "1", "--batch_size", "3"])
    assert out == alone(model, tokenizer, lines, num_beams=1)
    assert len(out) == len(lines)


@pytest.mark.parametrize("where", ["file", "stdin"])
def test_translate_script_names_the_line_of_non_utf8_input(model_dir, tmp_path, monkeypatch, where):
    raw = "A man.\nÄ dog.\n".encode() + b"Caf\xe9 latin-1\n"
    argv = ["--model_name_or_path", str(model_dir)]
    if where == "file":
        (tmp_path / "src.txt").write_bytes(raw)
        argv += ["--input", str(tmp_path / "src.txt")]
    else:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    name = str(tmp_path / "src.txt") if where == "file" else "stdin"
    with pytest.raises(ValueError, match=rf"^{name} is not valid UTF-8: line 3 has the byte\(s\) b'\\xe9'$"):
        script("translate").main(argv)


# --- bad model folders ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda raw: raw[: len(raw) // 2], "incomplete metadata, file not fully covered"),
        (lambda raw: b"\x00" * 100, "invalid JSON in header"),
        (lambda raw: b"", "header too small"),
    ],
    ids=["truncated", "garbage", "empty"],
)
def test_corrupted_or_truncated_safetensors_names_the_file(model_dir, tmp_path, damage, reason):
    folder = copy_model_dir(model_dir, tmp_path / "damaged")
    weights = folder / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(ValueError, match=rf"^{weights} is truncated or corrupted \(Error while deserializing header: "
                       rf"{reason}.*\); copy or download it again$"):  # fmt: skip
        load_model_and_tokenizer(folder)


def test_tokenizer_that_does_not_match_the_model_is_refused(tokenizer, tmp_path):
    small = tmp_path / "small-vocab"
    make_tiny_model(vocab_size=len(tokenizer) - 10).save_pretrained(small)
    tokenizer.save_pretrained(small)
    with pytest.raises(ValueError, match=f"^The tokenizer has {len(tokenizer)} tokens but config.vocab_size is "
                       f"{len(tokenizer) - 10}: the model could not embed every token id.$"):  # fmt: skip
        load_model_and_tokenizer(small)
    other_eos = tmp_path / "other-eos"
    make_tiny_model(vocab_size=len(tokenizer), eos_token_id=3).save_pretrained(other_eos)
    tokenizer.save_pretrained(other_eos)
    with pytest.raises(ValueError, match=r"^tokenizer.eos_token_id is 2 but config.eos_token_id is 3.$"):
        load_model_and_tokenizer(other_eos)


@pytest.mark.skipif(not MULTI30K.is_dir(), reason=f"needs {MULTI30K}")
def test_unknown_language_code_lists_the_corpus_languages():
    data = DataArguments(dataset=str(MULTI30K), source_lang="en", target_lang="xx")
    with pytest.raises(ValueError, match=rf"^unknown language code 'xx': no SPLIT.xx\[.gz\] files in {MULTI30K} "
                       r"\(languages there: cs, de, en, fr\)$"):  # fmt: skip
        data.load(["val"])


# --- safe loading -----------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs os.mkdir(marker): proof that a loader unpickled the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_folder_with_only_pytorch_model_bin_is_never_unpickled(model_dir, tmp_path):
    folder = copy_model_dir(model_dir, tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(
        FileNotFoundError, match=r"pickled is not a complete model folder: it has no model.safetensors"
    ):
        load_model_and_tokenizer(folder)
    # what load_model_and_tokenizer asks of transformers, for Hub names too
    with pytest.raises(OSError, match=r"Error no file named model.safetensors found in directory .*pickled\.$"):
        AutoModelForSeq2SeqLM.from_pretrained(folder, use_safetensors=True)
    # transformers' default would read the .bin, but only with torch.load(weights_only=True), which refuses it
    with pytest.raises(Exception, match="Weights only load failed"):
        AutoModelForSeq2SeqLM.from_pretrained(folder)
    assert not marker.exists()


def _python_files() -> list[Path]:
    return sorted([*(REPO / "hf_vanilla_transformer").rglob("*.py"), *(REPO / "scripts").glob("*.py")])


def test_package_and_scripts_never_unpickle():
    loads, pickles = [], []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                weights_only = [k for k in node.keywords if k.arg == "weights_only"]
                if not (weights_only and ast.literal_eval(weights_only[0].value) is True):
                    loads.append(f"{path}:{node.lineno}")
            names = [a.name for a in node.names] if isinstance(node, ast.Import | ast.ImportFrom) else []
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle") for n in [*names, module or ""]):
                pickles.append(f"{path}:{node.lineno}")
    assert loads == [], "torch.load without weights_only=True"
    assert pickles == [], "pickle imported"


REMOTE_CODE = ("configuration", "modeling", "pipeline")


@pytest.mark.parametrize("kind", REMOTE_CODE)
def test_remote_code_files_import_only_torch_transformers_and_the_standard_library(kind):
    path = REPO / "hf_vanilla_transformer" / f"{kind}_vanilla_transformer.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." + node.module if node.level else node.module.split(".")[0])
    siblings = {f".{k}_vanilla_transformer" for k in REMOTE_CODE}
    # huggingface_hub: the `strict` config decorator that transformers' own configs use (a transformers dependency)
    assert imported - sys.stdlib_module_names - siblings <= {"torch", "transformers", "huggingface_hub"}


# --- property tests -----------------------------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)  # any text a str can hold in UTF-8


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXT, min_size=1, max_size=3))
def test_generate_never_raises_and_stops_within_source_length_plus_offset(model, tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    generated = model.generate(**batch, num_beams=1)
    source_lengths = batch["attention_mask"].sum(-1)
    for row, source_length in zip(generated, source_lengths, strict=True):
        eos = (row[1:] == tokenizer.eos_token_id).nonzero()
        length = int(eos[0]) + 1 if len(eos) else len(row) - 1  # tokens after the decoder start, </s> included
        assert length <= int(source_length) + OFFSET
    assert generated.shape[1] <= int(source_lengths.max()) + OFFSET + 1


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXT, min_size=2, max_size=4), num_beams=st.sampled_from([1, 4]))
def test_padding_and_batching_never_change_a_translation(model, tokenizer, texts, num_beams):
    assert translate(model, tokenizer, texts, num_beams=num_beams) == alone(
        model, tokenizer, texts, num_beams=num_beams
    )


# --- interrupted training -------------------------------------------------------------------------------------------

EN_DE = {"a": "ein", "man": "Mann", "dog": "Hund", "red": "roter", "runs": "rennt", "on": "auf", "grass": "Gras"}
TRAIN_FLAGS = {
    "preset": "tiny",
    "d_model": 16,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "vocab_size": 280,  # the smallest byte-level BPE holds 260
    "max_tokens": 100,  # 120 pairs -> 27 batches: max_steps 30 crosses into a second epoch
    "warmup_steps": 10,
    "save_steps": 5,
    "logging_steps": 5,
    "max_steps": 30,
    "eval_splits": "val",
    "max_eval_samples": 2,
    "generation_num_beams": 1,
    "seed": 3,
    "dataloader_num_workers": 0,
    "use_cpu": "true",
    "report_to": "none",
    "disable_tqdm": "true",
}


def test_last_complete_checkpoint_skips_checkpoints_cut_off_while_saving(tmp_path):
    assert last_complete_checkpoint(tmp_path) is None
    for step, state in [(5, "{}"), (10, "{}"), (15, None), (20, '{"global_step": 2')]:
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"")
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-final").mkdir()
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


@pytest.fixture(scope="module")
def train_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for split, size in {"train": 120, "val": 4}.items():
        en = [
            " ".join(rng.choice(list(EN_DE)) for _ in range(rng.randint(2, 7))).capitalize() + "." for _ in range(size)
        ]
        de = [" ".join(EN_DE[word.lower().rstrip(".")] for word in line.split()) + "." for line in en]
        for lang, lines in (("en", en), ("de", de)):
            (root / f"{split}.{lang}.gz").write_bytes(gzip.compress("".join(f"{s}\n" for s in lines).encode()))
    return root


def train_command(corpus: Path, output_dir: Path) -> list[str]:
    argv = [str(REPO / "scripts" / "train.py"), "--dataset", str(corpus), "--output_dir", str(output_dir)]
    return [sys.executable, *argv, *(item for key, value in TRAIN_FLAGS.items() for item in (f"--{key}", str(value)))]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def train(corpus: Path, output_dir: Path) -> None:
    done = subprocess.run(train_command(corpus, output_dir), capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def uninterrupted(train_corpus, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    train(train_corpus, output_dir)
    return output_dir


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    assert [key for key in first if not torch.equal(first[key], second[key])] == []


def losses(output_dir: Path) -> list[tuple[int, float, float]]:
    log = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [(entry["step"], entry["loss"], entry["nll_loss"]) for entry in log if "loss" in entry]


@pytest.mark.slow
def test_training_killed_at_a_random_step_resumes_to_bit_identical_weights(train_corpus, uninterrupted, tmp_path):
    """SIGKILL once a randomly chosen checkpoint (not the first) is complete, rerun the same command: the final
    weights equal those of the uninterrupted run bit for bit (CPU, one thread), and so do the logged losses, so
    the resume restored the weights, Adam's moments, the schedule step, the token-budget sampler's position in
    its epoch and the RNG states (dropout)."""
    output_dir = tmp_path / "killed"
    kill_step = random.Random(5).choice([10, 15, 20, 25])
    process = subprocess.Popen(
        train_command(train_corpus, output_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    state = output_dir / f"checkpoint-{kill_step}" / "trainer_state.json"
    while process.poll() is None and not state.is_file():
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (output_dir / "model.safetensors").exists()  # killed before the end of training
    resumed_from = int(last_complete_checkpoint(output_dir).name.removeprefix("checkpoint-"))

    train(train_corpus, output_dir)
    assert_same_weights(uninterrupted, output_dir)
    assert losses(output_dir) == losses(uninterrupted)
    assert [step for step, _, _ in losses(output_dir)] == [5, 10, 15, 20, 25, 30]
    # the model card's training entry: all 30 updates, the speed of those after the resume
    summary = json.loads((output_dir / "results.json").read_text())["training"]
    assert summary["updates"] == 30 and summary["resumed_from_update"] == resumed_from
    assert "resumed_from_update" not in json.loads((uninterrupted / "results.json").read_text())["training"]


@pytest.mark.slow
def test_resume_skips_a_checkpoint_cut_off_while_saving(train_corpus, uninterrupted, tmp_path):
    """A kill during `Trainer._save_checkpoint` leaves checkpoint-N with part of model.safetensors and no
    trainer_state.json; the rerun must resume from checkpoint-(N-5) and still end with the uninterrupted weights."""
    output_dir = tmp_path / "cut"
    output_dir.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "checkpoint-5", "checkpoint-10"):
        copy = shutil.copytree if (uninterrupted / name).is_dir() else shutil.copy
        copy(uninterrupted / name, output_dir / name)
    (output_dir / "checkpoint-15").mkdir()
    weights = (uninterrupted / "checkpoint-15" / "model.safetensors").read_bytes()
    (output_dir / "checkpoint-15" / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    train(train_corpus, output_dir)
    assert_same_weights(uninterrupted, output_dir)


def test_a_resumed_runs_summary_counts_speed_over_its_own_updates_only():
    """A resumed process trained updates 300-400 in its runtime: tokens/s divides their tokens, not all 400's."""
    args = SimpleNamespace(world_size=1, device=torch.device("cpu"))
    fresh = training_summary(["c.json"], args, DataArguments(), 50.0, 100, 1000.0)
    resumed = training_summary(["c.json"], args, DataArguments(), 50.0, 400, 1000.0, resumed_from_update=300)
    assert fresh["target_tokens_per_s"] == resumed["target_tokens_per_s"] == 2000  # 100 x 1000 tokens / 50 s
    assert resumed["updates"] == 400 and resumed["resumed_from_update"] == 300
    assert "resumed_from_update" not in fresh
