"""Export to CTranslate2: the exported model decodes exactly as our generate() does."""

import json
import math

import pytest
import torch

ctranslate2 = pytest.importorskip("ctranslate2")

from conftest import randomize_attention_biases  # noqa: E402

from hf_vanilla_transformer import (  # noqa: E402
    VanillaTransformerConfig,
    VanillaTransformerForConditionalGeneration,
    train_bpe_tokenizer,
)
from hf_vanilla_transformer.export_ctranslate2 import (  # noqa: E402
    build_ctranslate2_spec,
    ctranslate2_vocabulary,
    export_ctranslate2,
    main,
)
from hf_vanilla_transformer.modeling_vanilla_transformer import sinusoids  # noqa: E402

PAD, EOS = 0, 2
NOUNS = ("dog", "cat", "man", "woman", "boy", "girl")
PLACES = (("mat", "the"), ("bench", "a"), ("grass", "an old"), ("chair", "one"))
SENTENCES = [f"a {noun} sat on the {place} near {det} tree" for noun in NOUNS for place, det in PLACES]
TEST_SENTENCES = SENTENCES[::2]  # a dozen
MAX_NEW_TOKENS = 24
ARCHITECTURE = {
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
}


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(SENTENCES, vocab_size=300)


def random_model(tokenizer, attention_bias: bool = False) -> VanillaTransformerForConditionalGeneration:
    """Large random weights: each source gets its own output, but random models rarely emit </s>."""
    torch.manual_seed(0)
    config = VanillaTransformerConfig(
        vocab_size=len(tokenizer), init_std=0.4, attention_bias=attention_bias, **ARCHITECTURE
    )
    model = VanillaTransformerForConditionalGeneration(config).eval()
    randomize_attention_biases(model, std=0.4)
    return model


def copy_model(tokenizer) -> VanillaTransformerForConditionalGeneration:
    """Adam steps on copying the sentences until it copies them: outputs end with </s> at lengths that differ.

    (After 25 steps, half-trained, its outputs depended on the CPU's rounding: one length on some machines.)"""
    torch.manual_seed(0)
    config = VanillaTransformerConfig(vocab_size=len(tokenizer), dropout=0.0, **ARCHITECTURE)
    model = VanillaTransformerForConditionalGeneration(config)
    batch = tokenizer(SENTENCES, text_target=SENTENCES, return_tensors="pt", padding=True)
    batch["labels"] = batch["labels"].masked_fill(batch["labels"] == PAD, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def trained_copy_model(tokenizer):
    return copy_model(tokenizer)


@pytest.fixture(scope="module", params=["random", "random_attention_bias", "copy"])
def exported(request, tokenizer, tmp_path_factory):
    """(our model, CTranslate2 float32 translator of it), exported through a saved model folder."""
    if request.param == "copy":
        model = request.getfixturevalue("trained_copy_model")
    else:
        model = random_model(tokenizer, attention_bias=request.param == "random_attention_bias")
    model_dir = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(model_dir / "model")
    tokenizer.save_pretrained(model_dir / "model")
    export_ctranslate2(model_dir / "model", model_dir / "ct2")
    return model, ctranslate2.Translator(str(model_dir / "ct2"), device="cpu", compute_type="float32")


def ours(model, tokenizer, **kwargs) -> tuple[list[list[int]], list[float]]:
    """Our generate(): token ids after the start token, up to and including </s>, and the sequence scores."""
    batch = tokenizer(TEST_SENTENCES, return_tensors="pt", padding=True)
    output = model.generate(
        **batch, max_new_tokens=MAX_NEW_TOKENS, output_scores=True, return_dict_in_generate=True, **kwargs
    )
    sequences = [[t for t in row[1:].tolist() if t != PAD] for row in output.sequences]
    if kwargs["num_beams"] > 1:
        return sequences, output.sequences_scores.tolist()
    steps = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
    return sequences, steps.masked_fill(output.sequences[:, 1:] == PAD, 0).sum(-1).tolist()


def source_tokens(tokenizer) -> list[list[str]]:
    return [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(TEST_SENTENCES)["input_ids"]]


def theirs(translator, tokenizer, **kwargs) -> tuple[list[list[int]], list[float]]:
    """CTranslate2's translate_batch: its outputs exclude the start token; </s> is kept to count it in |Y|."""
    results = translator.translate_batch(
        source_tokens(tokenizer),
        max_decoding_length=MAX_NEW_TOKENS,
        return_end_token=True,
        return_scores=True,
        **kwargs,
    )
    return [tokenizer.convert_tokens_to_ids(r.hypotheses[0]) for r in results], [r.scores[0] for r in results]


def their_log_probs(translator, tokenizer, sequences: list[list[int]]) -> list[float]:
    """log P(Y) of our outputs under the exported model, from CTranslate2's exact scoring path (score_batch).

    Its decoding path (translate_batch) returns scores up to 3e-3 away from these on the trained model, and up to
    4e-4 relative on the random models' large scores (1.4e-2 absolute); these agree with ours to 1e-4.
    """
    targets = [tokenizer.convert_ids_to_tokens(s[:-1] if s[-1] == EOS else s) for s in sequences]  # it adds </s>
    results = translator.score_batch(source_tokens(tokenizer), targets)
    return [sum(r.log_probs[: len(s)]) for r, s in zip(results, sequences, strict=True)]


def test_greedy_outputs_are_identical_and_scores_close(exported, tokenizer):
    model, translator = exported
    our_sequences, our_scores = ours(model, tokenizer, num_beams=1)
    their_sequences, their_scores = theirs(translator, tokenizer, beam_size=1, length_penalty=0.0)
    assert their_sequences == our_sequences
    assert len({tuple(s) for s in our_sequences}) > 1  # the inputs matter: not one constant output
    exact = their_log_probs(translator, tokenizer, our_sequences)
    torch.testing.assert_close(torch.tensor(exact), torch.tensor(our_scores), atol=1e-4, rtol=2e-4)
    torch.testing.assert_close(torch.tensor(their_scores), torch.tensor(our_scores), atol=5e-3, rtol=1e-3)


@pytest.mark.parametrize("alpha", [0.6, 1.0])
def test_beam_outputs_with_hf_length_normalisation_are_identical_and_scores_close(exported, tokenizer, alpha):
    """CTranslate2 scores log P(Y) / |Y|^alpha: our length_penalty_form="hf"; it has no GNMT form (§6.1).

    Both searches run until nothing can change the best hypothesis: ours stops when no running one can beat the
    finished ones (early_stopping="never"), CTranslate2's when beam_size x patience hypotheses have finished (or at
    the maximum length). With patience 1 it stops at the first beam_size, as transformers' early_stopping=True
    does, but the two do not stop at the same step on every sentence.
    """
    model, translator = exported
    our_sequences, our_scores = ours(
        model, tokenizer, num_beams=4, length_penalty=alpha, length_penalty_form="hf", early_stopping="never"
    )
    their_sequences, their_scores = theirs(translator, tokenizer, beam_size=4, length_penalty=alpha, patience=100)
    assert their_sequences == our_sequences
    log_probs = their_log_probs(translator, tokenizer, our_sequences)
    exact = [p / len(s) ** alpha for p, s in zip(log_probs, our_sequences, strict=True)]
    torch.testing.assert_close(torch.tensor(exact), torch.tensor(our_scores), atol=1e-4, rtol=2e-4)
    torch.testing.assert_close(torch.tensor(their_scores), torch.tensor(our_scores), atol=5e-3, rtol=1e-3)


def test_copy_model_outputs_end_with_eos_at_several_lengths(trained_copy_model, tokenizer):
    """Guards the tests above: with the trained model, </s> and the length penalty take part in the search."""
    sequences, _ = ours(trained_copy_model, tokenizer, num_beams=4, length_penalty=1.0, length_penalty_form="hf")
    assert all(s[-1] == EOS for s in sequences)
    assert len({len(s) for s in sequences}) > 1


def test_int8_export_stores_int8_weights_that_decode_like_ours_once_dequantized(
    trained_copy_model, tokenizer, tmp_path
):
    model = trained_copy_model
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    main([str(tmp_path / "model"), str(tmp_path / "int8"), "--quantization", "int8"])
    main([str(tmp_path / "model"), str(tmp_path / "float32")])
    int8_size, float32_size = ((tmp_path / name / "model.bin").stat().st_size for name in ("int8", "float32"))
    assert int8_size < 0.7 * float32_size  # 1 byte per projection weight instead of 4 (embeddings are kept)

    # Computing in float32 from the int8 weights only rounds them: the search still takes our choices.
    translator = ctranslate2.Translator(str(tmp_path / "int8"), device="cpu", compute_type="float32")
    sequences, _ = theirs(translator, tokenizer, beam_size=4, length_penalty=1.0, patience=100)
    assert sequences == ours(model, tokenizer, num_beams=4, length_penalty=1.0, length_penalty_form="hf")[0]
    # int8 arithmetic (activations quantized too) moves a d_model=32 model's choices: only check it decodes.
    translator = ctranslate2.Translator(str(tmp_path / "int8"), device="cpu", compute_type="int8")
    sequences, _ = theirs(translator, tokenizer, beam_size=4, length_penalty=1.0)
    assert all(s[-1] == EOS and len(s) <= MAX_NEW_TOKENS for s in sequences)


def test_position_table_is_our_interleaved_sinusoid(tokenizer):
    model = random_model(tokenizer)
    spec = build_ctranslate2_spec(model, ctranslate2_vocabulary(model.config.vocab_size, tokenizer))
    table = torch.as_tensor(spec.encoder.position_encodings.encodings)
    assert table.shape == (1024, 32)
    torch.testing.assert_close(table, sinusoids(torch.arange(1024), 32))
    assert table[3, 0] == pytest.approx(math.sin(3)) and table[3, 1] == pytest.approx(math.cos(3))  # i = 0
    assert spec.decoder.scale_embeddings == pytest.approx(math.sqrt(32))


def test_saved_config_names_our_special_tokens(tokenizer, tmp_path):
    model = random_model(tokenizer)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    export_ctranslate2(tmp_path / "model", tmp_path / "ct2")
    config = json.loads((tmp_path / "ct2" / "config.json").read_text())
    assert (config["decoder_start_token"], config["eos_token"], config["unk_token"]) == ("<s>", "</s>", "<unk>")
    assert config["layer_norm_epsilon"] == pytest.approx(1e-5)
    vocabulary = json.loads((tmp_path / "ct2" / "shared_vocabulary.json").read_text())
    assert vocabulary == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


def test_without_tokenizer_the_vocabulary_is_the_ids(tokenizer, tmp_path):
    model = random_model(tokenizer)
    model.save_pretrained(tmp_path / "model")
    export_ctranslate2(tmp_path / "model", tmp_path / "ct2")
    vocabulary = json.loads((tmp_path / "ct2" / "shared_vocabulary.json").read_text())
    assert vocabulary == [str(i) for i in range(len(tokenizer))]
    translator = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu")
    ids = tokenizer(TEST_SENTENCES[:2])["input_ids"]
    results = translator.translate_batch([[str(i) for i in row] for row in ids], beam_size=1, max_decoding_length=5)
    expected = model.generate(input_ids=torch.tensor([ids[0]]), num_beams=1, max_new_tokens=5)[0, 1:].tolist()
    assert [int(t) for t in results[0].hypotheses[0]] == [t for t in expected if t not in (PAD, EOS)]


def test_a_smaller_tokenizer_gets_placeholder_tokens_and_a_larger_one_is_refused(tokenizer):
    padded = ctranslate2_vocabulary(len(tokenizer) + 2, tokenizer)
    assert padded[-2:] == [f"<unused_{len(tokenizer)}>", f"<unused_{len(tokenizer) + 1}>"]
    with pytest.raises(ValueError, match=r"The tokenizer has 300 tokens but the model's vocab_size is 299"):
        ctranslate2_vocabulary(299, tokenizer)


def test_bad_arguments_are_refused(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        export_ctranslate2(tmp_path, tmp_path / "ct2")
    model = random_model(tokenizer)
    model.save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="`quantization` must be one of"):
        export_ctranslate2(tmp_path / "model", tmp_path / "ct2", quantization="int3")
    with pytest.raises(ValueError, match="`vocabulary` has 2 tokens"):
        build_ctranslate2_spec(model, ["a", "b"])
