"""Token-budget batching of §5.1: "Sentence pairs were batched together by approximate sequence length. Each
training batch contained a set of sentence pairs containing approximately 25000 source tokens and 25000 target
tokens."

transformers has length grouping (`LengthGroupedSampler`) and `BatchRebalanceSampler`, but both fix the number of
sentences per update; the paper fixes the number of tokens. So this is our own, after fairseq's `batch_by_size`:
a pure function over the lengths plus a thin `Sampler`.

Multi-process (read against accelerate 1.15 `data_loader.py`): `accelerator.prepare` wraps our batch sampler in
`BatchSamplerShard`. Because we have no `batch_size` attribute it treats batches as variable-sized lists: process
p takes batches p, p + n, p + 2n, ... of one shared epoch order (every process builds the same batches from the
same seed and epoch), and with `even_batches=True` it pads the tail with whole batches from the start of the epoch
so that all processes make `ceil(len / n)` steps. `max_tokens` is therefore per process and per micro-batch: the
paper's 25000 per update on 8 GPUs is `max_tokens = 25000 / (processes * gradient_accumulation_steps)`.

Epochs: `DataLoaderShard.set_epoch` forwards to the wrapped batch sampler only via
`batch_sampler.batch_sampler.sampler.set_epoch`, hence `TokenBudgetBatchSampler.sampler`. The Trainer also calls
`train_dataloader.batch_sampler.batch_sampler.set_epoch` itself. Neither reaches the sampler on a resumed epoch
with several processes: the Trainer first wraps the loader with `skip_first_batches`, whose `SkipBatchSampler`
hides `BatchSamplerShard` (which has no `sampler`) one level deeper. The trainer must then call
`sampler.set_epoch(epoch)` itself before iterating, or a resumed epoch skips into epoch 0's order
(see `tests/test_batching.py`).
"""

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def _as_lengths(name: str, lengths: Sequence[int]) -> np.ndarray:
    array = np.asarray(lengths)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D sequence of integers, got {array.dtype} with shape {array.shape}")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be non-negative, got {array.min()} at index {int(array.argmin())}")
    return array.astype(np.int64)


def batch_by_tokens(
    src_lengths: Sequence[int],
    tgt_lengths: Sequence[int],
    max_tokens: int,
    *,
    seed: int,
    epoch: int,
    max_sentences: int | None = None,
) -> list[list[int]]:
    """Token-budget batches of §5.1: each batch keeps n_sentences · max(length) <= max_tokens on each side.

    Lengths are those of the padded tensors the collator will build (`input_ids` and `labels`, EOS included).
    Indices are sorted by the pair's longer side, then its total length, with a random tie-break, then cut
    greedily into batches, then the batch order is shuffled. Sorting by the longer side keeps both sides short
    of padding at once: sorted by source length first (as fairseq does), a batch of a 16k-token budget holds
    nearly all target lengths of one source length, and its targets were 39% padding at Multi30k's lengths
    (8% now; at 25000 tokens 51% and 9%); and as the budget limits the longer side, the same sentences fill
    fewer batches (39 of 16k tokens per epoch, now 30). Both random draws come from `numpy.random.default_rng((seed,
    epoch))`, so the batches are a deterministic function of (seed, epoch); another epoch regroups sentences of
    equal lengths and reorders the batches. Only the tie-break changes with the epoch, so the number of batches
    does not.

    Raises:
        ValueError: an example longer than `max_tokens` on either side could never be batched; its index and
            length are named (filter such pairs out when preparing the data).
    """
    src = _as_lengths("src_lengths", src_lengths)
    tgt = _as_lengths("tgt_lengths", tgt_lengths)
    if len(src) != len(tgt):
        raise ValueError(f"src_lengths and tgt_lengths differ in size: {len(src)} != {len(tgt)}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens}")
    if max_sentences is not None and max_sentences < 1:
        raise ValueError(f"max_sentences must be a positive integer or None, got {max_sentences}")
    for side, lengths in (("source", src), ("target", tgt)):
        if lengths.size and lengths.max() > max_tokens:
            index = int(lengths.argmax())
            raise ValueError(
                f"example {index} has {side} length {lengths[index]} > max_tokens={max_tokens}; "
                "filter out long pairs or raise max_tokens"
            )

    rng = np.random.default_rng((seed, epoch))
    order = np.lexsort((rng.random(len(src)), src + tgt, np.maximum(src, tgt)))  # last key sorts first
    src_list, tgt_list = src.tolist(), tgt.tolist()  # Python ints: numpy scalar access is slow in a loop
    batches: list[list[int]] = []
    batch: list[int] = []
    src_max = tgt_max = 0
    for index in order.tolist():
        new_src_max, new_tgt_max = max(src_max, src_list[index]), max(tgt_max, tgt_list[index])
        size = len(batch) + 1
        if batch and (
            size * new_src_max > max_tokens
            or size * new_tgt_max > max_tokens
            or (max_sentences is not None and size > max_sentences)
        ):
            batches.append(batch)
            batch, new_src_max, new_tgt_max = [], src_list[index], tgt_list[index]
        batch.append(index)
        src_max, tgt_max = new_src_max, new_tgt_max
    if batch:
        batches.append(batch)
    return [batches[i] for i in rng.permutation(len(batches))]


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batch sampler yielding `batch_by_tokens(...)` for the current epoch; pass as `DataLoader(batch_sampler=)`.

    Deterministic for (seed, epoch); call `set_epoch` before each epoch (accelerate and the Trainer do, see the
    module docstring for the one case where they do not).
    """

    def __init__(
        self,
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int],
        max_tokens: int,
        *,
        seed: int = 0,
        max_sentences: int | None = None,
    ):
        self.src_lengths = _as_lengths("src_lengths", src_lengths)
        self.tgt_lengths = _as_lengths("tgt_lengths", tgt_lengths)
        self.max_tokens = max_tokens
        self.seed = seed
        self.max_sentences = max_sentences
        self.epoch = 0
        self._cached: tuple[int, list[list[int]]] | None = None  # (epoch, batches): 18 s for 4.6M pairs
        self._num_batches = len(self._batches())  # also validates the arguments
        # accelerate's DataLoaderShard.set_epoch reaches a batch sampler wrapped in BatchSamplerShard only as
        # `batch_sampler.batch_sampler.sampler.set_epoch`: answer to that name.
        self.sampler = self

    def _batches(self) -> list[list[int]]:
        if self._cached is None or self._cached[0] != self.epoch:
            batches = batch_by_tokens(
                self.src_lengths,
                self.tgt_lengths,
                self.max_tokens,
                seed=self.seed,
                epoch=self.epoch,
                max_sentences=self.max_sentences,
            )
            self._cached = (self.epoch, batches)
        return self._cached[1]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._batches():
            yield list(batch)  # a copy: a consumer that extends its batch must not change the cached epoch

    def __len__(self) -> int:
        return self._num_batches


def random_fixed_size_batches(num_examples: int, batch_size: int, *, seed: int) -> list[list[int]]:
    """Batches of `batch_size` examples in random order (the last may be smaller): the baseline for padding."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    order = np.random.default_rng(seed).permutation(num_examples).tolist()
    return [order[i : i + batch_size] for i in range(0, num_examples, batch_size)]


def padding_stats(
    batches: Sequence[Sequence[int]], src_lengths: Sequence[int], tgt_lengths: Sequence[int]
) -> dict[str, float]:
    """Real and padded tokens per side: `{side}_padded / {side}_tokens` is the compute spent per useful token.

    Keys, for side in (src, tgt): `{side}_tokens` (real), `{side}_padded` (n_sentences · max length summed over
    batches), `{side}_padding_ratio` (padded / real, >= 1), `{side}_tokens_per_batch` (mean real tokens, the
    number to compare with the paper's 25000 per update); and `num_batches`.
    """
    stats: dict[str, float] = {"num_batches": len(batches)}
    for side, name in (("src", "src_lengths"), ("tgt", "tgt_lengths")):
        lengths = _as_lengths(name, src_lengths if side == "src" else tgt_lengths)
        real = sum(int(lengths[list(batch)].sum()) for batch in batches)
        padded = sum(len(batch) * int(lengths[list(batch)].max()) for batch in batches)
        stats[f"{side}_tokens"] = real
        stats[f"{side}_padded"] = padded
        stats[f"{side}_padding_ratio"] = padded / real if real else float("nan")
        stats[f"{side}_tokens_per_batch"] = real / len(batches) if batches else float("nan")
    return stats
