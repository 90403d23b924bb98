"""The model under the stock Seq2SeqTrainer: losses and updates as transformers users expect."""

import torch
from conftest import make_tiny_model
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments


def examples(n: int = 8) -> list[dict]:
    """Copy task sentences of different lengths (so padding is involved)."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        tokens = torch.randint(4, 40, (3 + i % 4,), generator=generator).tolist() + [2]
        rows.append({"input_ids": tokens, "attention_mask": [1] * len(tokens), "labels": tokens})
    return rows


def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in rows)

    def pad(key, value):
        return torch.tensor([r[key] + [value] * (width - len(r[key])) for r in rows])

    return {
        "input_ids": pad("input_ids", 0),
        "attention_mask": pad("attention_mask", 0),
        "labels": pad("labels", -100),
    }


def train(tmp_path, batch_size: int, accumulation: int, steps: int, learning_rate: float, dropout: float = 0.0):
    model = make_tiny_model(dropout=dropout)
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        optim="sgd",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        dataloader_drop_last=False,
        disable_tqdm=True,
    )
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=examples(), data_collator=collate)
    trainer.get_train_dataloader = lambda: torch.utils.data.DataLoader(  # a fixed order for both runs
        examples(), batch_size=batch_size, collate_fn=collate
    )
    trainer.train()
    return model, trainer


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """The Trainer passes num_items_in_batch; the model divides the summed loss by it, not by each micro-batch."""
    big, _ = train(tmp_path / "big", batch_size=8, accumulation=1, steps=1, learning_rate=0.5)
    accumulated, trainer = train(tmp_path / "acc", batch_size=2, accumulation=4, steps=1, learning_rate=0.5)
    assert trainer.model_accepts_loss_kwargs
    for (name, p_big), p_acc in zip(big.named_parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(p_big, p_acc, atol=1e-6, rtol=1e-5, msg=name)
    assert not torch.equal(big.lm_head.weight, make_tiny_model().lm_head.weight)  # it did train


def test_a_few_trainer_steps_lower_the_loss(tmp_path):
    _, trainer = train(tmp_path, batch_size=4, accumulation=1, steps=40, learning_rate=0.5, dropout=0.1)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
