"""A saved folder is a self-contained Hub repo: Auto classes load it where our package cannot be imported."""

import json
import textwrap

import torch
from conftest import run_without_package
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from hf_vanilla_transformer import VanillaTransformerForConditionalGeneration, VanillaTransformerModel

SOURCE = [[5, 6, 7, 8, 9, 2], [10, 11, 12, 2, 0, 0]]

REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

    folder, source = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
    shared = model.model.shared.weight
    print(json.dumps({
        "config_class": type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__,
        "model_module": type(model).__module__,
        "base_class": type(AutoModel.from_pretrained(folder, trust_remote_code=True)).__name__,
        "tied": model.lm_head.weight is shared and model.model.decoder.embed_tokens.weight is shared,
        "beam": model.generate(source, attention_mask=(source != 0).long()).tolist(),
        "greedy": model.generate(source, attention_mask=(source != 0).long(), num_beams=1).tolist(),
        "logits_sum": model(source, labels=source).logits.double().sum().item(),
    }))
    """
)


def lively_model() -> VanillaTransformerForConditionalGeneration:
    from conftest import make_tiny_model

    return make_tiny_model(init_std=0.5)


def test_save_pretrained_writes_a_complete_repo(tmp_path):
    model = lively_model()
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "configuration_vanilla_transformer.py",
        "modeling_vanilla_transformer.py",
        "pipeline_vanilla_transformer.py",
    }
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vanilla_transformer.VanillaTransformerConfig",
        "AutoModel": "modeling_vanilla_transformer.VanillaTransformerModel",
        "AutoModelForSeq2SeqLM": "modeling_vanilla_transformer.VanillaTransformerForConditionalGeneration",
    }
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["length_penalty_form"] == "gnmt" and generation["max_length_offset"] == 50
    modeling = (tmp_path / "modeling_vanilla_transformer.py").read_text()
    imported = {line.split()[1] for line in modeling.splitlines() if line.startswith(("import ", "from "))}
    top_level = {name if name.startswith(".") else name.split(".")[0] for name in imported}
    assert top_level == {"contextlib", "math", "shutil", "collections", "pathlib", "torch", "transformers"} | {
        ".configuration_vanilla_transformer"
    }


def test_tied_weights_are_stored_once_and_tied_again_on_load(tmp_path):
    model = lively_model()
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as stored:
        embedding_keys = [key for key in stored.keys() if "embed_tokens" in key or "lm_head" in key or "shared" in key]
    assert embedding_keys == ["model.shared.weight"]
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert isinstance(reloaded, VanillaTransformerForConditionalGeneration)
    shared = reloaded.model.shared.weight
    assert reloaded.lm_head.weight is shared
    assert (
        reloaded.model.encoder.embed_tokens.weight is shared and reloaded.model.decoder.embed_tokens.weight is shared
    )
    torch.testing.assert_close(shared, model.model.shared.weight, rtol=0, atol=0)


def test_reload_keeps_exact_outputs_and_sinusoids(tmp_path):
    model = lively_model()
    model.save_pretrained(tmp_path)
    reloaded = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path).eval()
    source = torch.tensor(SOURCE)
    for m in (model, reloaded):
        m.outputs = m(source, attention_mask=(source != 0).long(), labels=source, output_hidden_states=True)
    assert torch.equal(model.outputs.encoder_hidden_states[0], reloaded.outputs.encoder_hidden_states[0])
    assert torch.equal(model.outputs.logits, reloaded.outputs.logits)


def test_auto_classes_resolve_in_process(tmp_path):
    model = lively_model()
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "VanillaTransformerConfig"
    assert isinstance(AutoModel.from_pretrained(tmp_path), VanillaTransformerModel)


def test_fresh_process_trust_remote_code_generates_exactly_the_same(tmp_path):
    model = lively_model()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    source = torch.tensor(SOURCE)
    mask = (source != 0).long()
    remote = run_without_package(REMOTE_SCRIPT, [str(folder), json.dumps(SOURCE)], tmp_path)
    assert remote["config_class"] == "VanillaTransformerConfig"
    assert remote["model_module"].startswith("transformers_modules.")
    assert remote["base_class"] == "VanillaTransformerModel"
    assert remote["tied"]
    assert remote["beam"] == model.generate(source, attention_mask=mask).tolist()
    assert remote["greedy"] == model.generate(source, attention_mask=mask, num_beams=1).tolist()
    expected_sum = model(source, labels=source).logits.double().sum().item()
    assert abs(remote["logits_sum"] - expected_sum) < 1e-6
