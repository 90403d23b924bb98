"""The architecture of §3, checked against its equations on a tiny model."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, make_tiny_model, randomize_attention_biases
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import LogitsProcessor, LogitsProcessorList

from hf_vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from hf_vanilla_transformer import modeling_vanilla_transformer as modeling
from hf_vanilla_transformer.modeling_vanilla_transformer import (
    MATMUL_ATTENTION_MAX_SCORES,
    MATMUL_ATTENTION_MIN_HEADS,
    ONEDNN_LINEAR_MIN_WEIGHTS,
    ONEDNN_LINEAR_MIN_WORK,
    PackedTokens,
    VanillaTransformerLinear,
    _attention_kernels,
    _onednn_linear,
    dropout,
    eager_attention_forward,
    shift_tokens_right,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import count_operators  # noqa: E402


def test_labels_shift_right_with_decoder_start(tiny_model, batch):
    shifted = shift_tokens_right(batch["labels"], pad_token_id=0, decoder_start_token_id=1)
    assert shifted.tolist() == [[1, 13, 14, 15, 16], [1, 17, 18, 2, 0]]


def test_loss_is_token_level_cross_entropy_ignoring_minus_100(tiny_model, batch):
    out = tiny_model(**batch)
    keep = batch["labels"] != -100
    expected = -out.logits.log_softmax(-1)[keep].gather(-1, batch["labels"][keep][:, None]).mean()
    torch.testing.assert_close(out.loss, expected)


def test_causal_mask_later_target_tokens_do_not_change_earlier_logits(tiny_model, batch):
    decoder_input_ids = torch.tensor([[1, 20, 21, 22, 23]])
    changed = decoder_input_ids.clone()
    changed[0, 3] = 40
    kwargs = {"input_ids": batch["input_ids"][:1], "attention_mask": batch["attention_mask"][:1]}
    logits = tiny_model(**kwargs, decoder_input_ids=decoder_input_ids).logits
    logits_changed = tiny_model(**kwargs, decoder_input_ids=changed).logits
    torch.testing.assert_close(logits[:, :3], logits_changed[:, :3])
    assert not torch.allclose(logits[:, 3:], logits_changed[:, 3:])


def test_logits_mask_returns_exactly_the_rows_of_the_full_logits(tiny_model, batch):
    keep = batch["labels"] != -100
    full = tiny_model(**batch)
    packed = tiny_model(**batch, logits_mask=keep)
    assert packed.logits.shape == (int(keep.sum()), 99)
    torch.testing.assert_close(packed.logits, full.logits[keep])
    torch.testing.assert_close(packed.loss, full.loss)


def test_the_decoder_skips_positions_after_the_last_wanted_logit(tiny_model, batch):
    logits_mask = torch.tensor([[True, False, True, False, False], [True, True, True, False, False]])
    seen = []
    tiny_model.model.decoder.layers[0].ffn.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    decoder_input_ids = tiny_model.prepare_decoder_input_ids_from_labels(batch["labels"])
    sources = {k: batch[k] for k in ("input_ids", "attention_mask")}
    packed = tiny_model(**sources, decoder_input_ids=decoder_input_ids, logits_mask=logits_mask).logits
    assert seen == [(3 + 3, 16)]  # positions 0-2 of each sentence, packed
    full = tiny_model(**sources, decoder_input_ids=decoder_input_ids).logits
    torch.testing.assert_close(packed, full[logits_mask])


def loss_and_gradients(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    "labels",
    [
        torch.tensor([[13, 14, 15, 16, 2], [17, 18, 2, -100, -100]]),  # right padding
        torch.tensor([[13, -100, 15, 16, 2], [17, -100, 2, -100, -100]]),  # ignored tokens inside a sentence too
    ],
)
@pytest.mark.parametrize("attention_bias", [False, True])
def test_training_skips_padding_with_the_same_loss_and_gradients(batch, labels, attention_bias):
    """Training mode packs the real tokens of both stacks and the labelled logits, and projects Q, K, V jointly;
    eval mode computes everything, each projection alone."""
    batch = {**batch, "labels": labels}
    model = make_tiny_model(dropout=0.0, attention_bias=attention_bias)
    full, full_grads = loss_and_gradients(model, batch)
    assert full.logits.shape == (2, 5, 99)
    model.train()
    packed, packed_grads = loss_and_gradients(model, batch)
    assert packed.logits.shape == (int((labels != -100).sum()), 99)  # labelled positions only
    torch.testing.assert_close(packed.logits, full.logits[labels != -100])
    torch.testing.assert_close(packed.loss, full.loss)
    for name, grad in full_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, msg=name)


def matrix_products(model, batch) -> int:
    """The projections' matrix products in a forward pass: a Linear is one mm, or one addmm with a bias (attention's
    own products, where it runs them, are batched: bmm)."""
    counts = count_operators.operator_counts(model, **batch)
    return counts["addmm"] + counts["mm"]


@pytest.mark.parametrize("attention_bias", [False, True])
def test_training_projects_the_queries_keys_and_values_of_an_input_as_one_product(batch, attention_bias):
    model = make_tiny_model(attn_implementation="sdpa", attention_bias=attention_bias)
    layers = TINY["encoder_layers"]  # as many decoder layers
    # per encoder layer: Q, K, V, output, 2 FFN; per decoder layer: 4 self-attention, 4 cross-attention, 2 FFN;
    # and the logits
    assert matrix_products(model, batch) == 6 * layers + 10 * layers + 1
    model.train()
    # one product for Q, K, V of self-attention and one for K, V of the source
    assert matrix_products(model, batch) == 4 * layers + 7 * layers + 1


def test_packed_tokens_round_trip_and_zero_padding():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1]])
    tokens = PackedTokens(mask)
    padded = torch.arange(18.0).view(3, 3, 2)
    packed = tokens.pack(padded)
    assert packed.tolist() == [[0, 1], [2, 3], [6, 7], [14, 15], [16, 17]]
    torch.testing.assert_close(tokens.unpack(packed), padded * mask[..., None])


def test_unpacking_keeps_nothing_of_the_packed_tensor_for_the_backward_pass():
    """Autograd may keep the indices, not the packed input: that would double the memory of every packed query,
    key and value (`index_copy` kept its source)."""
    tokens = PackedTokens(torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1]]))
    leaf = torch.randn(5, 2, requires_grad=True)
    packed = leaf * 2  # not a leaf: autograd frees it unless a node saves it
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        padded = tokens.unpack(packed)
    assert saved and all(t.untyped_storage().data_ptr() != packed.untyped_storage().data_ptr() for t in saved)
    gradient = torch.randn(3, 3, 2)
    padded.backward(gradient)
    torch.testing.assert_close(leaf.grad, 2 * tokens.pack(gradient))


def test_cpu_dropout_keeps_elements_independently_with_probability_1_minus_p_and_scales_them():
    p, n = 0.3, 400_000
    inputs = torch.linspace(1, 2, n, requires_grad=True)
    outputs = dropout(inputs, p, training=True)
    kept = outputs != 0
    torch.testing.assert_close(outputs[kept], inputs[kept] / (1 - p), rtol=1e-6, atol=0)
    sigma = math.sqrt(p * (1 - p) / n)  # of a fraction of n independent draws
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * sigma
    # neighbours, and elements far apart, are kept together with probability (1 - p)^2: no pattern in the bits
    for offset in (1, 2, 3, n // 2):
        together = (kept[:-offset] & kept[offset:]).float().mean().item()
        assert abs(together - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 * (1 - (1 - p) ** 2) / (n - offset))
    gradient = torch.randn(n)
    outputs.backward(gradient)
    torch.testing.assert_close(inputs.grad, torch.where(kept, gradient / (1 - p), 0.0))


def test_cpu_dropout_follows_torchs_seed_and_keeps_only_a_boolean_mask_for_the_backward_pass():
    inputs = torch.randn(64, 32, requires_grad=True)
    masks, saved = [], []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            masks.append(dropout(inputs, 0.1, training=True) != 0)
    assert [t.dtype for t in saved if t.numel() > 1] == [torch.bool] * 3
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    assert dropout(inputs, 0.1, training=False) is inputs and dropout(inputs, 0.0, training=True) is inputs


def test_only_a_batch_with_padding_is_packed(tiny_model, batch):
    seen = []
    tiny_model.model.encoder.layers[0].ffn.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    tiny_model.model.encoder(batch["input_ids"], batch["attention_mask"])
    tiny_model.model.encoder(batch["input_ids"][:1], batch["attention_mask"][:1])  # no padding
    assert seen == [(6 + 4, 16), (1, 6, 16)]


def test_encoder_output_is_zero_at_padding_and_unchanged_at_real_tokens(tiny_model, batch):
    out = tiny_model.model.encoder(batch["input_ids"], batch["attention_mask"])
    assert out.last_hidden_state[1, 4:].eq(0).all()
    alone = tiny_model.model.encoder(batch["input_ids"][1:, :4])  # no mask: nothing packed
    torch.testing.assert_close(out.last_hidden_state[1, :4], alone.last_hidden_state[0])


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.ones(2, 4, dtype=torch.bool), r"bool tensor of shape \(2, 5\).*torch.bool \(2, 4\)"),
        (torch.ones(2, 5, dtype=torch.long), r"bool tensor of shape \(2, 5\).*torch.int64 \(2, 5\)"),
    ],
)
def test_logits_mask_of_the_wrong_shape_or_dtype_is_refused(tiny_model, batch, mask, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(**batch, logits_mask=mask)


def test_padding_does_not_change_a_sentence(tiny_model, batch):
    padded = tiny_model(**batch).logits
    alone = tiny_model(input_ids=batch["input_ids"][1:, :4], labels=batch["labels"][1:, :3]).logits
    torch.testing.assert_close(padded[1, :3], alone[0], atol=1e-5, rtol=1e-5)


def reference_pe(length: int, d_model: int) -> torch.Tensor:
    pe = torch.zeros(length, d_model, dtype=torch.float64)
    for pos in range(length):
        for i in range(d_model // 2):
            pe[pos, 2 * i] = math.sin(pos / 10000 ** (2 * i / d_model))
            pe[pos, 2 * i + 1] = math.cos(pos / 10000 ** (2 * i / d_model))
    return pe.float()


def test_embedding_output_is_scaled_embedding_plus_the_papers_sinusoids(tiny_model, batch):
    ids = batch["input_ids"][:1]
    out = tiny_model.model.encoder(ids, output_hidden_states=True)
    d_model = tiny_model.config.d_model
    expected = tiny_model.model.shared(ids) * math.sqrt(d_model) + reference_pe(ids.shape[1], d_model)
    torch.testing.assert_close(out.hidden_states[0], expected)
    pe0 = reference_pe(1, d_model)[0]
    assert pe0[0::2].eq(0).all() and pe0[1::2].eq(1).all()  # position 0: sin terms 0, cos terms 1


def test_sinusoids_extend_beyond_max_position_embeddings():
    model = make_tiny_model(max_position_embeddings=4)
    positions = torch.arange(300)
    torch.testing.assert_close(
        model.model.encoder.embed_positions(positions), reference_pe(300, 16), atol=1e-4, rtol=1e-4
    )
    assert model(input_ids=torch.arange(3, 13)[None], labels=torch.arange(3, 11)[None]).logits.shape == (1, 8, 99)


def test_learned_positions_refuse_inputs_longer_than_max_position_embeddings():
    model = make_tiny_model(max_position_embeddings=8, position_embedding_type="learned")
    assert model.model.encoder.embed_positions.weight.shape == (8, 16)
    model(input_ids=torch.arange(3, 11)[None], labels=torch.arange(3, 11)[None])
    with pytest.raises(ValueError, match="length 9 is longer than max_position_embeddings=8"):
        model(input_ids=torch.arange(3, 12)[None], labels=torch.arange(3, 6)[None])


def randomize_layer_norms(model: torch.nn.Module) -> None:
    """Gain and bias away from (1, 0), so that a LayerNorm in the wrong place changes the result."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.data = torch.rand(module.weight.shape, generator=generator) + 0.5
            module.bias.data = torch.randn(module.bias.shape, generator=generator)


def test_encoder_layers_are_post_ln_without_a_final_layer_norm(tiny_model, batch):
    randomize_layer_norms(tiny_model)
    encoder = tiny_model.model.encoder
    out = encoder(batch["input_ids"][:1], output_hidden_states=True)
    for i, layer in enumerate(encoder.layers):
        x = out.hidden_states[i]
        h = layer.self_attn_layer_norm(x + layer.self_attn(x)[0])  # LayerNorm(x + Sublayer(x))
        expected = layer.final_layer_norm(h + layer.ffn.fc2(torch.relu(layer.ffn.fc1(h))))
        torch.testing.assert_close(out.hidden_states[i + 1], expected)
    torch.testing.assert_close(out.last_hidden_state, out.hidden_states[-1])


def test_decoder_layers_are_post_ln_without_a_final_layer_norm(tiny_model, batch):
    randomize_layer_norms(tiny_model)
    memory = tiny_model.model.encoder(batch["input_ids"][:1]).last_hidden_state
    out = tiny_model(**{k: v[:1] for k, v in batch.items()}, output_hidden_states=True)
    for i, layer in enumerate(tiny_model.model.decoder.layers):
        x = out.decoder_hidden_states[i]
        causal = torch.full((5, 5), -math.inf).triu(1)
        h = layer.self_attn_layer_norm(x + layer.self_attn(x, attention_mask=causal)[0])
        h = layer.encoder_attn_layer_norm(h + layer.encoder_attn(h, key_value_states=memory)[0])
        expected = layer.final_layer_norm(h + layer.ffn.fc2(torch.relu(layer.ffn.fc1(h))))
        torch.testing.assert_close(out.decoder_hidden_states[i + 1], expected)
    torch.testing.assert_close(tiny_model.lm_head(out.decoder_hidden_states[-1]), out.logits)


def test_attention_is_softmax_of_scaled_dot_products(tiny_model, batch):
    """§3.2.1 for one head, by hand, against the eager attention weights and output."""
    attention = tiny_model.model.encoder.layers[0].self_attn
    x = torch.randn(1, 5, 16)
    output, weights = attention(x)
    q = attention.q_proj(x).view(1, 5, 4, 4).transpose(1, 2)
    k = attention.k_proj(x).view(1, 5, 4, 4).transpose(1, 2)
    v = attention.v_proj(x).view(1, 5, 4, 4).transpose(1, 2)
    expected_weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)
    heads = (expected_weights @ v).transpose(1, 2).reshape(1, 5, 16)
    torch.testing.assert_close(output, attention.out_proj(heads))
    if weights is not None:  # sdpa returns none
        torch.testing.assert_close(weights, expected_weights)


def test_eager_attention_returns_masked_maps_per_layer(batch):
    model = make_tiny_model(attn_implementation="eager")
    out = model(**batch, output_attentions=True)
    assert len(out.encoder_attentions) == len(out.decoder_attentions) == len(out.cross_attentions) == 2
    assert out.encoder_attentions[0].shape == (2, 4, 6, 6)
    assert out.decoder_attentions[0].shape == (2, 4, 5, 5)
    assert out.cross_attentions[0].shape == (2, 4, 5, 6)
    torch.testing.assert_close(out.decoder_attentions[1].sum(-1), torch.ones(2, 4, 5))
    assert out.decoder_attentions[1].triu(1).eq(0).all()  # no attention to future positions
    assert out.cross_attentions[0][1, :, :, 4:].eq(0).all()  # nor to source padding
    assert out.encoder_attentions[0][1, :, :, 4:].eq(0).all()


def test_attention_maps_from_sdpa_are_a_clear_error(tiny_model, batch):
    with pytest.raises(ValueError, match="output_attentions=True needs attn_implementation='eager'"):
        tiny_model(**batch, output_attentions=True)


def test_sdpa_is_the_default_and_never_makes_the_encoder_or_cross_attention_causal(tiny_model):
    """sdpa treats a module without `is_causal` as causal when no mask is given (no padding here)."""
    assert tiny_model.config._attn_implementation == "sdpa"
    source = torch.tensor([[5, 6, 7, 8, 2]])
    changed = source.clone()
    changed[0, 3] = 30
    encoded = [tiny_model.get_encoder()(ids).last_hidden_state for ids in (source, changed)]
    assert not torch.allclose(encoded[0][:, 0], encoded[1][:, 0])  # position 0 sees position 3
    decoder_input_ids = torch.tensor([[1, 20]])
    logits = [tiny_model(input_ids=ids, decoder_input_ids=decoder_input_ids).logits for ids in (source, changed)]
    assert not torch.allclose(logits[0][:, 0], logits[1][:, 0])  # the first target position sees the whole source


def test_eager_and_sdpa_agree(batch):
    eager, sdpa = make_tiny_model(attn_implementation="eager"), make_tiny_model(attn_implementation="sdpa")
    torch.testing.assert_close(eager(**batch).logits, sdpa(**batch).logits, atol=1e-5, rtol=1e-4)
    generated = [m.generate(**{k: batch[k] for k in ("input_ids", "attention_mask")}) for m in (eager, sdpa)]
    assert torch.equal(*generated)


@pytest.mark.parametrize(("queries", "is_causal"), [(5, False), (5, True), (1, True)])
def test_eager_attention_takes_sdpas_masks(queries, is_causal):
    """What it gets in CPU inference under sdpa: SDPA's boolean masks (True attends), or none where SDPA would be
    told `is_causal` (several queries of a causal module; one query sees every key)."""
    torch.manual_seed(0)
    query, key, value = torch.randn(3, 4, queries, 8), torch.randn(3, 4, 5, 8), torch.randn(3, 4, 5, 8)
    padding = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)[:, None, None]
    module = torch.nn.Module()
    module.is_causal = is_causal
    for mask in (None, padding):
        output, _ = eager_attention_forward(module, query, key, value, mask, scaling=8**-0.5)
        expected = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, is_causal=is_causal and mask is None and queries > 1
        )
        torch.testing.assert_close(output, expected.transpose(1, 2))


def attention_kernels_run(model, **inputs) -> tuple[int, int]:
    """(SDPA's CPU kernel, two batched products) per attention in a forward pass."""
    counts = count_operators.operator_counts(model, **inputs)
    assert counts["bmm"] == 2 * counts["_softmax"]
    return counts["_scaled_dot_product_flash_attention_for_cpu"], counts["_softmax"]


def test_cpu_inference_attends_with_matrix_products_and_training_with_sdpas_kernel(batch):
    """Under sdpa on CPU, Multi30k-like lengths: two batched products a head in inference where the call has heads
    enough (64 copies of the batch: 128 sentences of 4 heads), SDPA's kernel in training."""
    model = make_tiny_model(attn_implementation="sdpa")
    attentions = TINY["encoder_layers"] + 2 * TINY["decoder_layers"]
    sentences = {key: value.repeat(64, 1) for key, value in batch.items()}
    assert attention_kernels_run(model, **sentences) == (0, attentions)
    assert model.model.encoder.layers[0].self_attn(torch.randn(128, 3, TINY["d_model"]))[1] is None  # as SDPA's
    assert attention_kernels_run(model.train(), **sentences) == (attentions, 0)
    assert model.config._attn_implementation == "sdpa"


def random_pairs(sentences: int, source: int, target: int) -> dict[str, torch.Tensor]:
    shapes = {"input_ids": (sentences, source), "decoder_input_ids": (sentences, target)}
    return {name: torch.randint(3, TINY["vocab_size"], shape) for name, shape in shapes.items()}


def test_cpu_inference_keeps_sdpas_kernel_for_many_scores_a_head():
    model = make_tiny_model(attn_implementation="sdpa")
    source, target = 45, 30  # encoder 45 x 45 and cross-attention 30 x 45 above 1024 a head, decoder 30 x 30 below
    assert source * target > MATMUL_ATTENTION_MAX_SCORES >= target * target
    sentences = MATMUL_ATTENTION_MIN_HEADS // TINY["decoder_attention_heads"]
    layers = TINY["decoder_layers"]
    expected = (TINY["encoder_layers"] + layers, layers)
    assert attention_kernels_run(model, **random_pairs(sentences, source, target)) == expected


@pytest.mark.parametrize(("sentences", "target"), [(2, 5), (63, 1)])
def test_cpu_inference_keeps_sdpas_kernel_for_few_heads_a_call(sentences, target):
    """Too little work to repay the products' extra operators: two short sentences (decoding them alone), or one
    query each for fewer than 2 x MATMUL_ATTENTION_MIN_HEADS heads (greedy decoding of a batch of 63)."""
    model = make_tiny_model(attn_implementation="sdpa")
    heads = sentences * TINY["encoder_attention_heads"]
    assert heads < MATMUL_ATTENTION_MIN_HEADS or (target == 1 and heads < 2 * MATMUL_ATTENTION_MIN_HEADS)
    kernels = attention_kernels_run(model, **random_pairs(sentences, 6, target))
    if target == 1:  # the encoder's 6 queries a sentence are enough
        assert kernels == (2 * TINY["decoder_layers"], TINY["encoder_layers"])
    else:
        assert kernels == (TINY["encoder_layers"] + 2 * TINY["decoder_layers"], 0)


def test_cpu_inference_runs_large_linear_layers_and_calls_with_work_enough_through_onednn():
    def runs_onednn(rows: int, in_features: int, out_features: int) -> bool:
        return _onednn_linear(torch.empty(rows, in_features), torch.empty(out_features, in_features))

    with torch.no_grad():
        assert ONEDNN_LINEAR_MIN_WEIGHTS == 1024 * 1024 and ONEDNN_LINEAR_MIN_WORK == 64 * 256 * 256
        assert runs_onednn(1, 128, 10000) and runs_onednn(1, 1024, 1024)  # large layers: any rows
        assert not runs_onednn(1, 1023, 1024) and not runs_onednn(16, 256, 256)
        assert runs_onednn(64, 256, 256) and not runs_onednn(63, 256, 256)
        assert _onednn_linear(torch.empty(2, 32, 256), torch.empty(256, 256))  # rows: all but the last dimension
        assert not _onednn_linear(torch.empty(1, 128, dtype=torch.bfloat16), torch.empty(10000, 128).bfloat16())
    with torch.inference_mode():
        assert runs_onednn(1, 128, 10000)
    large = torch.nn.Parameter(torch.empty(10000, 128))
    assert not _onednn_linear(torch.empty(1, 128), large)  # a gradient wanted: oneDNN's product has no backward
    assert not _onednn_linear(torch.empty(1, 128, requires_grad=True), large.detach())
    assert _onednn_linear(torch.empty(1, 128), large.detach())


def linear_kernels_run(function, *args, **kwargs) -> tuple[int, int]:
    """(oneDNN's products, MKL's) that a call runs; with autograd F.linear dispatches as addmm or mm."""
    counts = count_operators.operator_counts(function, *args, **kwargs)
    return counts["_linear_pointwise"], counts["linear"] + counts["addmm"] + counts["mm"]


@pytest.mark.parametrize("bias", [True, False])
def test_linear_layers_give_f_linears_values_through_onednn_and_gradients_without(bias):
    torch.manual_seed(0)
    layer = VanillaTransformerLinear(128, 10000, bias=bias)
    inputs = torch.randn(3, 5, 128)
    expected = torch.nn.functional.linear(inputs, layer.weight, layer.bias)
    with torch.no_grad():
        assert linear_kernels_run(layer, inputs) == (1, 0)
        torch.testing.assert_close(layer(inputs), expected)
    assert linear_kernels_run(layer, inputs) == (0, 1)
    layer(inputs).square().sum().backward()
    gradient = torch.autograd.grad(expected.square().sum(), layer.weight)[0]
    torch.testing.assert_close(layer.weight.grad, gradient)


def test_cpu_inference_runs_each_linear_layer_through_onednn_where_the_rule_says(batch, monkeypatch):
    """With the limits lowered to the test model's size: every projection, feed-forward layer and the output
    projection in inference without gradients, none in training, and the same logits and translations."""
    model = make_tiny_model()
    layers = 6 * TINY["encoder_layers"] + 10 * TINY["decoder_layers"] + 1
    with torch.no_grad():
        logits = model(**batch).logits
        generated = model.generate(**{k: batch[k] for k in ("input_ids", "attention_mask")})
        monkeypatch.setattr(modeling, "ONEDNN_LINEAR_MIN_WEIGHTS", TINY["d_model"] ** 2)
        assert linear_kernels_run(model, **batch) == (layers, 0)
        torch.testing.assert_close(model(**batch).logits, logits)
        assert torch.equal(model.generate(**{k: batch[k] for k in ("input_ids", "attention_mask")}), generated)
    assert linear_kernels_run(model.train(), **batch)[0] == 0


def linear_layers(module: torch.nn.Module) -> list[VanillaTransformerLinear]:
    return [m for m in module.modules() if isinstance(m, VanillaTransformerLinear)]


class PackedWeightsSeen(LogitsProcessor):
    """Notes at each step which layers hold a packed weight; raises at step `fail_at` if given."""

    def __init__(self, model: VanillaTransformerForConditionalGeneration, fail_at: int | None = None):
        self.model, self.fail_at, self.steps = model, fail_at, []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        held = {name for name, m in self.model.named_modules() if getattr(m, "packed_weight", None) is not None}
        self.steps.append(held)
        if len(self.steps) == self.fail_at:
            raise RuntimeError("stopped by the test")
        return scores


def test_beam_search_on_cpu_packs_the_large_decoder_weights_for_the_call_only(batch, monkeypatch):
    """The decoder's and the output projection's products of large enough layers run oneDNN with weights packed
    once for the call; the encoder (run once) keeps its rule; nothing stays packed afterwards, even after an error;
    the same translations."""
    model = make_tiny_model()
    sources = {k: batch[k] for k in ("input_ids", "attention_mask")}
    decoder = {
        f"model.decoder.{name}": layer.weight.numel()
        for name, layer in model.model.decoder.named_modules()
        if isinstance(layer, VanillaTransformerLinear)
    }
    assert set(decoder.values()) == {TINY["d_model"] ** 2, TINY["d_model"] * TINY["decoder_ffn_dim"]}
    for limit in (TINY["d_model"] ** 2, TINY["d_model"] * TINY["decoder_ffn_dim"]):
        monkeypatch.setattr(modeling, "PACKED_LINEAR_MIN_WEIGHTS", limit)
        seen = PackedWeightsSeen(model)
        model.generate(**sources, num_beams=3, logits_processor=LogitsProcessorList([seen]))
        packed = {name for name, weights in decoder.items() if weights >= limit} | {"lm_head"}
        assert seen.steps and all(held == packed for held in seen.steps)
    monkeypatch.setattr(modeling, "PACKED_LINEAR_MIN_WEIGHTS", TINY["d_model"] ** 2)
    kernels = linear_kernels_run(model.generate, **sources, num_beams=3)
    assert kernels[1] == 6 * TINY["encoder_layers"]  # the encoder's products, below the rule's limits: MKL
    assert all(layer.packed_weight is None for layer in linear_layers(model))
    generated = model.generate(**sources, num_beams=3)
    with monkeypatch.context() as patched:
        patched.setattr(modeling, "ONEDNN_LINEAR", False)
        assert torch.equal(model.generate(**sources, num_beams=3), generated)

    greedy = PackedWeightsSeen(model)
    model.generate(**sources, num_beams=1, logits_processor=LogitsProcessorList([greedy]))
    assert greedy.steps and not any(greedy.steps)
    failing = PackedWeightsSeen(model, fail_at=2)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        model.generate(**sources, num_beams=3, logits_processor=LogitsProcessorList([failing]))
    assert all(layer.packed_weight is None for layer in linear_layers(model))


def sdpa_kernels() -> list[SDPBackend]:
    """The SDPA kernels enabled, in the order torch tries them."""
    return torch.nn.attention._cur_sdpa_kernel_backends(with_priority=True)


def test_cuda_training_tries_the_memory_efficient_attention_kernels_first():
    before = sdpa_kernels()
    with _attention_kernels(torch.device("cuda"), training=True):
        inside = sdpa_kernels()
    efficient = SDPBackend.EFFICIENT_ATTENTION
    assert inside == [efficient, *(kernel for kernel in before if kernel != efficient)]  # an order, no more
    assert sdpa_kernels() == before
    for device, training in [("cuda", False), ("cpu", True)]:
        with _attention_kernels(torch.device(device), training):
            assert sdpa_kernels() == before


def test_the_attention_kernel_order_keeps_a_callers_choice():
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]):
        with _attention_kernels(torch.device("cuda"), training=True):
            assert set(sdpa_kernels()) == {SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH}


def test_the_attention_kernel_order_leaves_torch_compile_one_graph():
    """Dynamo cannot trace the tests of which kernels are enabled: compiled, the model keeps torch's choice."""

    def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        with _attention_kernels(torch.device("cuda"), training=True):
            return torch.nn.functional.scaled_dot_product_attention(query, key, value)

    torch._dynamo.reset()
    query, key, value = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)
    compiled = torch.compile(attend, fullgraph=True, backend="eager")  # fails on a graph break
    torch.testing.assert_close(compiled(query, key, value), attend(query, key, value))


@pytest.mark.slow  # compiles kernels for a minute; torch 2.13's CPU flex kernel also fails on 1-token decoding
def test_eager_and_flex_attention_agree_on_a_forward(batch):
    eager, flex = make_tiny_model(attn_implementation="eager"), make_tiny_model(attn_implementation="flex_attention")
    with torch.no_grad():  # flex attention has no backward on CPU
        torch.testing.assert_close(eager(**batch).logits, flex(**batch).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # compiles C++ kernels: about a minute on 2 cores
def test_a_padded_batch_compiles_as_one_graph_with_the_eager_results(tiny_model, batch):
    torch._dynamo.reset()
    compiled = torch.compile(tiny_model, fullgraph=True)  # fails on any graph break, e.g. packing's nonzero
    with torch.no_grad():
        eager, graph = tiny_model(**batch), compiled(**batch)
    torch.testing.assert_close(graph.loss, eager.loss, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(graph.logits, eager.logits, atol=1e-5, rtol=1e-4)


def test_three_way_tie_is_one_tensor(tiny_model):
    shared = tiny_model.model.shared.weight
    assert tiny_model.lm_head.weight is shared
    assert tiny_model.model.encoder.embed_tokens.weight is shared
    assert tiny_model.model.decoder.embed_tokens.weight is shared


def test_untied_model_has_three_matrices():
    model = make_tiny_model(tie_word_embeddings=False)
    pointers = {
        model.lm_head.weight.data_ptr(),
        model.model.encoder.embed_tokens.weight.data_ptr(),
        model.model.decoder.embed_tokens.weight.data_ptr(),
    }
    assert len(pointers) == 3


def test_initialisation_matches_the_docstring(tiny_model):
    embedding = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig(**{**TINY, "d_model": 256}))
    weight = embedding.model.shared.weight
    assert weight[0].eq(0).all()  # the padding row
    assert weight[1:].std().item() == pytest.approx(256**-0.5, rel=0.05)
    fc1 = tiny_model.model.encoder.layers[0].ffn.fc1
    bound = math.sqrt(6 / (16 + 32))  # Xavier-uniform
    assert fc1.weight.abs().max() <= bound and fc1.weight.abs().max() > 0.8 * bound
    assert fc1.bias.eq(0).all()
    normal = make_tiny_model(init_std=0.02)
    assert normal.model.encoder.layers[0].ffn.fc1.weight.std().item() == pytest.approx(0.02, rel=0.2)


def test_gradient_checkpointing_gives_the_same_gradients(batch):
    grads = []
    for checkpointing in (False, True):
        model = make_tiny_model().train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        torch.manual_seed(3)  # same dropout masks in both runs
        model(**batch).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert model.model.encoder.layers[0].gradient_checkpointing
    torch.testing.assert_close(grads[0], grads[1])


def test_bfloat16_loading(tmp_path, tiny_model, batch):
    tiny_model.save_pretrained(tmp_path)
    model = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    logits = model(**batch).logits
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), tiny_model(**batch).logits, atol=0.1, rtol=0.05)
    assert model.generate(**{k: batch[k] for k in ("input_ids", "attention_mask")}).shape[0] == 2


def test_attention_projections_are_matrices_and_biases_are_an_option(tiny_model):
    """§3.2.2: W^Q, W^K, W^V, W^O without biases; `attention_bias=True` adds them (fairseq, Marian)."""
    names = {name for name, _ in tiny_model.named_parameters()}
    assert not {name for name in names if name.endswith("_proj.bias")}
    assert "model.encoder.layers.0.self_attn.q_proj.weight" in names
    biased = {name for name, _ in make_tiny_model(attention_bias=True).named_parameters()}
    layers = TINY["encoder_layers"]
    assert len(biased - names) == 4 * layers + 8 * layers  # 4 per attention, 3 attentions a layer pair
    assert all(name.endswith("_proj.bias") for name in biased - names)


def test_a_checkpoint_saved_before_attention_bias_existed_loads_with_its_biases(tmp_path, batch):
    """Its config.json has no `attention_bias` and its weights have the biases: they load, none dropped."""
    model = make_tiny_model(attention_bias=True)
    randomize_attention_biases(model, std=1.0)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["attention_bias"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded, info = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert loaded.config.attention_bias
    assert not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(loaded.eval()(**batch).logits, model(**batch).logits)


def test_parameter_counts_of_the_papers_models():
    """Table 3: base 65M, big 213M (with about 37000 shared tokens; see the config's docstring)."""
    counts = {}
    for preset in ("base", "big"):
        with torch.device("meta"):
            model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.from_preset(preset))
        counts[preset] = sum(p.numel() for p in model.parameters())
    assert counts == {"base": 63_045_632, "big": 214_171_648}
    d, v, n, ff = 512, 37000, 6, 2048  # the count by hand, for base
    attention = 4 * d * d  # W^Q, W^K, W^V, W^O, no biases (§3.2.2)
    ffn = d * ff + ff + ff * d + d
    encoder = n * (attention + ffn + 2 * 2 * d)
    decoder = n * (2 * attention + ffn + 3 * 2 * d)
    assert counts["base"] == v * d + encoder + decoder
