"""The translation pipeline equals tokenizer -> model.generate -> batch_decode, in this process and as remote code."""

import json
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import run_without_package
from transformers import GPT2Config, GPT2LMHeadModel

from hf_vanilla_transformer import (
    VanillaTransformerConfig,
    VanillaTransformerForConditionalGeneration,
    pipeline_vanilla_transformer,
)
from hf_vanilla_transformer.pipeline_vanilla_transformer import TranslationPipeline
from hf_vanilla_transformer.tokenization import train_bpe_tokenizer

TEXTS = [
    "A man rides a horse.",
    "Two dogs play in the snow.",
    "Ein Mann reitet ein Pferd.",
    "Zwei Hunde spielen im Schnee.",
    "A girl in a red dress.",
]
GENERATE_KWARGS = [
    {"max_new_tokens": 8, "num_beams": 1},
    {"max_new_tokens": 6, "num_beams": 3},
    {"max_new_tokens": 5, "num_beams": 2, "length_penalty": 0.0, "early_stopping": False},
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(TEXTS * 2, 300)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = VanillaTransformerConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        init_std=0.3,  # large random weights, so that translations differ between sources
    )
    return VanillaTransformerForConditionalGeneration(config).eval()


def generate_and_decode(model, tokenizer, texts, **generate_kwargs) -> list[str]:
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        output_ids = model.generate(**inputs, **generate_kwargs)
    return tokenizer.batch_decode(output_ids, skip_special_tokens=True)


@pytest.mark.parametrize("generate_kwargs", GENERATE_KWARGS)
def test_pipeline_equals_generate_then_decode(model, tokenizer, generate_kwargs):
    expected = generate_and_decode(model, tokenizer, TEXTS, **generate_kwargs)
    assert len(set(expected)) > 1, "the tiny model should not translate every input alike"
    pipe = TranslationPipeline(model=model, tokenizer=tokenizer)
    batched = pipe(TEXTS, batch_size=3, **generate_kwargs)  # batches of 3 and 2: padding inside a batch
    assert batched == [{"translation_text": text} for text in expected]
    one_by_one = [pipe(text, **generate_kwargs) for text in TEXTS]
    assert one_by_one == [[{"translation_text": text}] for text in expected]


def test_num_return_sequences_gives_one_list_per_input(model, tokenizer):
    kwargs = {"max_new_tokens": 6, "num_beams": 3, "num_return_sequences": 2}
    expected = generate_and_decode(model, tokenizer, TEXTS[:2], **kwargs)
    pipe = TranslationPipeline(model=model, tokenizer=tokenizer)
    assert pipe(TEXTS[:2], batch_size=2, **kwargs) == [
        [{"translation_text": expected[0]}, {"translation_text": expected[1]}],
        [{"translation_text": expected[2]}, {"translation_text": expected[3]}],
    ]
    assert pipe(TEXTS[0], **kwargs) == [{"translation_text": expected[0]}, {"translation_text": expected[1]}]


def test_generation_kwargs_at_init_apply_and_call_kwargs_override_them(model, tokenizer):
    pipe = TranslationPipeline(model=model, tokenizer=tokenizer, max_new_tokens=3, num_beams=1)
    expected_init = generate_and_decode(model, tokenizer, TEXTS, max_new_tokens=3, num_beams=1)
    expected_call = generate_and_decode(model, tokenizer, TEXTS, max_new_tokens=7, num_beams=1)
    assert expected_init != expected_call
    assert pipe(TEXTS, batch_size=5) == [{"translation_text": text} for text in expected_init]
    assert pipe(TEXTS, batch_size=5, max_new_tokens=7) == [{"translation_text": text} for text in expected_call]


def test_truncation_cuts_the_source_at_model_max_length(model, tokenizer):
    pipe = TranslationPipeline(model=model, tokenizer=tokenizer)
    long_text, kwargs = " ".join(TEXTS), {"max_new_tokens": 8, "num_beams": 1}
    tokenizer.model_max_length = 6
    try:
        inputs = tokenizer([long_text], truncation=True, return_tensors="pt")
        assert inputs.input_ids.shape == (1, 6)
        with torch.no_grad():
            expected = tokenizer.batch_decode(model.generate(**inputs, **kwargs), skip_special_tokens=True)
        assert pipe(long_text, truncation=True, **kwargs) == [{"translation_text": expected[0]}]
        assert pipe(long_text, **kwargs) != [{"translation_text": expected[0]}]
    finally:
        tokenizer.model_max_length = 1024


def test_empty_list_gives_empty_list(model, tokenizer):
    assert TranslationPipeline(model=model, tokenizer=tokenizer)([]) == []


def test_non_string_input_is_rejected(model, tokenizer):
    pipe = TranslationPipeline(model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="expects a string or a list of strings, got int"):
        pipe([1, 2])


def test_decoder_only_model_is_rejected(tokenizer):
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=32)
    with pytest.raises(ValueError, match="needs an encoder-decoder model, got GPT2LMHeadModel"):
        TranslationPipeline(model=GPT2LMHeadModel(config), tokenizer=tokenizer)


def test_save_pretrained_registers_the_pipeline_as_custom_code(model, tmp_path):
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    # The format `pipeline()` reads (transformers/pipelines/__init__.py, clean_custom_task).
    assert config["custom_pipelines"] == {
        "translation": {
            "impl": "pipeline_vanilla_transformer.TranslationPipeline",
            "pt": ["AutoModelForSeq2SeqLM"],
            "type": "text",
        }
    }
    shipped = (tmp_path / "pipeline_vanilla_transformer.py").read_text(encoding="utf-8")
    assert shipped == Path(pipeline_vanilla_transformer.__file__).read_text(encoding="utf-8")


# Runs where our package cannot be imported: only the files in the model folder are used.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from transformers import pipeline

    folder, texts, kwargs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    pipe = pipeline("translation", model=folder, trust_remote_code=True, device="cpu")
    assert "hf_vanilla_transformer" not in sys.modules
    print(json.dumps({
        "pipeline_module": type(pipe).__module__,
        "model_module": type(pipe.model).__module__,
        "batched": pipe(texts, batch_size=3, **kwargs),
        "single": pipe(texts[0], **kwargs),
    }))
    """
)


def test_remote_code_pipeline_in_a_fresh_process(model, tokenizer, tmp_path):
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    kwargs = {"max_new_tokens": 8, "num_beams": 2}
    expected = TranslationPipeline(model=model, tokenizer=tokenizer)(TEXTS, batch_size=3, **kwargs)
    remote = run_without_package(REMOTE_SCRIPT, [str(folder), json.dumps(TEXTS), json.dumps(kwargs)], tmp_path)
    assert remote["pipeline_module"].startswith("transformers_modules.")
    assert remote["pipeline_module"].endswith(".pipeline_vanilla_transformer")
    assert remote["model_module"].endswith(".modeling_vanilla_transformer")
    assert remote["batched"] == expected
    assert remote["single"] == [expected[0]]
