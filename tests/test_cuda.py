"""The model on a CUDA device: the same numbers as on CPU, and bf16 training that stays close to fp32.

Skipped without a GPU (CI has none); `scripts/gpu_check.sh` runs them on the device machine.
"""

import pytest
import torch
from conftest import make_tiny_model

from hf_vanilla_transformer.losses import label_smoothed_nll_loss
from hf_vanilla_transformer.modeling_vanilla_transformer import dropout

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PAPER_BEAM = {"num_beams": 4}  # with the rest of the paper's decoding from the generation config


@pytest.fixture(autouse=True)
def exact_fp32_matmuls():
    """TF32 would round fp32 products to 10 mantissa bits and CPU/CUDA comparisons would test that rounding."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


def on(device: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device) for name, tensor in batch.items()}


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_cuda_forward_equals_cpu_forward(batch, attn_implementation):
    model = make_tiny_model(init_std=0.5, attn_implementation=attn_implementation)
    cpu = model(**batch)
    cuda = model.to("cuda")(**on("cuda", batch))
    torch.testing.assert_close(cuda.logits.cpu(), cpu.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cuda.loss.cpu(), cpu.loss, atol=1e-5, rtol=1e-5)


def test_padding_is_packed_on_cpu_only(batch):
    """Packing waits for the device (`nonzero`): on a GPU the position-wise layers see the padded layout."""
    model = make_tiny_model()
    seen = []
    model.model.encoder.layers[0].ffn.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    model.model.encoder(batch["input_ids"], batch["attention_mask"])
    model.to("cuda").model.encoder(**on("cuda", {k: batch[k] for k in ("input_ids", "attention_mask")}))
    assert seen == [(6 + 4, 16), (2, 6, 16)]


@pytest.mark.parametrize("kwargs", [{"num_beams": 1}, PAPER_BEAM])
def test_cuda_generate_equals_cpu_generate(batch, kwargs):
    model = make_tiny_model(init_std=0.5)
    sources = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    cpu = model.generate(**sources, **kwargs)
    cuda = model.to("cuda").generate(**on("cuda", sources), **kwargs)
    assert torch.equal(cuda.cpu(), cpu)


def test_cuda_beam_search_drops_finished_sentences_and_greedy_stays_transformers():
    """On CUDA our beam search returns transformers' sequences with finished sentences leaving the decoder's batch,
    as on the CPU (`tests/test_generation.py`); greedy search runs transformers' loop, every sentence to the end."""
    from test_generation import FavourEndOfSentence, both_loops, padded_sources  # noqa: PLC0415

    model = make_tiny_model().to("cuda")
    for num_beams in (4, 1):  # (in greedy search transformers' `_beam_search` is never called anyway)
        inputs = {**on("cuda", padded_sources(seed=1)), "max_length_offset": 6, "num_beams": num_beams}
        ours, our_rows, theirs, rows = both_loops(model, inputs, FavourEndOfSentence(), "_beam_search")
        assert torch.equal(ours, theirs) and set(rows) == {6 * num_beams}
        assert len(set(our_rows)) >= 4 if num_beams > 1 else set(our_rows) == {6}


def test_cuda_cache_and_no_cache_generate_the_same(batch):
    model = make_tiny_model(init_std=0.5).to("cuda")
    sources = on("cuda", {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    cached = model.generate(**sources, **PAPER_BEAM, use_cache=True)
    uncached = model.generate(**sources, **PAPER_BEAM, use_cache=False)
    assert torch.equal(cached, uncached)


def test_bf16_autocast_gradients_follow_fp32(batch):
    """One training step under bf16 autocast: loss within bf16 rounding of fp32, gradients pointing the same way."""
    model = make_tiny_model(dropout=0.0).train().to("cuda")
    inputs = on("cuda", batch)

    def loss_and_gradient(bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs).loss
        loss.backward()
        return loss.detach().float(), torch.cat([p.grad.flatten() for p in model.parameters()])

    loss32, grad32 = loss_and_gradient(bf16=False)
    loss16, grad16 = loss_and_gradient(bf16=True)
    torch.testing.assert_close(loss16, loss32, atol=0, rtol=2e-2)
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.99


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_label_smoothed_loss_and_its_gradient_on_cuda_equal_cpu(dtype):
    """The loss's hand-written backward on CUDA, for fp32 logits and for bf16 ones (upcast before the softmax)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 50, generator=generator).to(dtype)
    labels = torch.randint(0, 50, (40,), generator=generator)
    labels[::7] = -100
    results = {}
    for device in ("cpu", "cuda"):
        leaf = logits.detach().to(device).requires_grad_(True)  # a leaf on each device
        loss, nll, ntokens = label_smoothed_nll_loss(leaf, labels.to(device), epsilon=0.1)
        (loss / ntokens).backward()
        results[device] = (loss.detach().cpu(), nll.detach().cpu(), leaf.grad.cpu())
    for cpu, cuda in zip(results["cpu"], results["cuda"], strict=True):
        torch.testing.assert_close(cuda, cpu)  # torch's tolerances for the dtype: a bf16 gradient may round apart
    assert results["cuda"][2].dtype == dtype


def test_dropout_on_cuda_is_torchs(monkeypatch):
    """Our CPU dropout's bits are for the CPU only: on CUDA the model calls torch's fused dropout."""
    calls = []
    monkeypatch.setattr(torch.nn.functional, "dropout", lambda x, p, training: calls.append(p) or x)
    hidden = torch.ones(4, 8, device="cuda")
    assert dropout(hidden, 0.3, training=True) is hidden and calls == [0.3]


def attention_operators(model, batch: dict[str, torch.Tensor]) -> set[str]:
    """The attention operators a training step (forward and backward, bf16 autocast) runs."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**on("cuda", batch)).loss
        loss.backward()
    return {event.key for event in profile.key_averages() if "_attention_" in event.key}


def test_cuda_training_runs_the_memory_efficient_attention_kernels(batch):
    """`_attention_kernels` puts them first for the padded, causal and cross attentions of a training step."""
    model = make_tiny_model(d_model=64).to("cuda").train()  # head dim 16: every kernel can take it
    operators = attention_operators(model, batch)
    assert {"aten::_efficient_attention_forward", "aten::_efficient_attention_backward"} <= operators
    assert not any("cudnn" in name or "flash" in name for name in operators)


def test_cuda_gradient_checkpointing_recomputes_with_the_same_attention_kernels(batch):
    """The recomputed forward must pick the kernels of the first, or checkpointing finds other saved tensors."""
    grads = []
    for checkpointing in (False, True):
        model = make_tiny_model(d_model=64, dropout=0.0).to("cuda").train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model(**on("cuda", batch)).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)
