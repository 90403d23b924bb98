"""VanillaSeq2SeqTrainer: token-budget batches, the loss it logs, gradient accumulation, schedule, evaluation."""

import copy
import platform
import random
import subprocess
import sys
import warnings
from unittest import mock

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import Seq2SeqTrainingArguments, TrainerCallback

from hf_vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from hf_vanilla_transformer.batching import batch_by_tokens
from hf_vanilla_transformer.data import tokenize_corpus
from hf_vanilla_transformer.losses import label_smoothed_nll_loss
from hf_vanilla_transformer.metrics import build_compute_metrics
from hf_vanilla_transformer.schedule import noam_lr
from hf_vanilla_transformer.tokenization import train_bpe_tokenizer
from hf_vanilla_transformer.trainer import VanillaSeq2SeqTrainer, VanillaSeq2SeqTrainingArguments

WORDS = "a red blue green cat dog bird runs sits jumps big small man woman the on in".split()


@pytest.fixture(autouse=True)
def one_thread():
    # Two shared cores: a second intra-op thread makes these tiny models ~10x slower, not faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) for _ in range(300)]
    return train_bpe_tokenizer(texts, 270)


def sentences(n: int, seed: int, min_words: int = 2, max_words: int = 9) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))) for _ in range(n)]


def copy_dataset(tokenizer, texts: list[str]) -> datasets.Dataset:
    """A copy task (target = source), tokenised as the scripts do (with src_len/tgt_len columns)."""
    raw = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"en": texts, "de": texts})})
    return tokenize_corpus(raw, tokenizer, "en", "de")["train"]


def tiny_model(tokenizer, d_model: int = 16, dropout: float = 0.0) -> VanillaTransformerForConditionalGeneration:
    torch.manual_seed(0)
    config = VanillaTransformerConfig(
        vocab_size=len(tokenizer),
        d_model=d_model,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        dropout=dropout,
    )
    return VanillaTransformerForConditionalGeneration(config)


def training_args(tmp_path, **overrides) -> VanillaSeq2SeqTrainingArguments:
    defaults = {
        "output_dir": str(tmp_path / "run"),
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": True,
        "warmup_steps": 4,
    }
    return VanillaSeq2SeqTrainingArguments(**{**defaults, **overrides})


class RecordingCollator:
    """Wraps the trainer's collator and keeps a copy of every batch it builds."""

    def __init__(self, tokenizer, model):
        from transformers import DataCollatorForSeq2Seq

        self.collator = DataCollatorForSeq2Seq(tokenizer, model=model)
        self.batches: list[dict[str, torch.Tensor]] = []

    def __call__(self, features):
        batch = self.collator(features)
        self.batches.append({k: v.clone() for k, v in batch.items()})
        return batch


def rows(batch_ids: torch.Tensor, pad: int) -> list[tuple[int, ...]]:
    return sorted(tuple(t for t in row.tolist() if t != pad) for row in batch_ids)


def test_token_budget_batches_reach_the_model(tokenizer, tmp_path):
    dataset = copy_dataset(tokenizer, sentences(40, seed=1))
    model = tiny_model(tokenizer)
    seen = []  # (input_ids, decoder_input_ids) shapes as the model's forward receives them
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((tuple(kwargs["input_ids"].shape), kwargs["decoder_input_ids"])),
        with_kwargs=True,
    )
    collator = RecordingCollator(tokenizer, model)
    max_tokens = 60
    args = training_args(tmp_path, max_tokens=max_tokens, num_train_epochs=2, seed=3)
    trainer = VanillaSeq2SeqTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, data_collator=collator
    )
    trainer.train()

    expected = [
        batch
        for epoch in (0, 1)
        for batch in batch_by_tokens(dataset["src_len"], dataset["tgt_len"], max_tokens, seed=3, epoch=epoch)
    ]
    assert len(seen) == len(collator.batches) == len(expected) == trainer.state.global_step
    for (src_shape, decoder_input_ids), batch, indices in zip(seen, collator.batches, expected, strict=True):
        assert src_shape == tuple(batch["input_ids"].shape)
        assert torch.equal(decoder_input_ids, batch["decoder_input_ids"])
        sentences_in_batch, src_len = src_shape
        assert sentences_in_batch * src_len <= max_tokens
        assert decoder_input_ids.numel() <= max_tokens
        # the same sentences as batch_by_tokens chose for this (seed, epoch), in the same batch order
        assert rows(batch["input_ids"], tokenizer.pad_token_id) == sorted(
            tuple(dataset[i]["input_ids"]) for i in indices
        )
    # the logged tokens per update are the real (unpadded) tokens of an average batch
    first_epoch = expected[: len(expected) // 2]
    assert trainer.tokens_per_update["src"] == pytest.approx(
        sum(dataset["src_len"][i] for batch in first_epoch for i in batch) / len(first_epoch)
    )


def test_no_memory_is_pinned_without_an_accelerator(tokenizer, tmp_path):
    # without --use_cpu transformers keeps its default dataloader_pin_memory=True, which torch ignores with a warning
    args = training_args(tmp_path, use_cpu=False, max_tokens=60, max_steps=1)
    dataset = copy_dataset(tokenizer, sentences(8, seed=1))
    trainer = VanillaSeq2SeqTrainer(
        model=tiny_model(tokenizer), args=args, train_dataset=dataset, processing_class=tokenizer
    )
    assert args.dataloader_pin_memory
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        next(iter(trainer.get_train_dataloader()))
    assert [str(w.message) for w in caught if "pin_memory" in str(w.message)] == []


RSS_KEPT_AFTER_FREEING_64_MIB = """
import sys, torch
from hf_vanilla_transformer.cpu_memory import reuse_freed_cpu_memory
def rss_kib():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1])
if sys.argv[1] == "reuse":
    assert reuse_freed_cpu_memory()
before = rss_kib()
torch.ones(1 << 24)  # 64 MiB, filled, freed at once
print((rss_kib() - before) // 1024)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="sets glibc's malloc, reads /proc")
def test_cpu_training_keeps_large_freed_blocks_for_reuse(tokenizer, tmp_path):
    """Each step's large tensors (logits, their gradients) reuse freed memory instead of new pages of the kernel."""
    kept_mib = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", RSS_KEPT_AFTER_FREEING_64_MIB, mode], capture_output=True, text=True, check=True
            ).stdout
        )
        for mode in ("default", "reuse")
    }
    assert kept_mib["default"] < 8 and kept_mib["reuse"] >= 63, kept_mib
    args = training_args(tmp_path, max_tokens=60, max_steps=1)
    dataset = copy_dataset(tokenizer, sentences(8, seed=1))
    with mock.patch("hf_vanilla_transformer.trainer.reuse_freed_cpu_memory", return_value=True) as reuse:
        VanillaSeq2SeqTrainer(
            model=tiny_model(tokenizer), args=args, train_dataset=dataset, processing_class=tokenizer
        )
    reuse.assert_called_once_with()


def test_logged_loss_is_label_smoothed_loss_per_token(tokenizer, tmp_path):
    dataset = copy_dataset(tokenizer, sentences(6, seed=2))
    model = tiny_model(tokenizer)
    initial = copy.deepcopy(model)
    collator = RecordingCollator(tokenizer, model)
    args = training_args(tmp_path, max_tokens=1000, max_steps=1, label_smoothing_factor=0.1)
    trainer = VanillaSeq2SeqTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, data_collator=collator
    )
    trainer.train()

    (batch,) = collator.batches
    logits = initial(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        decoder_input_ids=batch["decoder_input_ids"],
    ).logits
    loss_sum, nll_sum, ntokens = label_smoothed_nll_loss(logits, batch["labels"], 0.1)
    assert ntokens == sum(dataset["tgt_len"])
    logged = trainer.state.log_history[0]
    assert logged["loss"] == pytest.approx((loss_sum / ntokens).item(), rel=1e-5)
    assert logged["nll_loss"] == pytest.approx((nll_sum / ntokens).item(), rel=1e-5)
    # independently: torch's own smoothed and plain cross-entropy, averaged over the non-padding tokens
    flat_logits, flat_labels = logits.flatten(0, 1), batch["labels"].flatten()
    assert logged["loss"] == pytest.approx(F.cross_entropy(flat_logits, flat_labels, label_smoothing=0.1).item(), 1e-5)
    assert logged["nll_loss"] == pytest.approx(F.cross_entropy(flat_logits, flat_labels).item(), rel=1e-5)
    assert logged["nll_loss"] < logged["loss"]


def test_learning_rate_and_optimizer_follow_section_5_3(tokenizer, tmp_path):
    dataset = copy_dataset(tokenizer, sentences(30, seed=4))
    model = tiny_model(tokenizer)
    args = training_args(tmp_path, max_tokens=40, max_steps=6, warmup_steps=4, lr_scale=2.0)
    trainer = VanillaSeq2SeqTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()

    rates = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    assert rates == pytest.approx([noam_lr(step, 16, warmup_steps=4, scale=2.0) for step in range(1, 7)], rel=1e-9)
    assert rates[3] == max(rates)  # peak at step == warmup_steps
    group = trainer.optimizer.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.9, 0.98), 1e-9, 0.0)


class GradientRecorder(TrainerCallback):
    def __init__(self):
        self.gradients: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_accumulation_of_half_budgets_equals_one_full_batch(tokenizer, tmp_path):
    # Two short and two long targets: the half budget splits them into micro-batches of 6 and 14 label tokens,
    # so averaging per micro-batch (instead of over the update) would weight the short ones twice as much.
    inputs = [[5, 6, 7, 8, 2], [9, 10, 11, 12, 2], [13, 14, 15, 16, 2], [17, 18, 19, 20, 2]]
    labels = [[21, 22, 2], [23, 24, 2], [25, 26, 27, 28, 29, 30, 2], [31, 32, 33, 34, 35, 36, 2]]
    dataset = datasets.Dataset.from_dict(
        {"input_ids": inputs, "attention_mask": [[1] * len(ids) for ids in inputs], "labels": labels}
    )

    def one_update(max_tokens: int, accumulation: int):
        model = tiny_model(tokenizer, dropout=0.0)
        collator = RecordingCollator(tokenizer, model)
        recorder = GradientRecorder()
        args = training_args(
            tmp_path, max_tokens=max_tokens, gradient_accumulation_steps=accumulation, max_steps=1, warmup_steps=1
        )
        trainer = VanillaSeq2SeqTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            data_collator=collator,
            callbacks=[recorder],
        )
        trainer.train()
        return model, recorder.gradients, collator.batches, trainer.state.log_history[0]

    full_model, full_grads, full_batches, full_log = one_update(max_tokens=28, accumulation=1)
    half_model, half_grads, half_batches, half_log = one_update(max_tokens=14, accumulation=2)

    assert [int((b["labels"] != -100).sum()) for b in full_batches] == [20]
    assert sorted(int((b["labels"] != -100).sum()) for b in half_batches) == [6, 14]
    assert full_grads.keys() == half_grads.keys() and full_grads
    for name, grad in full_grads.items():
        torch.testing.assert_close(half_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    for (name, p_full), p_half in zip(full_model.named_parameters(), half_model.parameters(), strict=True):
        # Adam's first step moves a weight by lr * g / (|g| + eps): where g is near eps (1e-9), rounding in g, far
        # below the tolerance above, moves the update itself by up to lr. Compare where g is well above eps.
        clear = full_grads[name].abs() > 1e-6
        assert clear.float().mean() > 0.5, name
        torch.testing.assert_close(p_half[clear], p_full[clear], rtol=1e-5, atol=1e-6, msg=name)
    assert half_log["loss"] == pytest.approx(full_log["loss"], rel=1e-5)
    assert half_log["nll_loss"] == pytest.approx(full_log["nll_loss"], rel=1e-5)


def test_copy_task_loss_decreases(tokenizer, tmp_path):
    dataset = copy_dataset(tokenizer, sentences(120, seed=5, max_words=6))
    model = tiny_model(tokenizer, d_model=32, dropout=0.0)
    args = training_args(tmp_path, max_tokens=120, max_steps=40, warmup_steps=10, lr_scale=2.0, logging_steps=5)
    trainer = VanillaSeq2SeqTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 1.0, losses
    assert all(entry["nll_loss"] < entry["loss"] for entry in trainer.state.log_history if "loss" in entry)


def test_max_train_minutes_stops_and_saves(tokenizer, tmp_path):
    dataset = copy_dataset(tokenizer, sentences(120, seed=5, max_words=6))
    args = training_args(
        tmp_path, max_tokens=120, max_steps=40, max_train_minutes=1e-6, save_strategy="steps", save_steps=100
    )
    trainer = VanillaSeq2SeqTrainer(
        model=tiny_model(tokenizer), args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    assert trainer.state.global_step == 1  # the budget was spent after the first update
    assert (tmp_path / "run" / "checkpoint-1" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="max_train_minutes must be positive, got 0"):
        training_args(tmp_path, max_train_minutes=0)


def test_resumed_run_sees_the_batches_of_an_uninterrupted_run(tokenizer, tmp_path):
    dataset = copy_dataset(tokenizer, sentences(24, seed=6))

    def run(output_dir, resume: bool, **overrides):
        model = tiny_model(tokenizer)
        collator = RecordingCollator(tokenizer, model)
        args = training_args(tmp_path, output_dir=str(output_dir), max_tokens=50, num_train_epochs=2, **overrides)
        trainer = VanillaSeq2SeqTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, data_collator=collator
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer, [rows(b["input_ids"], tokenizer.pad_token_id) for b in collator.batches]

    whole, all_batches = run(tmp_path / "whole", resume=False)
    steps_per_epoch = whole.state.global_step // 2
    stop = steps_per_epoch + 2  # inside the second epoch
    run(tmp_path / "cut", resume=False, save_strategy="steps", save_steps=stop, max_steps=stop)
    resumed, resumed_batches = run(tmp_path / "cut", resume=True)
    assert resumed.state.global_step == whole.state.global_step
    assert resumed_batches == all_batches[stop:]


def test_evaluation_decodes_like_the_paper_and_keeps_the_generation_config(tokenizer, tmp_path):
    # Sources of ~14 tokens: with </s> and <pad> suppressed, every beam runs to the §6.1 limit of input + 50,
    # far past the 20 tokens that transformers' default generation config would allow.
    dataset = copy_dataset(tokenizer, sentences(4, seed=7, min_words=8, max_words=9))
    model = tiny_model(tokenizer)
    model.generation_config.suppress_tokens = [tokenizer.pad_token_id, tokenizer.eos_token_id]
    before = model.generation_config.to_dict()
    args = training_args(tmp_path, per_device_eval_batch_size=4)
    trainer = VanillaSeq2SeqTrainer(
        model=model,
        args=args,
        eval_dataset=dataset,
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer),
    )
    metrics = trainer.evaluate()

    assert model.generation_config.to_dict() == before
    assert model.generation_config.num_beams == 4 and model.generation_config.max_length is None
    # gen_len counts the decoder start token and the limit (source length incl. </s> + 50)
    expected = sum(n + 50 + 1 for n in dataset["src_len"]) / len(dataset)
    assert metrics["eval_gen_len"] == pytest.approx(expected)
    assert expected > 60
    assert 0.0 <= metrics["eval_bleu"] <= 100.0 and "eval_chrf" in metrics
    # eval_loss is the label-smoothed loss per token, as in training
    assert metrics["eval_loss"] > 0


def test_arguments_are_checked(tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"warmup_steps must be a whole number of updates >= 1 \(§5.3\)"):
        training_args(tmp_path, warmup_steps=0.1)
    with pytest.raises(ValueError, match="weight_decay must be 0"):
        training_args(tmp_path, weight_decay=0.01)
    with pytest.raises(ValueError, match="max_tokens must be a positive integer"):
        training_args(tmp_path, max_tokens=0)
    with pytest.raises(ValueError, match="average_last=3 needs checkpoints: set save_strategy"):
        training_args(tmp_path, average_last=3, save_strategy="no")
    with pytest.raises(ValueError, match="save_total_limit=2 keeps fewer checkpoints than average_last=3"):
        training_args(tmp_path, average_last=3, save_strategy="steps", save_total_limit=2)
    trainer = VanillaSeq2SeqTrainer(
        model=tiny_model(tokenizer),
        args=training_args(tmp_path, max_steps=1),
        train_dataset=[{"input_ids": [5, 2], "labels": [6, 2]}],
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match="train_dataset must be a datasets.Dataset with input_ids and labels"):
        trainer.train()
    plain = Seq2SeqTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="args must be VanillaSeq2SeqTrainingArguments"):
        VanillaSeq2SeqTrainer(model=tiny_model(tokenizer), args=plain, processing_class=tokenizer)


def test_loader_workers_train_exactly_as_the_main_process(tokenizer, tmp_path):
    # Collating a 16k-token batch costs a tiny model's GPU step about as much as its forward and backward: in
    # worker processes it overlaps them. The batch order is still the sampler's in the main process, every epoch.
    dataset = copy_dataset(tokenizer, sentences(40, seed=2))

    def weights_after_two_epochs(run: str, **overrides) -> dict[str, torch.Tensor]:
        model = tiny_model(tokenizer)
        args = training_args(tmp_path, output_dir=str(tmp_path / run), max_tokens=60, num_train_epochs=2, **overrides)
        VanillaSeq2SeqTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer).train()
        return model.state_dict()

    alone = weights_after_two_epochs("alone")
    workers = weights_after_two_epochs("workers", dataloader_num_workers=2, dataloader_persistent_workers=True)
    assert alone.keys() == workers.keys()
    for name, tensor in alone.items():
        assert torch.equal(tensor, workers[name]), name
    assert not torch.equal(alone["model.shared.weight"], tiny_model(tokenizer).state_dict()["model.shared.weight"])
