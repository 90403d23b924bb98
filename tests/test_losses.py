import itertools

import pytest
import torch
import torch.nn.functional as F

from hf_vanilla_transformer.losses import _LabelSmoothedCrossEntropy, label_smoothed_nll_loss

V = 11  # vocabulary size K
PAD = -100


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, V, generator=g, dtype=torch.float64).float()
    labels = torch.randint(0, V, (3, 5), generator=g)
    labels[0, 3:] = PAD
    labels[2, 1:] = PAD
    return logits, labels


def _smoothed_targets(labels, epsilon, vocab_size):
    """q'(k) = (1-ε)·δ(k,y) + ε/K written out row by row."""
    q = torch.full((*labels.shape, vocab_size), epsilon / vocab_size, dtype=torch.float64)
    for index in itertools.product(*(range(n) for n in labels.shape)):
        y = int(labels[index])
        if y != PAD:
            q[index][y] += 1.0 - epsilon
    return q


def test_epsilon_zero_equals_nll(batch):
    logits, labels = batch
    loss, nll, ntokens = label_smoothed_nll_loss(logits, labels, epsilon=0.0)
    expected = F.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=PAD, reduction="sum")
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(nll, expected)
    assert ntokens.item() == 3 + 5 + 1


@pytest.mark.parametrize("epsilon", [0.1, 0.4])
def test_value_equals_explicit_smoothed_distribution(batch, epsilon):
    logits, labels = batch
    q = _smoothed_targets(labels, epsilon, V)
    non_pad = labels != PAD
    torch.testing.assert_close(q[non_pad].sum(-1), torch.ones(int(non_pad.sum()), dtype=torch.float64))
    log_p = torch.log_softmax(logits.double(), dim=-1)
    expected = -(q * log_p).sum(-1)[non_pad].sum()
    expected_nll = -log_p.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)[non_pad].sum()

    loss, nll, ntokens = label_smoothed_nll_loss(logits, labels, epsilon=epsilon)
    assert loss.dtype == nll.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert nll.item() == pytest.approx(expected_nll.item(), rel=1e-6)
    assert ntokens.item() == int(non_pad.sum())
    assert loss.item() > nll.item() * (1 - epsilon)  # the uniform part adds mass on wrong tokens


def test_matches_torch_label_smoothing_and_custom_ignore_index(batch):
    logits, labels = batch
    labels = labels.masked_fill(labels == PAD, 0)  # pad id 0 used directly as ignore_index
    loss, _, ntokens = label_smoothed_nll_loss(logits, labels, epsilon=0.1, ignore_index=0)
    expected = F.cross_entropy(
        logits.view(-1, V), labels.view(-1), ignore_index=0, reduction="sum", label_smoothing=0.1
    )
    torch.testing.assert_close(loss, expected)
    assert ntokens.item() == int((labels != 0).sum())


def test_padded_batch_equals_sum_of_unpadded_examples(batch):
    logits, labels = batch
    lengths = (labels != PAD).sum(-1).tolist()
    padded = label_smoothed_nll_loss(logits, labels, epsilon=0.1)
    per_example = [label_smoothed_nll_loss(logits[i, :n], labels[i, :n], epsilon=0.1) for i, n in enumerate(lengths)]
    for part in range(3):
        torch.testing.assert_close(padded[part], sum(example[part] for example in per_example))


def test_padding_logits_do_not_matter(batch):
    logits, labels = batch
    changed = logits.clone()
    changed[labels == PAD] = float("-inf")  # even -inf at padding must not turn the sums into nan
    changed[labels == PAD, 0] = 0.0
    for a, b in zip(
        label_smoothed_nll_loss(logits, labels, 0.1), label_smoothed_nll_loss(changed, labels, 0.1), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_gradient_is_softmax_minus_smoothed_target(batch):
    logits, labels = batch
    logits = logits.clone().requires_grad_(True)
    loss, _, _ = label_smoothed_nll_loss(logits, labels, epsilon=0.1)
    loss.backward()
    q = _smoothed_targets(labels, 0.1, V).float()
    expected = torch.softmax(logits.detach(), dim=-1) - q
    expected[labels == PAD] = 0.0
    torch.testing.assert_close(logits.grad, expected)


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_closed_form_gradients_of_both_sums_match_finite_differences(batch, epsilon):
    """The hand-written backward, for any mix of the two outputs' gradients, against torch's numerical one."""
    logits, labels = batch
    logits = logits.double().reshape(-1, V).requires_grad_(True)
    labels = labels.reshape(-1)

    def weighted_sums(x):
        loss, nll = _LabelSmoothedCrossEntropy.apply(x, labels, epsilon, PAD)
        return 0.7 * loss - 1.3 * nll

    assert torch.autograd.gradcheck(weighted_sums, (logits,))


def test_all_positions_ignored_gives_zero_not_nan(batch):
    logits, _ = batch
    labels = torch.full(logits.shape[:-1], PAD)
    loss, nll, ntokens = label_smoothed_nll_loss(logits, labels, epsilon=0.1)
    assert loss.item() == nll.item() == ntokens.item() == 0


def test_bf16_logits_give_float32_close_to_fp32(batch):
    logits, labels = batch
    loss32, nll32, _ = label_smoothed_nll_loss(logits, labels, epsilon=0.1)
    bf16 = logits.to(torch.bfloat16)
    loss16, nll16, _ = label_smoothed_nll_loss(bf16, labels, epsilon=0.1)
    assert loss16.dtype == nll16.dtype == torch.float32
    # Upcast before the log-softmax: identical to fp32 on the bf16-rounded logits ...
    loss_rounded, _, _ = label_smoothed_nll_loss(bf16.float(), labels, epsilon=0.1)
    assert loss16.item() == loss_rounded.item()
    # ... and only the input rounding (bf16 keeps 8 significant bits) separates it from fp32.
    assert loss16.item() == pytest.approx(loss32.item(), rel=1e-2)
    assert nll16.item() == pytest.approx(nll32.item(), rel=1e-2)


def test_large_token_count_sum_stays_accurate_in_bf16():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(30_000, 8, generator=g)
    labels = torch.randint(0, 8, (30_000,), generator=g)
    exact, _, _ = label_smoothed_nll_loss(logits.to(torch.bfloat16).double(), labels, epsilon=0.1)
    loss, _, _ = label_smoothed_nll_loss(logits.to(torch.bfloat16), labels, epsilon=0.1)
    assert abs(loss.item() - exact.item()) < 1.0  # a bf16 result near 7.5e4 is a multiple of 512


@pytest.mark.parametrize("epsilon", [-0.1, 1.0, 1.5])
def test_invalid_epsilon(batch, epsilon):
    logits, labels = batch
    with pytest.raises(ValueError, match=rf"epsilon must be in \[0, 1\), got {epsilon}"):
        label_smoothed_nll_loss(logits, labels, epsilon=epsilon)


def test_shape_mismatch(batch):
    logits, labels = batch
    with pytest.raises(ValueError, match=r"logits must have shape labels.shape \+ \(vocab_size,\); got logits "):
        label_smoothed_nll_loss(logits, labels[:, :4], epsilon=0.1)
