import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hf_vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration, averaging
from hf_vanilla_transformer.averaging import average_checkpoints, last_checkpoints

TRAINER_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "training_args.bin")


def tiny_config():
    return VanillaTransformerConfig(
        vocab_size=40,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
    )


def write_checkpoint(run_dir, step, state=None, model=None, marker=None):
    """A Trainer-like checkpoint folder: safetensors weights plus the Trainer's own files."""
    path = run_dir / f"checkpoint-{step}"
    if model is not None:
        model.save_pretrained(path)
    else:
        path.mkdir(parents=True)
        save_file(state, path / "model.safetensors", metadata={"format": "pt", "step": str(step)})
    for name in TRAINER_FILES:
        (path / name).write_bytes(b"not a model file")
    (path / "trainer_state.json").write_text("{}")
    (path / "tokenizer.json").write_text(marker or f"tokenizer of step {step}")
    return path


def known_state(value):
    return {"a": torch.full((2, 3), value), "b.weight": torch.full((4,), 2 * value)}


def test_average_of_known_values(tmp_path):
    dirs = [write_checkpoint(tmp_path, step, known_state(v)) for step, v in [(10, 1.0), (20, 2.0), (30, 6.0)]]
    out = average_checkpoints(dirs, tmp_path / "averaged")
    state = load_file(out / "model.safetensors")
    assert state.keys() == {"a", "b.weight"}
    assert torch.equal(state["a"], torch.full((2, 3), 3.0))
    assert torch.equal(state["b.weight"], torch.full((4,), 6.0))
    with safe_open(out / "model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt", "step": "10"}  # the first checkpoint's metadata


def test_low_precision_is_averaged_in_float32_and_cast_back(tmp_path):
    # In bf16, 256 + 1 rounds back to 256: a bf16 sum would give (256 + 1 + 1) -> 85.5, float32 gives 86.
    values = [256.0, 1.0, 1.0]
    dirs = [
        write_checkpoint(tmp_path, i, {"w": torch.full((3,), v, dtype=torch.bfloat16)}) for i, v in enumerate(values)
    ]
    averaged = load_file(average_checkpoints(dirs, tmp_path / "avg") / "model.safetensors")["w"]
    assert averaged.dtype == torch.bfloat16
    assert averaged.tolist() == [86.0] * 3


def test_non_floating_tensors_must_agree(tmp_path):
    a = write_checkpoint(tmp_path, 1, {"w": torch.ones(2), "count": torch.tensor([3, 4])})
    b = write_checkpoint(tmp_path, 2, {"w": torch.zeros(2), "count": torch.tensor([3, 4])})
    state = load_file(average_checkpoints([a, b], tmp_path / "avg") / "model.safetensors")
    assert state["count"].tolist() == [3, 4] and state["count"].dtype == torch.int64
    c = write_checkpoint(tmp_path, 3, {"w": torch.zeros(2), "count": torch.tensor([3, 5])})
    with pytest.raises(ValueError, match=r"checkpoint-3: non-floating tensor count differs from .*checkpoint-1"):
        average_checkpoints([a, c], tmp_path / "avg2")


def test_copies_model_files_of_last_checkpoint_only(tmp_path):
    torch.manual_seed(0)
    dirs = [
        write_checkpoint(tmp_path, s, model=VanillaTransformerForConditionalGeneration(tiny_config())) for s in (1, 2)
    ]
    out = average_checkpoints(dirs, tmp_path / "avg")
    names = set(os.listdir(out))
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert "modeling_vanilla_transformer.py" in names and "configuration_vanilla_transformer.py" in names
    assert names.isdisjoint({*TRAINER_FILES, "trainer_state.json"})
    assert (out / "tokenizer.json").read_text() == "tokenizer of step 2"
    assert (out / "config.json").read_bytes() == (dirs[-1] / "config.json").read_bytes()


def test_averaged_model_keeps_ties_and_equals_mean_of_loaded_models(tmp_path):
    config = tiny_config()
    dirs = []
    for step in (100, 200, 300):
        torch.manual_seed(step)
        dirs.append(write_checkpoint(tmp_path, step, model=VanillaTransformerForConditionalGeneration(config)))
    out = average_checkpoints(last_checkpoints(tmp_path, 3), tmp_path / "averaged")

    model = VanillaTransformerForConditionalGeneration.from_pretrained(out)
    shared = model.model.shared.weight
    for tied in (
        model.model.encoder.embed_tokens.weight,
        model.model.decoder.embed_tokens.weight,
        model.lm_head.weight,
    ):
        assert tied is shared and tied.data_ptr() == shared.data_ptr()

    loaded = [VanillaTransformerForConditionalGeneration.from_pretrained(d).state_dict() for d in dirs]
    assert len({tuple(sd["model.shared.weight"][3, :3].tolist()) for sd in loaded}) == 3  # really different
    averaged = model.state_dict()
    assert averaged.keys() == loaded[0].keys()
    for key, value in averaged.items():
        torch.testing.assert_close(value, sum(sd[key] for sd in loaded) / 3, msg=key)


def test_key_mismatch_names_checkpoint_and_keys(tmp_path):
    a = write_checkpoint(tmp_path, 1, known_state(1.0))
    b = write_checkpoint(tmp_path, 2, {"a": torch.zeros(2, 3), "c": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"checkpoint-2 has other keys than .*checkpoint-1: missing \['b.weight'\], "):
        average_checkpoints([a, b], tmp_path / "avg")
    with pytest.raises(ValueError, match=r"unexpected \['c'\]"):
        average_checkpoints([a, b], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_shape_mismatch_names_checkpoint_and_key(tmp_path):
    a = write_checkpoint(tmp_path, 1, known_state(1.0))
    b = write_checkpoint(tmp_path, 2, {"a": torch.zeros(3, 2), "b.weight": torch.zeros(4)})
    with pytest.raises(
        ValueError, match=r"checkpoint-2 has other shapes than .*checkpoint-1: a \(3, 2\) != \(2, 3\)$"
    ):
        average_checkpoints([a, b], tmp_path / "avg")


def test_missing_or_sharded_weights(tmp_path):
    a = write_checkpoint(tmp_path, 1, known_state(1.0))
    pickled = tmp_path / "checkpoint-2"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match=r"checkpoint-2/model.safetensors not found: checkpoints must be"):
        average_checkpoints([a, pickled], tmp_path / "avg")
    (pickled / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(ValueError, match=r"checkpoint-2 holds a sharded checkpoint"):
        average_checkpoints([a, pickled], tmp_path / "avg")


def test_invalid_output_dir_or_inputs(tmp_path):
    a = write_checkpoint(tmp_path, 1, known_state(1.0))
    with pytest.raises(ValueError, match="checkpoint_dirs is empty"):
        average_checkpoints([], tmp_path / "avg")
    for output_dir in (a, tmp_path):  # the run folder itself would take every checkpoint with it
        with pytest.raises(ValueError, match=r"is or contains the checkpoint"):
            average_checkpoints([a], output_dir)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        average_checkpoints([a], tmp_path / "file")


def test_last_checkpoints_sorts_steps_numerically(tmp_path):
    for step in (900, 50, 10000, 1000):
        write_checkpoint(tmp_path, step, known_state(1.0))
    (tmp_path / "checkpoint-best").mkdir()
    (tmp_path / "checkpoint-7-tmp").mkdir()
    (tmp_path / "checkpoint-5").write_text("a file, not a checkpoint")
    assert [p.name for p in last_checkpoints(tmp_path, 2)] == ["checkpoint-1000", "checkpoint-10000"]
    assert [p.name for p in last_checkpoints(tmp_path, 4)] == [
        "checkpoint-50",
        "checkpoint-900",
        "checkpoint-1000",
        "checkpoint-10000",
    ]


def test_last_checkpoints_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run_dir .*missing is not a directory"):
        last_checkpoints(tmp_path / "missing", 1)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint-STEP folders in "):
        last_checkpoints(tmp_path, 1)
    write_checkpoint(tmp_path, 20, known_state(1.0))
    write_checkpoint(tmp_path, 10, known_state(1.0))
    with pytest.raises(
        ValueError, match=r"asked for the last 5 checkpoints but .* has only 2: checkpoint-10, checkpoint-20"
    ):
        last_checkpoints(tmp_path, 5)
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        last_checkpoints(tmp_path, 0)


def _snapshot(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_existing_output_is_replaced_completely(tmp_path):
    dirs = [write_checkpoint(tmp_path, s, known_state(v)) for s, v in [(1, 1.0), (2, 3.0)]]
    out = tmp_path / "avg"
    out.mkdir()
    (out / "stale.txt").write_text("from an older average")
    average_checkpoints(dirs, out)
    assert "stale.txt" not in os.listdir(out)
    assert torch.equal(load_file(out / "model.safetensors")["a"], torch.full((2, 3), 2.0))
    assert sorted(os.listdir(tmp_path)) == ["avg", "checkpoint-1", "checkpoint-2"]


def test_failure_while_writing_keeps_previous_output_and_no_temp_dirs(tmp_path, monkeypatch):
    dirs = [write_checkpoint(tmp_path, s, known_state(v)) for s, v in [(1, 1.0), (2, 3.0)]]
    out = average_checkpoints(dirs[:1], tmp_path / "avg")
    before = _snapshot(out)

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(averaging, "save_file", disk_full)
    with pytest.raises(OSError, match="disk full"):
        average_checkpoints(dirs, out)
    assert _snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["avg", "checkpoint-1", "checkpoint-2"]


def test_failure_during_final_move_restores_previous_output(tmp_path, monkeypatch):
    dirs = [write_checkpoint(tmp_path, s, known_state(v)) for s, v in [(1, 1.0), (2, 3.0)]]
    out = average_checkpoints(dirs[:1], tmp_path / "avg")
    before = _snapshot(out)
    real_replace = os.replace

    def fail_moving_new_into_place(src, dst):
        if ".tmp-" in os.fspath(src):
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(averaging.os, "replace", fail_moving_new_into_place)
    with pytest.raises(OSError, match="rename failed"):
        average_checkpoints(dirs, out)
    assert _snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["avg", "checkpoint-1", "checkpoint-2"]
