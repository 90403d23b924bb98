"""generate(): caching, batching, sampling, and the paper's decoding (§6.1)."""

import math
from functools import partial
from unittest import mock

import pytest
import torch
from conftest import make_tiny_model
from transformers import GenerationMixin, LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import DynamicCache, EncoderDecoderCache, StaticCache
from transformers.modeling_outputs import BaseModelOutput

from hf_vanilla_transformer.modeling_vanilla_transformer import (
    CHUNKED_TOPK_MIN_SCORES,
    PAPER_DECODING,
    VanillaTransformerForConditionalGeneration,
    best_continuations,
    gnmt_length_penalty,
    row_topk,
)

EOS = 2


def sources(batch):
    return {k: batch[k] for k in ("input_ids", "attention_mask")}


def strip(sequence: torch.Tensor) -> list[int]:
    return [t for t in sequence.tolist() if t != 0]


@pytest.fixture
def lively_model():
    """Random weights large enough that different sources give different outputs."""
    return make_tiny_model(init_std=0.5)


def test_default_generation_config_is_the_papers_decoding(tiny_model):
    for name, value in PAPER_DECODING.items():
        assert getattr(tiny_model.generation_config, name) == value


@pytest.mark.parametrize("kwargs", [{"num_beams": 1}, {"num_beams": 3}, {"num_beams": 3, "num_return_sequences": 2}])
def test_cache_and_no_cache_generate_the_same(lively_model, batch, kwargs):
    cached = lively_model.generate(**sources(batch), max_new_tokens=8, use_cache=True, **kwargs)
    uncached = lively_model.generate(**sources(batch), max_new_tokens=8, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_incremental_decoding_with_cache_equals_a_full_forward(lively_model, batch):
    decoder_input_ids = torch.tensor([[1, 20, 21, 22], [1, 23, 24, 25]])
    full = lively_model(**sources(batch), decoder_input_ids=decoder_input_ids).logits
    encoder_outputs = lively_model.get_encoder()(batch["input_ids"], batch["attention_mask"])
    cache, steps = None, []
    for t in range(4):
        out = lively_model(
            attention_mask=batch["attention_mask"],
            encoder_outputs=encoder_outputs,
            decoder_input_ids=decoder_input_ids[:, t : t + 1],
            cache=cache,
            use_cache=True,
        )
        cache = out.cache
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert all(cache.is_updated.values())  # cross-attention keys/values were computed once, then reused


def test_cross_attention_projects_the_source_once_per_sentence(lively_model, batch):
    calls = []
    hook = lively_model.model.decoder.layers[0].encoder_attn.k_proj.register_forward_hook(
        lambda *args: calls.append(1)
    )
    lively_model.generate(**sources(batch), num_beams=1, max_new_tokens=6)
    hook.remove()
    assert len(calls) == 1


def test_beam_reordering_moves_the_self_attention_cache_and_leaves_the_source_keys(lively_model, batch):
    out = lively_model(**sources(batch), decoder_input_ids=torch.tensor([[1, 20], [1, 23]]), use_cache=True)
    cache = out.cache
    cross_before = [(layer.keys, layer.values) for layer in cache.cross_attention_cache.layers]
    self_before = [layer.keys.clone() for layer in cache.self_attention_cache.layers]
    beam_idx = torch.tensor([1, 1])
    assert lively_model._reorder_cache(cache, beam_idx) is cache
    for layer, keys in zip(cache.self_attention_cache.layers, self_before, strict=True):
        assert torch.equal(layer.keys, keys[beam_idx])
    for layer, (keys, values) in zip(cache.cross_attention_cache.layers, cross_before, strict=True):
        assert layer.keys is keys and layer.values is values


def test_beam_search_projects_each_source_once_not_once_per_beam(lively_model, batch):
    rows = []
    hook = lively_model.model.decoder.layers[0].encoder_attn.k_proj.register_forward_hook(
        lambda module, args, output: rows.append(args[0].shape[0])
    )
    lively_model.generate(**sources(batch), num_beams=3, max_new_tokens=6)
    hook.remove()
    assert rows == [2]  # two source sentences, three beams each


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_k_decoder_rows_per_source_equal_a_copy_of_the_source_per_row(batch, attn_implementation):
    model = make_tiny_model(init_std=0.5, attn_implementation=attn_implementation)
    encoder_outputs = model.get_encoder()(batch["input_ids"], batch["attention_mask"])
    decoder_input_ids = torch.tensor([[1, 20, 21], [1, 22, 23], [1, 24, 25], [1, 26, 27], [1, 28, 29], [1, 30, 31]])
    output_attentions = attn_implementation == "eager"
    grouped = model(
        attention_mask=batch["attention_mask"],
        encoder_outputs=encoder_outputs,
        decoder_input_ids=decoder_input_ids,
        output_attentions=output_attentions,
    )
    copied = model(
        attention_mask=batch["attention_mask"].repeat_interleave(3, dim=0),
        encoder_outputs=(encoder_outputs.last_hidden_state.repeat_interleave(3, dim=0),),
        decoder_input_ids=decoder_input_ids,
        output_attentions=output_attentions,
    )
    torch.testing.assert_close(grouped.logits, copied.logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(grouped.logits[0], grouped.logits[3])  # rows of different sources differ
    if output_attentions:
        for ours, theirs in zip(grouped.cross_attentions, copied.cross_attentions, strict=True):
            assert ours.shape == (6, 4, 3, 6)
            torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
            assert (ours[3:, :, :, 4:] == 0).all()  # the second source's padding, in each of its rows


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_beams": 3, "num_return_sequences": 2},
        {"num_beams": 1, "do_sample": True, "num_return_sequences": 3},
    ],
)
def test_generation_equals_transformers_copy_of_the_source_for_each_row(lively_model, batch, kwargs):
    def generate():
        torch.manual_seed(0)
        return lively_model.generate(
            **sources(batch), max_new_tokens=8, output_scores=True, return_dict_in_generate=True, **kwargs
        )

    ours = generate()
    lively_model._expand_inputs_for_generation = partial(GenerationMixin._expand_inputs_for_generation, lively_model)
    theirs = generate()
    assert torch.equal(ours.sequences, theirs.sequences)
    for mine, other in zip(ours.scores, theirs.scores, strict=True):
        torch.testing.assert_close(mine, other, atol=1e-5, rtol=1e-5)


def test_decoder_rows_not_a_multiple_of_the_sources_is_a_clear_error(lively_model, batch):
    with pytest.raises(ValueError, match="decoder_input_ids has 3 rows for 2 source sentences: expected the same"):
        lively_model(**sources(batch), decoder_input_ids=torch.ones(3, 2, dtype=torch.long))
    encoder_outputs = lively_model.get_encoder()(batch["input_ids"], batch["attention_mask"])
    lively_model.config._attn_implementation = "flex_attention"  # its block masks do not broadcast
    with pytest.raises(ValueError, match="with attn_implementation 'flex_attention' they must be equal"):
        lively_model(
            attention_mask=batch["attention_mask"],
            encoder_outputs=encoder_outputs,
            decoder_input_ids=torch.ones(4, 2, dtype=torch.long),
        )


@pytest.mark.parametrize("kwargs", [{"num_beams": 1}, {}, {"num_beams": 3, "length_penalty_form": "hf"}])
def test_a_padded_batch_translates_each_sentence_as_alone(lively_model, batch, kwargs):
    together = lively_model.generate(**sources(batch), **kwargs)
    assert not torch.equal(together[0], together[1])
    for i, length in enumerate((6, 4)):
        alone = lively_model.generate(input_ids=batch["input_ids"][i : i + 1, :length], **kwargs)
        assert strip(together[i]) == strip(alone[0])


def test_sampling_with_top_k_1_is_greedy(lively_model, batch):
    greedy = lively_model.generate(**sources(batch), num_beams=1, max_new_tokens=8)
    sampled = lively_model.generate(**sources(batch), num_beams=1, do_sample=True, top_k=1, max_new_tokens=8)
    assert torch.equal(greedy, sampled)


def test_sampling_is_seeded_and_respects_top_k(lively_model, batch):
    kwargs = {"num_beams": 1, "do_sample": True, "temperature": 1.5, "top_k": 3, "top_p": 0.9, "max_new_tokens": 8}
    torch.manual_seed(0)
    first = lively_model.generate(**sources(batch), **kwargs, output_scores=True, return_dict_in_generate=True)
    torch.manual_seed(0)
    second = lively_model.generate(**sources(batch), **kwargs)
    assert torch.equal(first.sequences, second)
    for step, scores in enumerate(first.scores):  # processed scores: at most 3 tokens left possible
        chosen = first.sequences[:, step + 1]
        assert (scores.isfinite().sum(-1) <= 3).all()
        assert scores.gather(1, chosen[:, None]).isfinite().all()


def test_output_stops_at_source_length_plus_offset(lively_model, batch):
    """§6.1: maximum output length = input length + 50; here offset 3 and </s> suppressed until forced."""
    out = lively_model.generate(**sources(batch), max_length_offset=3, suppress_tokens=[EOS], num_beams=1)
    for i, source_length in enumerate((6, 4)):  # non-pad source tokens, </s> included
        generated = strip(out[i])[1:]  # without the decoder start
        assert len(generated) == source_length + 3
        assert generated[-1] == EOS and EOS not in generated[:-1]


def test_explicit_max_new_tokens_replaces_the_source_length_limit(lively_model, batch):
    out = lively_model.generate(**sources(batch), max_new_tokens=12, suppress_tokens=[EOS], num_beams=1)
    assert out.shape[1] == 13 and EOS not in out.tolist()


# Beam search runs our ranked loop, or transformers' own where outputs beyond the sequences are asked for.
LOOPS = {"ranked": {}, "transformers": {"output_scores": True, "return_dict_in_generate": True}}


def sequences(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.sequences


class FavourEndOfSentence(LogitsProcessor):
    """Raises </s> after every token id divisible by 5: hypotheses then finish at many lengths, in place."""

    def __call__(self, input_ids, scores):
        scores[:, EOS] += 3.0 * (input_ids[:, -1] % 5 == 0)
        return scores


SOURCE_LENGTHS = (9, 7, 5, 9, 3, 6)


def padded_sources(seed: int) -> dict[str, torch.Tensor]:
    """Six random sources of `SOURCE_LENGTHS` tokens (</s> last), padded."""
    input_ids = torch.randint(4, 60, (6, 9), generator=torch.Generator().manual_seed(seed))
    for row, length in enumerate(SOURCE_LENGTHS):
        input_ids[row, length - 1], input_ids[row, length:] = EOS, 0
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}


def both_loops(model, inputs: dict, processor: LogitsProcessor, stock: str) -> tuple:
    """The sequences of our loop (transformers' method `stock` must not run) and of transformers' loop (taken
    for `return_dict_in_generate`), each with the decoder's batch at each of its steps."""
    rows = []
    model.model.decoder.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    processors = LogitsProcessorList([processor])
    with mock.patch.object(GenerationMixin, stock, side_effect=AssertionError("transformers' loop ran")):
        ours = model.generate(**inputs, logits_processor=processors)
    our_rows = rows.copy()
    rows.clear()
    theirs = model.generate(**inputs, logits_processor=processors, return_dict_in_generate=True).sequences
    return ours, our_rows, theirs, rows


@pytest.mark.parametrize("vocab", [10000, 9993])  # in whole chunks, and with a shorter last chunk
def test_row_topk_equals_torch_topk(vocab):
    scores = torch.randn(128, vocab, generator=torch.Generator().manual_seed(0)).log_softmax(-1)
    scores[3, 100:] = -math.inf  # a row with few finite scores
    scores[5, -1] = 0.0  # a row's best score in its last chunk
    assert scores.numel() >= CHUNKED_TOPK_MIN_SCORES  # the chunked path
    top, ids = row_topk(scores, 8)
    expected = scores.topk(8, dim=-1)
    assert torch.equal(top, expected.values)
    finite = top.isfinite()  # the order of equal (-inf) scores is not specified
    assert torch.equal(ids[finite], expected.indices[finite])
    assert torch.equal(scores.gather(1, ids), top)


def test_best_continuations_equal_the_top_of_all_beam_sums():
    generator = torch.Generator().manual_seed(0)
    log_probs = torch.randn(3 * 4, 50, generator=generator).log_softmax(-1)
    log_probs[5, 7:] = -math.inf  # a row with few finite scores (a forced or masked row)
    beam_scores = torch.randn(3, 4, generator=generator) * 3
    beam_scores[0, 1:] = -1.0e9  # a first step: only the first beam continues
    scores, beams, tokens = best_continuations(log_probs, beam_scores, 8)
    sums = (log_probs.view(3, 4, 50) + beam_scores[:, :, None]).view(3, -1)  # transformers' way
    expected_scores, flat = sums.topk(8)
    assert torch.equal(scores, expected_scores)
    finite = expected_scores.isfinite()  # the order of equal (-inf) scores is not specified
    assert torch.equal(beams[finite], (flat // 50)[finite]) and torch.equal(tokens[finite], (flat % 50)[finite])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_beams": 4},
        {"num_beams": 4, "length_penalty_form": "hf", "early_stopping": True},
        {"num_beams": 3, "early_stopping": False, "num_return_sequences": 2},
        {"num_beams": 2, "use_cache": False, "length_penalty": 1.5},
        {"num_beams": 4, "early_stopping": "never"},
    ],
)
def test_ranked_beam_search_returns_transformers_sequences(kwargs):
    """Padded sources of many lengths, hypotheses finishing early or at the source-length limit; the sentences
    whose hypotheses are final leave the decoder's batch (`_drop_sentences`), in transformers' loop they stay."""
    inputs = {**padded_sources(seed=1), "max_length_offset": 6, **kwargs}
    ranked, ranked_rows, theirs, rows = both_loops(make_tiny_model(), inputs, FavourEndOfSentence(), "_beam_search")
    assert torch.equal(ranked, theirs)
    num_beams = kwargs["num_beams"]
    assert set(rows) == {6 * num_beams}  # transformers' loop: every sentence to the end
    assert ranked_rows[0] == 6 * num_beams and len(set(ranked_rows)) >= 4  # sentences left at several steps
    assert ranked_rows == sorted(ranked_rows, reverse=True) and all(n % num_beams == 0 for n in ranked_rows)
    lengths = (ranked != 0).sum(-1)[:: kwargs.get("num_return_sequences", 1)]
    limits = torch.tensor([length + 6 + 1 for length in SOURCE_LENGTHS])  # + the decoder start
    assert (lengths < limits).any() and (lengths == limits).any()  # some finished early, some at the limit


class EndEvenRowsEarly(LogitsProcessor):
    """Raises </s> for row r (even) once it has r + 2 tokens: some sentences end early, the others at their limit."""

    def __call__(self, input_ids, scores):
        rows = torch.arange(scores.shape[0])
        scores[(input_ids.shape[1] == rows + 3) & (rows % 2 == 0), EOS] += 100.0
        return scores


@pytest.mark.parametrize(
    "kwargs", [{}, {"use_cache": False}, {"min_new_tokens": 3, "no_repeat_ngram_size": 2}, {"max_length_offset": 2}]
)
def test_greedy_search_returns_transformers_sequences(kwargs):
    """Finished sentences leave the decoder's batch (`_greedy_search`); in transformers' loop they are fed padding."""
    inputs = {**padded_sources(seed=2), "num_beams": 1, "max_length_offset": 6, **kwargs}
    ours, our_rows, theirs, rows = both_loops(make_tiny_model(), inputs, EndEvenRowsEarly(), "_sample")
    assert torch.equal(ours, theirs)
    assert set(rows) == {6} and our_rows[0] == 6 and len(set(our_rows)) >= 3  # sentences left at several steps
    assert our_rows == sorted(our_rows, reverse=True)
    lengths = (ours != 0).sum(-1)
    limits = torch.tensor([length + inputs["max_length_offset"] + 1 for length in SOURCE_LENGTHS])
    assert ((ours == EOS).sum(-1) == 1).all()  # each ended by </s>
    assert (lengths < limits).any() and (lengths == limits).any()  # some early, some at the source-length limit


def test_sentences_leave_the_batch_only_where_their_whole_state_can_be_cut(tiny_config):
    cut = VanillaTransformerForConditionalGeneration._can_drop_sentences
    state = {"encoder_outputs": BaseModelOutput(last_hidden_state=torch.zeros(2, 3, 4)), "use_cache": True}
    state["attention_mask"] = torch.ones(2, 3, dtype=torch.long)
    assert cut(state)  # without a cache (use_cache=False)
    dynamic = EncoderDecoderCache(DynamicCache(config=tiny_config), DynamicCache(config=tiny_config))
    assert dynamic.self_attention_cache.layers  # one DynamicLayer per decoder layer
    assert cut({**state, "cache": dynamic})
    static = StaticCache(config=tiny_config, max_cache_len=8)  # of fixed batch size
    assert not cut({**state, "cache": EncoderDecoderCache(static, DynamicCache(config=tiny_config))})
    assert not cut({**state, "cache": DynamicCache()})  # not an encoder-decoder cache
    assert not cut({**state, "decoder_attention_mask": torch.ones(8, 1, dtype=torch.long)})  # a tensor it cannot cut
    assert not cut({**state, "encoder_outputs": (torch.zeros(2, 3, 4),)})  # a plain tuple


class ScriptedScores(LogitsProcessor):
    """Replaces the model's log-probabilities by a fixed tree of continuations (the model is ignored).

    Short hypothesis S = [5, </s>] with log P = log 0.632; long L = [6, 7 x 8, </s>] with log P = log 0.368.
    """

    def __call__(self, input_ids, scores):
        scripted = torch.full_like(scores, -math.inf)
        for row, prefix in enumerate(input_ids[:, 1:].tolist()):
            if not prefix:
                scripted[row, 5], scripted[row, 6] = math.log(0.632), math.log(0.368)
            elif prefix == [5]:
                scripted[row, EOS] = 0.0
            elif prefix[0] == 6:
                scripted[row, 7 if len(prefix) < 9 else EOS] = 0.0
            else:  # continuations of -inf beams: never finish
                scripted[row, 9] = 0.0
        return scripted


@pytest.mark.parametrize("loop", ["ranked", "transformers"])
@pytest.mark.parametrize("form", ["gnmt", "hf"])
def test_gnmt_and_transformers_length_penalties_rank_as_their_formulas_predict(tiny_model, form, loop):
    alpha = 0.6
    short, long = math.log(0.632), math.log(0.368)
    scores = {
        "gnmt": (short / gnmt_length_penalty(2, alpha), long / gnmt_length_penalty(10, alpha)),
        "hf": (short / 2**alpha, long / 10**alpha),
    }[form]
    # the two forms disagree: GNMT prefers the short hypothesis, len**alpha the long one
    assert (scores[0] > scores[1]) == (form == "gnmt")
    out = tiny_model.generate(
        input_ids=torch.tensor([[5, 6, 2]]),
        num_beams=2,
        length_penalty=alpha,
        length_penalty_form=form,
        max_new_tokens=12,
        logits_processor=LogitsProcessorList([ScriptedScores()]),
        **LOOPS[loop],
    )
    expected = [1, 5, EOS] if form == "gnmt" else [1, 6, *[7] * 8, EOS]
    assert strip(sequences(out)[0]) == expected
    if loop == "transformers":
        assert out.sequences_scores[0].item() == pytest.approx(max(scores), rel=1e-5)


class ScriptedEarlyFinishes(LogitsProcessor):
    """Two unlikely hypotheses finish while a likelier, longer one is still running (the model is ignored).

    First token: 8 (0.5), 5 (0.3), 6 (0.2); then [5] -> </s> (0.9) or 9 (0.1), [5, 9] -> </s>, and 8 is followed by
    eight 7s and </s>. With two beams, [5, </s>] and [5, 9, </s>] have finished by step 3, long before
    L = [8, 7 x 8, </s>] (log P = log 0.5), the best hypothesis by far.
    """

    def __call__(self, input_ids, scores):
        scripted = torch.full_like(scores, -math.inf)
        for row, prefix in enumerate(input_ids[:, 1:].tolist()):
            if not prefix:
                scripted[row, 8], scripted[row, 5], scripted[row, 6] = math.log(0.5), math.log(0.3), math.log(0.2)
            elif prefix == [5]:
                scripted[row, EOS], scripted[row, 9] = math.log(0.9), math.log(0.1)
            elif prefix == [5, 9]:
                scripted[row, EOS] = 0.0
            elif prefix[0] == 8:
                scripted[row, 7 if len(prefix) < 9 else EOS] = 0.0
            else:  # never finish
                scripted[row, 9] = 0.0
        return scripted


@pytest.mark.parametrize("loop", ["ranked", "transformers"])
@pytest.mark.parametrize("early_stopping", [None, True])
def test_search_terminates_early_only_when_no_running_hypothesis_can_win(tiny_model, early_stopping, loop):
    """§6.1's "terminate early when possible", the default: not as soon as `num_beams` hypotheses have finished."""
    alpha = 0.6
    out = tiny_model.generate(
        input_ids=torch.tensor([[5, 6, 2]]),
        num_beams=2,
        max_new_tokens=12,
        logits_processor=LogitsProcessorList([ScriptedEarlyFinishes()]),
        **LOOPS[loop],
        **({} if early_stopping is None else {"early_stopping": early_stopping}),
    )
    long, short = (math.log(0.5), 10), (math.log(0.3 * 0.9), 2)
    expected = short if early_stopping else long  # early_stopping=True returns the best of what finished first
    assert strip(sequences(out)[0]) == ([1, 8, *[7] * 8, EOS] if expected == long else [1, 5, EOS])
    log_p, length = expected
    if loop == "transformers":
        assert out.sequences_scores[0].item() == pytest.approx(log_p / gnmt_length_penalty(length, alpha), rel=1e-5)
    assert long[0] / gnmt_length_penalty(10, alpha) > short[0] / gnmt_length_penalty(2, alpha)


def test_unknown_length_penalty_form_is_a_clear_error(tiny_model, batch):
    with pytest.raises(ValueError, match="`length_penalty_form` must be 'hf' or 'gnmt', got 'fairseq'"):
        tiny_model.generate(**sources(batch), length_penalty_form="fairseq")
