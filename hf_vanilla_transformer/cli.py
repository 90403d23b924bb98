"""What the scripts in `scripts/` share: argument dataclasses (as in transformers' `run_translation.py`), parsing
from flags or one JSON file, logging, building the tokenizer and model, and batched translation and scoring.

The scripts stay one page each; everything they do is a call into this module or the recipe modules.
"""

import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import datasets
import safetensors
import torch
import transformers
from tqdm.auto import tqdm
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, HfArgumentParser, PreTrainedTokenizerBase

from .configuration_vanilla_transformer import PRESETS, VanillaTransformerConfig
from .cpu_memory import reuse_freed_cpu_memory
from .data import load_parallel_corpus
from .metrics import moses_detokenize, multi_bleu, sacrebleu_scores, tokenized_bleu
from .model_card import write_model_card
from .modeling_vanilla_transformer import VanillaTransformerForConditionalGeneration
from .tokenization import check_tokenizer_matches_config, train_bpe_tokenizer

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


@dataclass
class ModelArguments:
    """Model size (a preset of `VanillaTransformerConfig`, with optional overrides) and its tokenizer, or a trained
    model to start from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start from this trained model (folder or Hub name) and its tokenizer instead of a new model of "
            "--preset: to train it on (with --schedule_start) or fine-tune it. Its config fixes the architecture."
        },
    )
    preset: str = field(
        default="tiny",
        metadata={"help": f"Model size: one of {', '.join(PRESETS)} (base/big: Table 3; tiny: Multi30k-sized)."},
    )
    d_model: int | None = field(default=None, metadata={"help": "Override of the preset's d_model."})
    encoder_layers: int | None = field(default=None, metadata={"help": "Override: encoder layers (N)."})
    decoder_layers: int | None = field(default=None, metadata={"help": "Override: decoder layers (N)."})
    encoder_attention_heads: int | None = field(default=None, metadata={"help": "Override: encoder heads (h)."})
    decoder_attention_heads: int | None = field(default=None, metadata={"help": "Override: decoder heads (h)."})
    encoder_ffn_dim: int | None = field(default=None, metadata={"help": "Override: encoder d_ff."})
    decoder_ffn_dim: int | None = field(default=None, metadata={"help": "Override: decoder d_ff."})
    dropout: float | None = field(default=None, metadata={"help": "Override: P_drop (§5.4)."})
    attention_dropout: float | None = field(default=None, metadata={"help": "Override: dropout on attention."})
    activation_dropout: float | None = field(default=None, metadata={"help": "Override: dropout after the ReLU."})
    position_embedding_type: str | None = field(
        default=None, metadata={"help": "Override: 'sinusoidal' (§3.5) or 'learned' (Table 3 row E)."}
    )
    attention_bias: bool | None = field(
        default=None, metadata={"help": "Override: biases on W^Q, W^K, W^V, W^O (fairseq, Marian; not the paper's)."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A trained tokenizer (folder or Hub name). Default: the one in output_dir if there, else a joint "
            "BPE trained on the train split and saved there."
        },
    )
    vocab_size: int = field(
        default=10000, metadata={"help": "Size of the joint BPE vocabulary trained when no tokenizer is given."}
    )

    def config_overrides(self) -> dict:
        """The config fields given on the command line."""
        skip = {"model_name_or_path", "preset", "tokenizer_name_or_path", "vocab_size"}
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in skip and getattr(self, f.name) is not None
        }


@dataclass
class DataArguments:
    """The parallel corpus: a Multi30k-style folder of SPLIT.LANG[.gz] files or a Hub dataset."""

    dataset: str = field(
        default="../shared/data/multi30k",
        metadata={"help": "Folder of SPLIT.LANG[.gz] files (a Multi30k layout) or a Hub dataset name."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset config (e.g. de-en)."})
    source_lang: str = field(default="en", metadata={"help": "Source language code (a column or file suffix)."})
    target_lang: str = field(default="de", metadata={"help": "Target language code."})
    train_split: str = field(default="train", metadata={"help": "Split to train the model and tokenizer on."})
    validation_split: str = field(default="val", metadata={"help": "Split to evaluate on during and after training."})
    eval_splits: list[str] = field(
        default_factory=lambda: ["test_2016_flickr", "test_2017_flickr"],
        metadata={"help": "Splits to translate and score (train.py adds validation_split)."},
    )
    tok_references: str | None = field(
        default=None,
        metadata={
            "help": "Folder of tokenised references (SPLIT.*.LANG[.gz]) for tokenised BLEU. Default: DATASET/tok "
            "when it exists (Multi30k's lowercased, Moses-tokenised files)."
        },
    )
    raw_references: str | None = field(
        default=None,
        metadata={
            "help": "Set when DATASET holds Moses-tokenised text (Multi30k's tok/ files): the folder of the raw "
            "references. sacreBLEU then scores the model's Moses-detokenised output against these, and tokenised "
            "BLEU its output as it is against DATASET's own files."
        },
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Truncate source and target to this many tokens (default: no truncation)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training pairs."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use the first N pairs of each eval split."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenisation."})

    def load(self, splits: Sequence[str], max_samples: int | None = None) -> datasets.DatasetDict:
        """The given splits with one string column per language, each cut to `max_samples` pairs if given."""
        corpus = load_parallel_corpus(
            self.dataset, self.source_lang, self.target_lang, splits=splits, config_name=self.dataset_config_name
        )
        if max_samples is None:
            return corpus
        return datasets.DatasetDict({s: ds.select(range(min(max_samples, len(ds)))) for s, ds in corpus.items()})

    def load_training_splits(self) -> datasets.DatasetDict:
        """The train split (cut to max_train_samples) and the validation split (cut to max_eval_samples)."""
        train = self.load([self.train_split], self.max_train_samples)
        validation = self.load([self.validation_split], self.max_eval_samples)
        return datasets.DatasetDict({**train, **validation})

    def tok_reference_dir(self) -> Path | None:
        """--tok_references, else the dataset itself if it is tokenised text, else DATASET/tok if it exists."""
        if self.tok_references is not None:
            return _existing_dir(self.tok_references, "tok_references")
        if self.raw_references is not None:
            return Path(self.dataset)
        default = Path(self.dataset) / "tok"
        return default if default.is_dir() else None

    def references(self, corpus: datasets.DatasetDict, split: str) -> list[str]:
        """The references sacreBLEU scores `split` against: the dataset's, or those of --raw_references."""
        if self.raw_references is None:
            return list(corpus[split][self.target_lang])
        raw = load_parallel_corpus(
            _existing_dir(self.raw_references, "raw_references"), self.source_lang, self.target_lang, [split]
        )[split]
        full_length = len(self.load([split])[split])
        if len(raw) != full_length:
            raise ValueError(
                f"raw_references {self.raw_references} has {len(raw)} pairs in split {split!r} but dataset "
                f"{self.dataset} has {full_length}: they must be the same sentences"
            )
        return list(raw[self.target_lang])[: len(corpus[split])]


def _existing_dir(path: str, name: str) -> Path:
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{name} {path} is not a directory")
    return Path(path)


EARLY_STOPPING = {"never": "never", "true": True, "false": False}  # command-line value -> generate()'s
# Sentences per generate() call. Finished sentences leave a beam search's batch, so larger batches waste little:
# Multi30k's val (1,014 sentences, beam 4, 2 CPU cores) took 8.45 s in batches of 64, 6.56 s of 128, 6.47 s of 256
# (medians of 4, the same translations; benchmarks/RESULTS.md).
TRANSLATE_BATCH_SIZE = 128


@dataclass
class GenerationArguments:
    """Decoding for evaluate.py and translate.py; unset fields keep the model's generation config (§6.1)."""

    num_beams: int | None = field(default=None, metadata={"help": "Beam size (the paper: 4)."})
    length_penalty: float | None = field(default=None, metadata={"help": "Length penalty alpha (the paper: 0.6)."})
    length_penalty_form: str | None = field(
        default=None, metadata={"help": "'gnmt' ((5+|Y|)/6)^alpha as in the paper, or 'hf' |Y|^alpha."}
    )
    max_length_offset: int | None = field(
        default=None, metadata={"help": "Maximum output length = source length + this (the paper: 50)."}
    )
    max_new_tokens: int | None = field(default=None, metadata={"help": "A fixed maximum output length instead."})
    early_stopping: str | None = field(
        default=None,
        metadata={
            "help": "When a beam search stops: 'never' (the paper: once no running hypothesis can win), 'true' "
            "(once num_beams hypotheses have finished) or 'false' (transformers' heuristic)."
        },
    )
    batch_size: int = field(default=TRANSLATE_BATCH_SIZE, metadata={"help": "Sentences per generate() call."})
    device: str | None = field(default=None, metadata={"help": "Device (default: cuda if available, else cpu)."})

    def __post_init__(self):
        if self.early_stopping is not None and self.early_stopping not in EARLY_STOPPING:
            raise ValueError(f"early_stopping must be one of {list(EARLY_STOPPING)}, got {self.early_stopping!r}")

    def generate_kwargs(self) -> dict:
        skip = {"batch_size", "device"}
        kwargs = {k: v for k, v in asdict(self).items() if k not in skip and v is not None}
        if self.early_stopping is not None:
            kwargs["early_stopping"] = EARLY_STOPPING[self.early_stopping]
        return kwargs

    def torch_device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def parse_args(types: tuple[type, ...], argv: Sequence[str] | None = None) -> tuple:
    """`HfArgumentParser(types)` on `argv` (default: sys.argv), or on one JSON file given as the only argument."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(types)
    if len(argv) == 1 and argv[0].endswith(".json"):
        path = Path(argv[0])
        if not path.is_file():
            raise FileNotFoundError(f"argument file {path} not found")
        return parser.parse_json_file(json_file=path.resolve())
    return parser.parse_args_into_dataclasses(args=argv)


def setup_logging(level: int = logging.INFO) -> None:
    """Timestamped logs on stderr for our modules, the scripts, transformers and datasets."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stderr)],
    )
    for name in ("hf_vanilla_transformer", "__main__"):
        logging.getLogger(name).setLevel(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_explicit_format()
    datasets.utils.logging.set_verbosity(level)


def train_tokenizer(corpus: datasets.Dataset, source_lang: str, target_lang: str, vocab_size: int):
    """§5.1: one BPE vocabulary learned on the source and target sides of the training split together."""
    texts = list(corpus[source_lang]) + list(corpus[target_lang])
    logger.info("Training a joint BPE of %d tokens on %d sentences", vocab_size, len(texts))
    return train_bpe_tokenizer(texts, vocab_size)


def load_or_train_tokenizer(
    model_args: ModelArguments, corpus: datasets.Dataset, data_args: DataArguments, output_dir: str | Path
) -> PreTrainedTokenizerBase:
    """The given tokenizer (or --model_name_or_path's), else the one saved in `output_dir` (a resumed run), else a new
    one saved there."""
    if model_args.tokenizer_name_or_path is not None:
        return AutoTokenizer.from_pretrained(model_args.tokenizer_name_or_path)
    if model_args.model_name_or_path is not None:
        check_model_folder(model_args.model_name_or_path)
        return AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    output_dir = Path(output_dir)
    if (output_dir / "tokenizer.json").is_file():
        logger.info("Using the tokenizer saved in %s", output_dir)
        return AutoTokenizer.from_pretrained(output_dir)
    tokenizer = train_tokenizer(corpus, data_args.source_lang, data_args.target_lang, model_args.vocab_size)
    tokenizer.save_pretrained(output_dir)
    return tokenizer


def build_model(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase):
    """A freshly initialised model of the preset's size, with the tokenizer's vocabulary (§3.4: shared), or the
    trained model of --model_name_or_path."""
    if model_args.model_name_or_path is not None:
        overrides = model_args.config_overrides()
        if overrides:  # new sizes would not fit the trained weights; new dropouts would change the recipe unseen
            raise ValueError(
                f"--model_name_or_path {model_args.model_name_or_path} fixes the model's config: drop "
                f"{', '.join('--' + name for name in overrides)}"
            )
        model, _ = load_model_and_tokenizer(model_args.model_name_or_path)
        check_tokenizer_matches_config(tokenizer, model.config)
        logger.info("Model: %s, %.2fM parameters", model_args.model_name_or_path, model.num_parameters() / 1e6)
        return model
    config = VanillaTransformerConfig.from_preset(
        model_args.preset, vocab_size=len(tokenizer), **model_args.config_overrides()
    )
    check_tokenizer_matches_config(tokenizer, config)
    model = VanillaTransformerForConditionalGeneration(config)
    logger.info(
        "Model: preset %r, %s, %.2fM parameters",
        model_args.preset,
        ", ".join(f"{k}={v}" for k, v in model_args.config_overrides().items()) or "no overrides",
        model.num_parameters() / 1e6,
    )
    return model


MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def check_model_folder(name_or_path: str | Path) -> None:
    """A clear error for a local model folder that does not exist, lacks one of `MODEL_FILES` or holds truncated
    weights (transformers would report a malformed Hub id instead); Hub names pass."""
    path = Path(name_or_path)
    if path.exists() or str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1:
        if not path.is_dir():
            raise FileNotFoundError(f"model folder {path} does not exist")
        missing = [name for name in MODEL_FILES if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{path} is not a complete model folder: it has no {', '.join(missing)}")
        weights = path / "model.safetensors"
        try:
            with safetensors.safe_open(weights, framework="pt"):  # reads and checks the header only
                pass
        except safetensors.SafetensorError as err:
            raise ValueError(f"{weights} is truncated or corrupted ({err}); copy or download it again") from err


def load_model_and_tokenizer(name_or_path: str | Path) -> tuple:
    """A trained model and its tokenizer from a local folder or a Hub name (`check_model_folder` first)."""
    check_model_folder(name_or_path)
    # Weights only from safetensors: never unpickle a pytorch_model.bin that a folder or Hub repo may hold.
    model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    check_tokenizer_matches_config(tokenizer, model.config)
    return model, tokenizer


def load_for_generation(name_or_path: str | Path, device: torch.device) -> tuple:
    """`load_model_and_tokenizer`, with the model moved to `device`; on a CPU, malloc then keeps freed blocks for
    the next step's (rows, vocabulary) scores (`reuse_freed_cpu_memory`)."""
    model, tokenizer = load_model_and_tokenizer(name_or_path)
    if device.type == "cpu" and reuse_freed_cpu_memory():
        logger.info("CPU decoding: malloc keeps freed blocks of up to 1 GiB for reuse (reuse_freed_cpu_memory)")
    return model.to(device), tokenizer


@torch.no_grad()
def translate(
    model,
    tokenizer: PreTrainedTokenizerBase,
    lines: Sequence[str],
    batch_size: int = TRANSLATE_BATCH_SIZE,
    **generate_kwargs,
) -> list[str]:
    """Translates `lines` with `model.generate` in batches of similar length; outputs come back in input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    # transformers would name max_new_tokens, not the offset, when source length + max_length_offset is below 1.
    offset = generate_kwargs.get("max_length_offset")
    if offset is not None and offset < 0:
        raise ValueError(f"max_length_offset must be an integer >= 0, got {offset}")
    if generate_kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError(
            f"translate returns one translation per line: num_return_sequences must be 1, got "
            f"{generate_kwargs['num_return_sequences']} (call model.generate for n-best lists)"
        )
    model.eval()
    # Sorting by length keeps padding (wasted compute) low; the output order is restored below.
    lengths = [len(ids) for ids in tokenizer(list(lines))["input_ids"]] if lines else []
    order = sorted(range(len(lines)), key=lambda i: -lengths[i])
    outputs: list[str] = [""] * len(lines)
    for start in tqdm(range(0, len(order), batch_size), desc="Translating", unit="batch", leave=False):
        indices = order[start : start + batch_size]
        batch = tokenizer([lines[i] for i in indices], return_tensors="pt", padding=True).to(model.device)
        generated = model.generate(**batch, **generate_kwargs)
        for i, text in zip(indices, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
            outputs[i] = text
    return outputs


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest OUTPUT_DIR/checkpoint-N whose trainer_state.json (written last by the Trainer) is whole, or None.

    A run killed while saving leaves a checkpoint without it (or with it cut short); transformers'
    `get_last_checkpoint` would pick that one, and resuming from it fails.
    """
    steps = {}
    for path in Path(output_dir).glob("checkpoint-*"):
        if path.is_dir() and path.name.removeprefix("checkpoint-").isdigit():
            steps[int(path.name.removeprefix("checkpoint-"))] = path
    for step in sorted(steps, reverse=True):
        state = steps[step] / "trainer_state.json"
        try:
            json.loads(state.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            logger.warning("Skipping %s: it was not completely written (no whole trainer_state.json)", steps[step])
            continue
        return steps[step]
    return None


def read_results(model_dir: str | Path) -> dict:
    """MODEL_DIR/results.json: scores per split, and a "training" entry for models trained by scripts/train.py."""
    path = Path(model_dir) / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def update_results(model_dir: str | Path, entries: dict) -> dict:
    """Merges `entries` into MODEL_DIR/results.json (what the model card reports) and returns the whole."""
    path = Path(model_dir) / RESULTS_FILE
    results = read_results(model_dir) | entries
    path.write_text(json.dumps(results, indent=2) + "\n")
    logger.info("Results written to %s", path)
    return results


def training_summary(
    argv: Sequence[str],
    training_args,
    data_args: DataArguments,
    runtime_s: float,
    updates: int,
    target_tokens_per_update: float,
    resumed_from_update: int = 0,
) -> dict:
    """The "training" entry of results.json, for the model card: command, hardware, minutes, updates, real target
    tokens per second (all processes), languages.

    A resumed run's `runtime_s` covers this process only: minutes and tokens/s are of the updates after
    `resumed_from_update`, which the entry records, while `updates` is the run's total."""
    processes = training_args.world_size
    # `accelerate launch` sets ACCELERATE_MIXED_PRECISION in every process it starts, one process included.
    launched = processes > 1 or "ACCELERATE_MIXED_PRECISION" in os.environ
    launcher = f"accelerate launch --num_processes {processes}" if launched else "python"
    device = training_args.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    return {
        "command": f"{launcher} scripts/train.py {shlex.join(argv)}",
        "hardware": f"{processes} x {name}",
        "minutes": round(runtime_s / 60, 1),
        "updates": updates,
        "target_tokens_per_s": (
            round(target_tokens_per_update * (updates - resumed_from_update) / runtime_s) if runtime_s > 0 else None
        ),
        "languages": [data_args.source_lang, data_args.target_lang],
    } | ({"resumed_from_update": resumed_from_update} if resumed_from_update else {})


def evaluate_splits(
    model,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    splits: Sequence[str],
    output_dir: str | Path,
    batch_size: int = TRANSLATE_BATCH_SIZE,
    **generate_kwargs,
) -> dict[str, dict]:
    """Translates each split, scores it, and writes `hypotheses.SPLIT.LANG.txt` and `results.json` to `output_dir`.

    Scores: sacreBLEU and chrF against the raw references, plus Multi30k's tokenised BLEU where the tokenised
    references have the split (see `metrics.py` for why the two BLEU figures differ). `results.json` maps each
    split to its scores; splits scored before and not now are kept. A model trained on tokenised text (with
    `data_args.raw_references`) has its tokenised output scored as it is by tokenised BLEU, and Moses-detokenised
    by sacreBLEU and in the hypotheses file.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    splits = list(dict.fromkeys(splits))  # a split named twice (train.py adds the validation split) is scored once
    src, tgt = data_args.source_lang, data_args.target_lang
    corpus = data_args.load(splits, data_args.max_eval_samples)
    tok_dir = data_args.tok_reference_dir()
    tok_corpus = load_parallel_corpus(tok_dir, src, tgt) if tok_dir is not None else {}
    paper_fields = ("num_beams", "length_penalty", "length_penalty_form", "max_length_offset", "early_stopping")
    decoding = {k: getattr(model.generation_config, k, None) for k in paper_fields} | generate_kwargs

    references = {split: data_args.references(corpus, split) for split in splits}  # errors before translating
    tokenised_output = data_args.raw_references is not None
    results = {}
    for split in splits:
        output = translate(model, tokenizer, list(corpus[split][src]), batch_size, **generate_kwargs)
        hypotheses = moses_detokenize(output, tgt) if tokenised_output else output
        (output_dir / f"hypotheses.{split}.{tgt}.txt").write_text("".join(f"{h}\n" for h in hypotheses))
        scores = sacrebleu_scores(hypotheses, references[split])
        line = f"{split} ({len(hypotheses)} sentences): sacreBLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f}"
        if split in tok_corpus:
            tok_refs = list(tok_corpus[split][tgt])[: len(output)]
            tok = multi_bleu(output, tok_refs) if tokenised_output else tokenized_bleu(output, tok_refs, tgt)
            scores.update(tok_bleu=tok["bleu"], tok_bleu_signature=tok["bleu_signature"])
            line += f", tokenised BLEU {tok['bleu']:.2f}"
        results[split] = {**scores, "sentences": len(hypotheses), "decoding": decoding}
        logger.info("%s [%s]", line, scores["bleu_signature"])
    return update_results(output_dir, results)


def export_model_folder(model_dir: str | Path, output_dir: str | Path, name: str) -> list[str]:
    """Writes the folder a Hub repo `name` gets: model with remote code and pipeline, tokenizer, generation config
    and the model card (README.md, from MODEL_DIR/results.json). Returns the file names written.

    Loading and saving again (rather than copying) writes `auto_map`, `custom_pipelines` and the Python files of
    this version of the package.
    """
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ValueError(f"output folder {output_dir} exists and is not an empty folder")
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved model folder (no config.json)")
    model, tokenizer = load_model_and_tokenizer(model_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    write_model_card(output_dir, read_results(model_dir), name=name)
    return sorted(path.name for path in output_dir.iterdir())


__all__ = [
    "DataArguments",
    "GenerationArguments",
    "ModelArguments",
    "build_model",
    "check_model_folder",
    "evaluate_splits",
    "export_model_folder",
    "last_complete_checkpoint",
    "load_for_generation",
    "load_model_and_tokenizer",
    "load_or_train_tokenizer",
    "parse_args",
    "read_results",
    "setup_logging",
    "train_tokenizer",
    "training_summary",
    "translate",
    "update_results",
]
