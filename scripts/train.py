"""Trains the Transformer with the recipe of §5, averages the last checkpoints (§6.1) and scores the result.

    python scripts/train.py --preset tiny --output_dir runs/tiny-en-de --max_tokens 4096 --num_train_epochs 30 \
        --average_last 10
    python scripts/train.py args.json                      # the same arguments as one JSON object
    accelerate launch scripts/train.py ... --bf16          # several GPUs: max_tokens is per process

Data -> tokenizer (given, or trained into output_dir) -> model of a preset -> VanillaSeq2SeqTrainer (resumes from
the last checkpoint in output_dir) -> final model in output_dir -> optional average in output_dir/averaged ->
sacreBLEU/chrF (and tokenised BLEU) of the validation and eval splits in results.json beside the scored model.
"""

import logging
import sys
from pathlib import Path

import transformers
from transformers import AutoModelForSeq2SeqLM, TrainerState, set_seed

from hf_vanilla_transformer.averaging import average_checkpoints, last_checkpoints
from hf_vanilla_transformer.cli import (
    DataArguments,
    ModelArguments,
    build_model,
    evaluate_splits,
    last_complete_checkpoint,
    load_or_train_tokenizer,
    parse_args,
    read_results,
    setup_logging,
    training_summary,
    update_results,
)
from hf_vanilla_transformer.data import tokenize_corpus
from hf_vanilla_transformer.metrics import build_compute_metrics
from hf_vanilla_transformer.trainer import VanillaSeq2SeqTrainer, VanillaSeq2SeqTrainingArguments

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, training_args = parse_args(
        (ModelArguments, DataArguments, VanillaSeq2SeqTrainingArguments), argv
    )
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    setup_logging(training_args.get_process_log_level())
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)

    corpus = data_args.load_training_splits()
    with training_args.main_process_first(desc="tokenizer"):  # the main process trains and saves it
        tokenizer = load_or_train_tokenizer(model_args, corpus[data_args.train_split], data_args, output_dir)
    model = build_model(model_args, tokenizer)
    tokenized = tokenize_corpus(
        corpus,
        tokenizer,
        data_args.source_lang,
        data_args.target_lang,
        max_length=data_args.max_length,
        num_proc=data_args.preprocessing_num_workers,
    )

    trainer = VanillaSeq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=tokenized[data_args.train_split],
        eval_dataset=tokenized[data_args.validation_split],
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer),
    )
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and output_dir.is_dir():
        checkpoint = last_complete_checkpoint(output_dir)
    resumed_from_update = 0
    if checkpoint is not None:
        logger.info("Resuming from %s", checkpoint)
        state = Path(checkpoint) / "trainer_state.json"  # if missing, the Trainer names the bad checkpoint
        resumed_from_update = TrainerState.load_from_json(str(state)).global_step if state.is_file() else 0
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    logger.info(
        "Process %d of %d finished training after %d updates",
        training_args.process_index,
        training_args.world_size,
        trainer.state.global_step,
    )
    # Every process leaves the process group before any exits: a process ending with its gloo group alive can abort
    # (SIGABRT) while the interpreter shuts down (pytorch/pytorch#179291), failing the launch after a good run.
    trainer.accelerator.end_training()
    if not trainer.is_world_process_zero():
        return {}

    model_dir, model = output_dir, trainer.model
    averaged = []
    if training_args.average_last:
        # A run ended early by max_train_minutes may hold fewer checkpoints: it averages those it has.
        checkpoints = last_checkpoints(output_dir, training_args.average_last, allow_fewer=True)
        if len(checkpoints) < training_args.average_last:
            logger.warning("Only %d checkpoints to average, not %d", len(checkpoints), training_args.average_last)
        model_dir = average_checkpoints(checkpoints, output_dir / "averaged")
        averaged = [path.name for path in checkpoints]
        logger.info("Averaged %s into %s", ", ".join(averaged), model_dir)
        model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).to(training_args.device)
    summary = training_summary(
        argv,
        training_args,
        data_args,
        train_result.metrics["train_runtime"],
        trainer.state.global_step,
        trainer.tokens_per_update["tgt"],
        resumed_from_update,
    )
    summary["averaged_checkpoints"] = averaged
    if model_args.model_name_or_path is not None:  # the card then gives both stages of the training
        summary["started_from"] = {"model": model_args.model_name_or_path} | read_results(
            model_args.model_name_or_path
        ).get("training", {})
    update_results(model_dir, {"training": summary})
    splits = [data_args.validation_split, *data_args.eval_splits]
    return evaluate_splits(
        model, tokenizer, data_args, splits, model_dir, batch_size=training_args.per_device_eval_batch_size
    )


if __name__ == "__main__":
    main()
