import math

import pytest
import torch
from transformers import get_inverse_sqrt_schedule

from hf_vanilla_transformer.schedule import build_optimizer, noam_lr

D, W = 512, 4000


def test_value_at_step_1():
    assert noam_lr(1, D, W) == pytest.approx(D**-0.5 * W**-1.5, rel=1e-12)
    assert noam_lr(1, D, W, scale=2.0) == pytest.approx(2 * D**-0.5 * W**-1.5, rel=1e-12)


def test_peak_at_warmup():
    peak = D**-0.5 * W**-0.5
    assert noam_lr(W, D, W) == pytest.approx(peak, rel=1e-12)
    assert noam_lr(W - 1, D, W) < peak
    assert noam_lr(W + 1, D, W) < peak
    assert max(noam_lr(s, D, W) for s in range(1, 3 * W, 7)) <= peak


def test_linear_rise_during_warmup():
    for step in (1, 10, 999, W):
        assert noam_lr(step, D, W) == pytest.approx(step * noam_lr(1, D, W), rel=1e-12)


def test_inverse_sqrt_decay_after_warmup():
    for step in (W, 2 * W, 9 * W, 100_000):
        assert noam_lr(step, D, W) == pytest.approx(D**-0.5 * step**-0.5, rel=1e-12)
    assert noam_lr(4 * W, D, W) == pytest.approx(noam_lr(W, D, W) / 2, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": 1, "d_model": 0}, "d_model must be a positive integer, got 0"),
        ({"step": 1, "d_model": -8}, "d_model must be a positive integer, got -8"),
        ({"step": 1, "d_model": D, "warmup_steps": 0}, "warmup_steps must be a positive integer, got 0"),
        ({"step": 1, "d_model": D, "scale": 0.0}, r"scale must be positive, got 0.0"),
        ({"step": 1, "d_model": D, "scale": -1.0}, r"scale must be positive, got -1.0"),
        ({"step": 0, "d_model": D}, r"step must be >= 1 \(the paper counts updates from 1\), got 0"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        noam_lr(**kwargs)


def test_build_optimizer_rejects_invalid_arguments():
    with pytest.raises(ValueError, match="warmup_steps must be a positive integer, got -1"):
        build_optimizer(torch.nn.Linear(2, 2), d_model=16, warmup_steps=-1)


def _lrs_used_by_updates(optimizer, scheduler, n):
    """The lr each of the first n optimizer.step() calls runs with, stepping the scheduler after each."""
    param = optimizer.param_groups[0]["params"][0]
    lrs = []
    for _ in range(n):
        param.grad = torch.ones_like(param)
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_optimizer_lr_follows_paper_from_update_1():
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler = build_optimizer(model, d_model=16, warmup_steps=4)
    assert optimizer.defaults["betas"] == (0.9, 0.98)
    assert optimizer.defaults["eps"] == 1e-9
    assert optimizer.defaults["weight_decay"] == 0.0
    lrs = _lrs_used_by_updates(optimizer, scheduler, 10)
    assert lrs == pytest.approx([noam_lr(k, 16, 4) for k in range(1, 11)], rel=1e-12)
    assert scheduler.get_last_lr()[0] == pytest.approx(noam_lr(11, 16, 4), rel=1e-12)


def test_optimizer_started_later_goes_on_with_the_schedule():
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler = build_optimizer(model, d_model=16, warmup_steps=4, scale=2.0, start=7)
    lrs = _lrs_used_by_updates(optimizer, scheduler, 3)
    assert lrs == pytest.approx([noam_lr(k, 16, 4, 2.0) for k in (8, 9, 10)], rel=1e-12)
    with pytest.raises(ValueError, match="step must be >= 1"):
        build_optimizer(model, d_model=16, start=-1)


def test_build_optimizer_accepts_param_groups():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer, scheduler = build_optimizer([{"params": [a]}, {"params": [b]}], d_model=16, warmup_steps=4)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([noam_lr(1, 16, 4)] * 2, rel=1e-12)


def test_optimizer_step_updates_parameters_by_about_lr():
    # Adam's first step moves each parameter by lr * sign(grad) (up to eps): checks Adam really uses lr.
    param = torch.nn.Parameter(torch.zeros(4))
    optimizer, _ = build_optimizer([param], d_model=16, warmup_steps=4)
    param.grad = torch.tensor([1.0, -2.0, 3.0, -4.0])
    optimizer.step()
    expected = -noam_lr(1, 16, 4) * torch.sign(param.grad)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-6, atol=0.0)


def test_transformers_inverse_sqrt_is_paper_schedule_shifted_by_one_update():
    """Claim of /work/shared/notes/transformers5.md: Trainer's "inverse_sqrt" gives update k noam_lr(k - 1)."""
    d_model, warmup = 16, 4
    param = torch.nn.Parameter(torch.zeros(1))
    peak = d_model**-0.5 * warmup**-0.5
    optimizer = torch.optim.Adam([param], lr=peak, betas=(0.9, 0.98), eps=1e-9)
    scheduler = get_inverse_sqrt_schedule(optimizer, num_warmup_steps=warmup)
    lrs = _lrs_used_by_updates(optimizer, scheduler, 12)
    assert lrs[0] == 0.0
    assert lrs[1:] == pytest.approx([noam_lr(k - 1, d_model, warmup) for k in range(2, 13)], rel=1e-12)
    ours = [noam_lr(k, d_model, warmup) for k in range(1, 13)]
    assert not math.isclose(lrs[5], ours[5])


def test_optimizer_is_fused_and_makes_torch_adams_updates():
    torch.manual_seed(0)
    fused = torch.nn.Linear(5, 3)
    looped = torch.nn.Linear(5, 3)
    looped.load_state_dict(fused.state_dict())
    initial = fused.weight.detach().clone()
    optimizer, scheduler = build_optimizer(fused, d_model=16, warmup_steps=4)
    reference = torch.optim.Adam(looped.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9, foreach=False)
    reference_schedule = torch.optim.lr_scheduler.LambdaLR(reference, lambda i: noam_lr(i + 1, 16, 4))
    assert optimizer.defaults["fused"] is True
    for _ in range(6):
        inputs = torch.randn(8, 5)
        for model, opt, schedule in ((fused, optimizer, scheduler), (looped, reference, reference_schedule)):
            model(inputs).square().mean().backward()
            opt.step()
            opt.zero_grad()
            schedule.step()
    for ours, theirs in zip(fused.parameters(), looped.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    assert (fused.weight - initial).abs().min() > 1e-4  # every weight moved: the comparison is not vacuous
