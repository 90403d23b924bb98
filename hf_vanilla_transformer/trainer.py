"""The training recipe of §5 as a `Seq2SeqTrainer`: token-budget batches (§5.1), Adam with the warmup schedule
(§5.3), label smoothing (§5.4), and evaluation with the decoding of §6.1.

What the stock Trainer lacks, and this subclass adds:
- batches of a fixed number of tokens, not sentences (`get_train_dataloader` with `TokenBudgetBatchSampler`);
- the loss summed over tokens and divided once by the label tokens of the whole update (`num_items_in_batch`),
  so that gradient accumulation and several processes give exactly one big batch, with the NLL logged next to
  the smoothed loss;
- the paper's optimizer and schedule (`build_optimizer`) instead of AdamW with linear decay;
- a model generation config left as it was by `predict_with_generate` (the stock `prediction_step` writes
  transformers' defaults, `max_length=20` among them, into it in place, and they would be saved with the model),
  and a `config.use_cache` left as it was (the stock `__init__` sets it to `args.use_cache`, False);
- on CPU, large freed blocks kept by malloc for the next step (`reuse_freed_cpu_memory`).
"""

import copy
import time
from dataclasses import dataclass, field
from functools import partial

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback
from transformers.trainer_utils import seed_worker
from transformers.utils import logging

from .batching import TokenBudgetBatchSampler, padding_stats
from .cpu_memory import reuse_freed_cpu_memory
from .losses import label_smoothed_nll_loss
from .schedule import build_optimizer

logger = logging.get_logger(__name__)

PAPER_TOKENS_PER_UPDATE = 25000  # §5.1: "approximately 25000 source tokens and 25000 target tokens"


@dataclass
class VanillaSeq2SeqTrainingArguments(Seq2SeqTrainingArguments):
    """`Seq2SeqTrainingArguments` with the recipe of §5 as defaults, plus the token budget and the lr scale.

    Note: `learning_rate`, `lr_scheduler_type`, `warmup_ratio`-style float warmups and `optim` are not used: the
    optimizer is Adam(0.9, 0.98, 1e-9) and the learning rate is eq. (3) times `lr_scale`.
    """

    max_tokens: int = field(
        default=4096,
        metadata={
            "help": "Token budget of one micro-batch on one process, for each side (§5.1). One update holds up to "
            "max_tokens x processes x gradient_accumulation_steps tokens per side; the paper used ~25000."
        },
    )
    max_sentences: int | None = field(
        default=None, metadata={"help": "Optional cap on the sentences of one micro-batch (none in the paper)."}
    )
    lr_scale: float = field(
        default=1.0, metadata={"help": "Factor on the learning rate of §5.3, eq. (3); 1.0 in the paper."}
    )
    warmup_steps: float = field(default=4000, metadata={"help": "warmup_steps of §5.3, eq. (3); 4000 in the paper."})
    schedule_start: int = field(
        default=0,
        metadata={
            "help": "Updates the model has already had (--model_name_or_path's run): eq. (3) goes on from update "
            "schedule_start + 1 instead of warming up again. Adam's moments start afresh."
        },
    )
    label_smoothing_factor: float = field(default=0.1, metadata={"help": "ε_ls of §5.4; 0.1 in the paper."})
    max_grad_norm: float = field(
        default=0.0, metadata={"help": "Gradient clipping norm; 0 disables it (the paper does not clip)."}
    )
    average_last: int = field(
        default=0,
        metadata={
            "help": "§6.1: after training, average the last N checkpoints into OUTPUT_DIR/averaged (the paper: 5 for "
            "base, 20 for big; save_steps sets their spacing). 0: no averaging. Used by scripts/train.py."
        },
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Every parameter gets a gradient: DDP need not search for unused ones."}
    )
    max_train_minutes: float | None = field(
        default=None,
        metadata={
            "help": "Stop training, saving a checkpoint, once this many minutes of wall time have passed (for "
            "runs of fixed duration, such as the README's); default: no limit."
        },
    )
    predict_with_generate: bool = field(
        default=True, metadata={"help": "Evaluate with generate() (beam search of §6.1) to report BLEU."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens}")
        if self.warmup_steps < 1 or self.warmup_steps != int(self.warmup_steps):
            raise ValueError(f"warmup_steps must be a whole number of updates >= 1 (§5.3), got {self.warmup_steps}")
        if self.schedule_start < 0:
            raise ValueError(f"schedule_start must be a number of updates >= 0, got {self.schedule_start}")
        if self.average_last < 0:
            raise ValueError(f"average_last must be >= 0, got {self.average_last}")
        if self.average_last and self.save_strategy == "no":
            raise ValueError(f"average_last={self.average_last} needs checkpoints: set save_strategy and save_steps")
        if self.average_last and self.save_total_limit is not None and self.save_total_limit < self.average_last:
            raise ValueError(
                f"save_total_limit={self.save_total_limit} keeps fewer checkpoints than "
                f"average_last={self.average_last}"
            )
        if self.max_train_minutes is not None and self.max_train_minutes <= 0:
            raise ValueError(f"max_train_minutes must be positive, got {self.max_train_minutes}")
        if self.lr_scale <= 0:
            raise ValueError(f"lr_scale must be positive, got {self.lr_scale}")
        if self.weight_decay:
            raise ValueError(
                f"weight_decay must be 0: the Adam of §5.3 has none, got {self.weight_decay} "
                "(pass optimizers=(optimizer, scheduler) to the trainer for another optimizer)"
            )


class _RecipeCallback(TrainerCallback):
    """Keeps the trainer's NLL log and the sampler's epoch in step with the Trainer's state.

    The epoch is set at each epoch start because on a resumed epoch under several processes accelerate's
    `skip_first_batches` hides the batch sampler from `DataLoaderShard.set_epoch` (see `batching.py`), and that
    epoch would otherwise replay epoch 0's batch order.
    """

    def __init__(self, trainer: "VanillaSeq2SeqTrainer", sampler: TokenBudgetBatchSampler):
        self.trainer = trainer
        self.sampler = sampler

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._nll = torch.zeros_like(self.trainer._nll)
        self.trainer._nll_step = state.global_step  # nonzero when resuming

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is `epoch + fraction done`: its floor is the epoch the Trainer is about to run.
        self.sampler.set_epoch(int(state.epoch or 0))


class _TimeBudgetCallback(TrainerCallback):
    """Ends training after `max_train_minutes` of wall time, saving the last state like a planned end would."""

    def __init__(self, minutes: float):
        self.seconds = 60 * minutes
        self.start = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.start >= self.seconds:
            logger.info("Stopping after %.1f minutes (max_train_minutes)", self.seconds / 60)
            control.should_training_stop = True
            control.should_save = True


class VanillaSeq2SeqTrainer(Seq2SeqTrainer):
    """`Seq2SeqTrainer` for the recipe of §5; takes `VanillaSeq2SeqTrainingArguments`.

    Without `data_collator`, `DataCollatorForSeq2Seq(processing_class, model=model)` builds the padded batches and
    the decoder inputs (labels shifted right). Without `optimizers`, `build_optimizer` makes Adam and the schedule
    of §5.3 (so, like any `optimizers=`, not with FSDP). After `train()` starts, `tokens_per_update` holds the
    mean real source and target tokens of one update (all processes and accumulation steps).
    """

    # compute_loss divides by the label tokens of the whole update: the Trainer must not divide again.
    loss_is_scaled_for_ga = True

    def __init__(self, model=None, args: VanillaSeq2SeqTrainingArguments = None, data_collator=None, **kwargs):
        if not isinstance(args, VanillaSeq2SeqTrainingArguments):
            raise ValueError(
                f"args must be VanillaSeq2SeqTrainingArguments (with max_tokens), got {type(args).__name__}"
            )
        if model is None:
            raise ValueError("model is required (model_init is not supported: the optimizer is built from the model)")
        if data_collator is None:
            if kwargs.get("processing_class") is None:
                raise ValueError("pass processing_class (the tokenizer) or a data_collator building decoder_input_ids")
            data_collator = DataCollatorForSeq2Seq(kwargs["processing_class"], model=model)
        if kwargs.get("optimizers", (None, None)) == (None, None):
            kwargs["optimizers"] = build_optimizer(
                model,
                model.config.d_model,
                warmup_steps=int(args.warmup_steps),
                scale=args.lr_scale,
                start=args.schedule_start,
            )
        use_cache = model.config.use_cache
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)
        # The Trainer sets config.use_cache = args.use_cache (False), which every saved config.json would keep;
        # compute_loss turns the cache off for training instead.
        model.config.use_cache = use_cache
        if self.args.device.type == "cpu" and reuse_freed_cpu_memory():
            logger.info("CPU training: malloc keeps freed blocks of up to 1 GiB for reuse (reuse_freed_cpu_memory)")
        # The Trainer counts the label tokens of each update only for models it believes take them.
        self.model_accepts_loss_kwargs = True
        self._nll = torch.tensor(0.0)  # NLL of the updates since the last log, as `loss` is accumulated
        self._nll_step = 0  # global step of the last log
        self.tokens_per_update: dict[str, float] = {}

    # --- §5.1: batches of ~max_tokens tokens ------------------------------------------------------------------

    def get_train_dataloader(self) -> DataLoader:
        """Batches of at most `max_tokens` tokens per side from `TokenBudgetBatchSampler`, one epoch order per seed."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        dataset = self.train_dataset
        if not isinstance(dataset, datasets.Dataset):
            raise ValueError(
                "train_dataset must be a datasets.Dataset with input_ids and labels (see data.tokenize_corpus), "
                f"got {type(dataset).__name__}"
            )
        columns = dataset.column_names
        # data.tokenize_corpus stores the lengths; count them otherwise.
        src_lengths = dataset["src_len"] if "src_len" in columns else [len(ids) for ids in dataset["input_ids"]]
        tgt_lengths = dataset["tgt_len"] if "tgt_len" in columns else [len(ids) for ids in dataset["labels"]]
        sampler = TokenBudgetBatchSampler(
            list(src_lengths),
            list(tgt_lengths),
            self.args.max_tokens,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            max_sentences=self.args.max_sentences,
        )
        self._log_tokens_per_update(sampler)
        self.pop_callback(_RecipeCallback)  # the one of an earlier train() call
        self.add_callback(_RecipeCallback(self, sampler))
        if self.args.max_train_minutes is not None:
            self.pop_callback(_TimeBudgetCallback)
            self.add_callback(_TimeBudgetCallback(self.args.max_train_minutes))

        num_workers = self.args.dataloader_num_workers
        loader = DataLoader(
            self._remove_unused_columns(dataset, description="training"),
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=num_workers,
            # pinned memory only speeds copies to an accelerator; on CPU torch warns that it is ignored
            pin_memory=self.args.dataloader_pin_memory and self.args.device.type != "cpu",
            persistent_workers=self.args.dataloader_persistent_workers,
            prefetch_factor=self.args.dataloader_prefetch_factor,
            worker_init_fn=partial(seed_worker, num_workers=num_workers, rank=self.args.process_index),
        )
        # accelerate shards the batches: process p takes batches p, p + n, ... (see batching.py)
        return self.accelerator.prepare(loader)

    def _log_tokens_per_update(self, sampler: TokenBudgetBatchSampler) -> None:
        """Logs the real tokens per update, to compare with the paper's ~25000 + 25000 (like nanoGPT's tokens/iter)."""
        stats = padding_stats(list(sampler), sampler.src_lengths, sampler.tgt_lengths)
        micro_batches = self.args.gradient_accumulation_steps * self.args.world_size
        self.tokens_per_update = {
            "src": stats["src_tokens_per_batch"] * micro_batches,
            "tgt": stats["tgt_tokens_per_batch"] * micro_batches,
        }
        logger.info(
            "Token-budget batches (§5.1): %d per epoch of at most %d tokens per side, sorted by the %s side; one "
            "update = %d processes x %d accumulation steps = ~%.0f source + ~%.0f target tokens (paper: ~%d + ~%d); "
            "padding adds %.1f%% (source), %.1f%% (target).",
            stats["num_batches"],
            self.args.max_tokens,
            sampler.sort,
            self.args.world_size,
            self.args.gradient_accumulation_steps,
            self.tokens_per_update["src"],
            self.tokens_per_update["tgt"],
            PAPER_TOKENS_PER_UPDATE,
            PAPER_TOKENS_PER_UPDATE,
            100 * (stats["src_padding_ratio"] - 1),
            100 * (stats["tgt_padding_ratio"] - 1),
        )

    # --- §5.4: label-smoothed loss, one division per update ---------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """§5.4: Σ_tokens label-smoothed cross-entropy / (label tokens of the whole update, all processes)."""
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        if labels is None:
            raise ValueError("compute_loss needs `labels` in the batch")
        if "decoder_input_ids" not in inputs:
            inputs["decoder_input_ids"] = self.accelerator.unwrap_model(model).prepare_decoder_input_ids_from_labels(
                labels
            )
        logits_mask = labels != -100
        # Packed (N, V) logits of the labelled positions only, unless the caller wants (B, T, V) logits back.
        outputs = model(**inputs, use_cache=False, logits_mask=None if return_outputs else logits_mask)
        targets = labels if return_outputs else labels[logits_mask]
        loss_sum, nll_sum, ntokens = label_smoothed_nll_loss(outputs.logits, targets, self.args.label_smoothing_factor)
        # num_items_in_batch: label tokens of all micro-batches of this update (summed over processes when
        # average_tokens_across_devices); None when evaluating a single batch.
        scale = 1.0 / (num_items_in_batch if num_items_in_batch is not None else ntokens)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # DDP averages the gradients over processes; undo it so they are the sum over the whole update.
            scale = scale * self.accelerator.num_processes
        loss = loss_sum * scale
        if model.training:
            self._nll = self._nll.to(loss.device) + (nll_sum * scale).detach()
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds `nll_loss` (nats per target token, no smoothing) next to each training `loss`, averaged alike."""
        if "loss" in logs:
            # as the Trainer's `loss`: mean over processes, then over the updates since the last log
            nll = self.accelerator.gather(self._nll.to(self.args.device)).mean().item()
            logs["nll_loss"] = nll / (self.state.global_step - self._nll_step)
            self._nll = torch.zeros_like(self._nll)
            self._nll_step = self.state.global_step
        super().log(logs, start_time)

    # --- §6.1: evaluation with the model's own decoding -------------------------------------------------------

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        """`Seq2SeqTrainer.prediction_step`, restoring the generation config that it fills with defaults in place.

        Generation then follows `model.generation_config` (beam 4, GNMT penalty, source length + 50 for our
        models) unless `generation_max_length` / `generation_num_beams` are set in the arguments.
        """
        generation_config = copy.deepcopy(self.model.generation_config)
        try:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)
        finally:
            self.model.generation_config = generation_config


__all__ = ["PAPER_TOKENS_PER_UPDATE", "VanillaSeq2SeqTrainer", "VanillaSeq2SeqTrainingArguments"]
