import itertools

import numpy as np
import pytest
from accelerate.data_loader import BatchSamplerShard, prepare_data_loader, skip_first_batches
from conftest import MULTI30K, gz_lines, needs_multi30k
from torch.utils.data import DataLoader

from hf_vanilla_transformer.batching import (
    TokenBudgetBatchSampler,
    batch_by_tokens,
    least_padded_sort,
    padding_stats,
    random_fixed_size_batches,
)


def multi30k_like_lengths(n, seed=0):
    """Source lengths uniform in 8..40 tokens, target within ±3 of the source, as for Multi30k En-De."""
    rng = np.random.default_rng(seed)
    src = rng.integers(8, 41, n)
    tgt = np.clip(src + rng.integers(-3, 4, n), 8, 40)
    return src.tolist(), tgt.tolist()


def interleave(*shards):
    return [batch for step in itertools.zip_longest(*shards) for batch in step if batch is not None]


@pytest.mark.parametrize(("max_tokens", "max_sentences"), [(40, None), (300, None), (1000, 7)])
def test_every_batch_within_budget_on_both_sides(max_tokens, max_sentences):
    src, tgt = multi30k_like_lengths(500)
    for epoch in range(3):
        batches = batch_by_tokens(src, tgt, max_tokens, seed=1, epoch=epoch, max_sentences=max_sentences)
        for batch in batches:
            assert len(batch) * max(src[i] for i in batch) <= max_tokens
            assert len(batch) * max(tgt[i] for i in batch) <= max_tokens
            assert max_sentences is None or len(batch) <= max_sentences
        if max_sentences is not None:
            assert max(len(b) for b in batches) == max_sentences  # 7 * 40 < 1000: the cap binds


def test_every_index_exactly_once_per_epoch():
    src, tgt = multi30k_like_lengths(500)
    for epoch in range(3):
        batches = batch_by_tokens(src, tgt, 300, seed=1, epoch=epoch)
        assert sorted(i for batch in batches for i in batch) == list(range(500))


def test_hand_computed_batches():
    # Either order (by source, then target; or by the longer side, then the total) cuts the same batches here:
    # [2] (2, 6) alone, as 2 * 6 > 10 on the target side; [0, 4] as 3 * 5 > 10; [1, 3] fills 2 * 5 == 10.
    src, tgt = [3, 5, 2, 5, 4], [1, 1, 6, 1, 1]
    for sort in ("auto", "source", "longer"):
        for epoch in range(4):
            batches = batch_by_tokens(src, tgt, 10, seed=0, epoch=epoch, sort=sort)
            assert sorted(sorted(b) for b in batches) == [[0, 4], [1, 3], [2]]
    assert least_padded_sort(src, tgt, 10) == "source"  # equal padding: the source order


@pytest.mark.parametrize("sort", ["source", "longer"])
def test_batches_group_similar_lengths(sort):
    src, tgt = multi30k_like_lengths(2000)
    key = {"source": lambda i: src[i], "longer": lambda i: max(src[i], tgt[i])}[sort]
    for batch in batch_by_tokens(src, tgt, 400, seed=0, epoch=0, sort=sort):
        assert max(map(key, batch)) - min(map(key, batch)) <= 1


@pytest.mark.parametrize("sort", ["source", "longer"])
def test_epochs_differ_in_grouping_only_not_in_padding_or_batch_count(sort):
    # Pairs (a, b) and (b, a) tie on the longer side and the total: were that the whole key, an epoch's
    # tie-break could change where the greedy cuts fall, and the number of batches the trainer counted on.
    rng = np.random.default_rng(3)
    src = rng.integers(5, 30, 3000)
    tgt = np.where(rng.random(3000) < 0.5, src + rng.integers(-4, 5, 3000), src).clip(1)
    stats = [
        padding_stats(batch_by_tokens(src, tgt, 600, seed=1, epoch=epoch, sort=sort), src, tgt) for epoch in range(6)
    ]
    assert len({(s["num_batches"], s["src_padded"], s["tgt_padded"]) for s in stats}) == 1


@needs_multi30k
@pytest.mark.parametrize(("max_tokens", "expected"), [(2048, "source"), (25000, "longer")])
def test_the_order_that_pads_less_is_chosen(max_tokens, expected):
    # Multi30k En-De word counts (+1 for </s>). At the paper's 25000 tokens, ~1,500 sentences a batch: sorted by
    # source length, a batch spans nearly all target lengths of its source length, and the targets were 47%
    # padding (source 5%); sorted by the longer side, 15% and 8%. At 2,048 tokens the source order pads less.
    en, de = ([len(line.split()) + 1 for line in gz_lines(MULTI30K / f"train.{lang}.gz")] for lang in ("en", "de"))
    padded = {}
    for sort in ("source", "longer"):
        stats = padding_stats(batch_by_tokens(en, de, max_tokens, seed=0, epoch=0, sort=sort), en, de)
        padded[sort] = stats["src_padded"] + stats["tgt_padded"]
    assert least_padded_sort(en, de, max_tokens) == expected == min(padded, key=padded.get)
    assert batch_by_tokens(en, de, max_tokens, seed=0, epoch=0) == batch_by_tokens(
        en, de, max_tokens, seed=0, epoch=0, sort=expected
    )
    sampler = TokenBudgetBatchSampler(en, de, max_tokens)
    assert sampler.sort == expected and list(sampler) == batch_by_tokens(en, de, max_tokens, seed=0, epoch=0)
    if expected == "longer":
        stats = padding_stats(list(sampler), en, de)
        assert stats["src_padding_ratio"] < 1.1 and stats["tgt_padding_ratio"] < 1.2


def test_deterministic_for_seed_and_epoch():
    src, tgt = multi30k_like_lengths(300)
    assert batch_by_tokens(src, tgt, 300, seed=5, epoch=2) == batch_by_tokens(src, tgt, 300, seed=5, epoch=2)


def test_other_epoch_or_seed_changes_batches_but_not_their_number():
    src, tgt = multi30k_like_lengths(300)
    reference = batch_by_tokens(src, tgt, 300, seed=5, epoch=0)
    for other in (batch_by_tokens(src, tgt, 300, seed=5, epoch=1), batch_by_tokens(src, tgt, 300, seed=6, epoch=0)):
        assert other != reference
        assert sorted(map(sorted, other)) != sorted(map(sorted, reference))  # regrouped, not only reordered
        assert len(other) == len(reference)


@pytest.mark.parametrize(
    ("src", "tgt", "message"),
    [
        ([5, 51, 7], [5, 5, 5], r"example 1 has source length 51 > max_tokens=50; filter out long pairs"),
        ([5, 5, 5], [5, 5, 60], r"example 2 has target length 60 > max_tokens=50; filter out long pairs"),
    ],
)
def test_example_longer_than_budget_raises(src, tgt, message):
    with pytest.raises(ValueError, match=message):
        batch_by_tokens(src, tgt, 50, seed=0, epoch=0)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([1, 2], [1], 10), {}, r"src_lengths and tgt_lengths differ in size: 2 != 1"),
        (([1, 2], [1, 2], 0), {}, r"max_tokens must be a positive integer, got 0"),
        (([1, 2], [1, 2], 10), {"max_sentences": 0}, r"max_sentences must be a positive integer or None, got 0"),
        (([1.5, 2], [1, 2], 10), {}, r"src_lengths must be a 1-D sequence of integers, got float64"),
        (([1, 2], [[1, 2]], 10), {}, r"tgt_lengths must be a 1-D sequence of integers, got int64 with shape"),
        (([1, 2], [1, -2], 10), {}, r"tgt_lengths must be non-negative, got -2 at index 1"),
    ],
)
def test_invalid_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        batch_by_tokens(*args, seed=0, epoch=0, **kwargs)
    with pytest.raises(ValueError, match=message):
        TokenBudgetBatchSampler(*args, **kwargs)
    with pytest.raises(ValueError, match=message):
        least_padded_sort(*args, **kwargs)


def test_unknown_sort_is_refused():
    with pytest.raises(ValueError, match=r"sort must be 'auto' or one of \['longer', 'source'\], got 'target'"):
        batch_by_tokens([1], [1], 10, seed=0, epoch=0, sort="target")


def test_empty_dataset_gives_no_batches():
    assert batch_by_tokens([], [], 10, seed=0, epoch=0) == []
    assert len(TokenBudgetBatchSampler([], [], 10)) == 0


def test_sampler_follows_set_epoch():
    src, tgt = multi30k_like_lengths(300)
    sampler = TokenBudgetBatchSampler(src, tgt, 300, seed=4)
    for epoch in (0, 1, 7):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert batches == batch_by_tokens(src, tgt, 300, seed=4, epoch=epoch)
        assert list(sampler) == batches  # iterating again does not advance the epoch
        assert len(sampler) == len(batches)


def test_dataloader_yields_the_batches():
    src, tgt = multi30k_like_lengths(100)
    sampler = TokenBudgetBatchSampler(src, tgt, 200, seed=0)
    loader = DataLoader([{"n": i} for i in range(100)], batch_sampler=sampler, collate_fn=lambda xs: xs)
    assert [[x["n"] for x in batch] for batch in loader] == list(sampler)


@pytest.mark.parametrize("n_examples", [301, 300])
def test_accelerate_shards_split_batches_and_pad_with_first_batches(n_examples):
    """(a) BatchSamplerShard: process p takes batches p, p+2, ...; an odd count is padded with batch 0."""
    src, tgt = multi30k_like_lengths(n_examples, seed=n_examples)
    sampler = TokenBudgetBatchSampler(src, tgt, 200, seed=2)
    epoch_batches = list(sampler)
    shards = [BatchSamplerShard(sampler, num_processes=2, process_index=p) for p in range(2)]
    per_process = [list(shard) for shard in shards]
    steps = -(-len(epoch_batches) // 2)
    assert [len(s) for s in shards] == [len(b) for b in per_process] == [steps, steps]
    padding = epoch_batches[: 2 * steps - len(epoch_batches)]
    assert interleave(*per_process) == epoch_batches + padding
    seen = [i for batches in per_process for batch in batches for i in batch]
    assert sorted(seen) == sorted(list(range(n_examples)) + [i for batch in padding for i in batch])


def _prepared_loaders(sampler_factory, num_processes):
    return [
        prepare_data_loader(
            DataLoader(list(range(300)), batch_sampler=sampler_factory(), collate_fn=list),
            num_processes=num_processes,
            process_index=p,
            put_on_device=False,
        )
        for p in range(num_processes)
    ]


def test_accelerate_set_epoch_reaches_sampler_and_reshuffles():
    """(b) DataLoaderShard.set_epoch and its per-iteration epoch counter reach the sampler behind BatchSamplerShard."""
    src, tgt = multi30k_like_lengths(300)
    loaders = _prepared_loaders(lambda: TokenBudgetBatchSampler(src, tgt, 200, seed=9), num_processes=2)
    samplers = [loader.batch_sampler.batch_sampler for loader in loaders]
    assert all(isinstance(s, TokenBudgetBatchSampler) for s in samplers)
    for epoch in (3, 4):
        for loader in loaders:
            loader.set_epoch(epoch)
        assert [s.epoch for s in samplers] == [epoch, epoch]
        per_process = [list(loader) for loader in loaders]
        expected = batch_by_tokens(src, tgt, 200, seed=9, epoch=epoch)
        assert interleave(*per_process)[: len(expected)] == expected
    # Without set_epoch, each new pass over the loader advances accelerate's iteration count, i.e. the epoch.
    first, second = list(loaders[0]), list(loaders[0])
    assert samplers[0].epoch == 6
    assert first != second


def _as_trainer_resumes(loader, epoch, steps_done):
    """What Trainer._run_epoch does on resume (transformers 5.24): skip, then set_epoch, then iterate."""
    skipped = skip_first_batches(loader, steps_done)
    skipped.set_epoch(epoch)
    inner = getattr(skipped.batch_sampler, "batch_sampler", None)
    if hasattr(inner, "set_epoch"):
        inner.set_epoch(epoch)
    return skipped


def test_skip_first_batches_single_process_resumes_the_right_epoch():
    """(c) One process: the skipped loader's set_epoch reaches the sampler, resuming yields the epoch's tail."""
    src, tgt = multi30k_like_lengths(300)
    sampler = TokenBudgetBatchSampler(src, tgt, 200, seed=9)
    (loader,) = _prepared_loaders(lambda: sampler, num_processes=1)
    resumed = list(_as_trainer_resumes(loader, epoch=2, steps_done=3))
    assert resumed == batch_by_tokens(src, tgt, 200, seed=9, epoch=2)[3:]


def test_skip_first_batches_multi_process_needs_explicit_set_epoch():
    """(c) Several processes: nothing in the resume path reaches the sampler; the trainer must set the epoch."""
    src, tgt = multi30k_like_lengths(300)
    samplers = [TokenBudgetBatchSampler(src, tgt, 200, seed=9) for _ in range(2)]
    loaders = _prepared_loaders(iter(samplers).__next__, num_processes=2)
    resumed = [_as_trainer_resumes(loader, epoch=2, steps_done=3) for loader in loaders]
    assert [s.epoch for s in samplers] == [0, 0]  # still epoch 0: the resumed epoch would replay epoch 0's order
    for sampler in samplers:
        sampler.set_epoch(2)
    expected = batch_by_tokens(src, tgt, 200, seed=9, epoch=2)
    per_process = [list(loader) for loader in resumed]
    assert per_process == [expected[0::2][3:], expected[1::2][3:] + expected[:1] * (len(expected) % 2)]


def test_padding_stats_hand_computed():
    src, tgt = [3, 5, 2, 5, 4], [1, 1, 6, 1, 2]
    stats = padding_stats([[2], [0, 4], [1, 3]], src, tgt)
    assert stats["num_batches"] == 3
    assert (stats["src_tokens"], stats["src_padded"]) == (19, 2 + 8 + 10)
    assert (stats["tgt_tokens"], stats["tgt_padded"]) == (11, 6 + 4 + 2)
    assert stats["src_padding_ratio"] == pytest.approx(20 / 19)
    assert stats["tgt_padding_ratio"] == pytest.approx(12 / 11)
    assert stats["src_tokens_per_batch"] == pytest.approx(19 / 3)


def test_random_fixed_size_batches():
    batches = random_fixed_size_batches(10, 4, seed=0)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert batches == random_fixed_size_batches(10, 4, seed=0) != random_fixed_size_batches(10, 4, seed=1)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        random_fixed_size_batches(10, 0, seed=0)


def test_token_budget_pads_less_than_random_fixed_size_batches():
    src, tgt = multi30k_like_lengths(5000)
    budget = padding_stats(batch_by_tokens(src, tgt, 2000, seed=0, epoch=0), src, tgt)
    sentences_per_batch = round(5000 / budget["num_batches"])  # same mean batch size, for a fair comparison
    fixed = padding_stats(random_fixed_size_batches(5000, sentences_per_batch, seed=0), src, tgt)
    for side in ("src", "tgt"):
        assert budget[f"{side}_padding_ratio"] < 1.15
        assert fixed[f"{side}_padding_ratio"] > 1.4  # E[max of ~80 lengths in 8..40] / E[length] = 40 / 24
        assert budget[f"{side}_tokens_per_batch"] <= 2000
