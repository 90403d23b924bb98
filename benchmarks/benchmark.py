"""Speed of our Transformer against its peers at the same sizes, measured side by side in one process.

Peers, each with our random weights where it can share them:
- transformers' `MarianMTModel` configured as the same post-LN model (ReLU, sinusoids, scaled and tied shared
  embeddings, same dropout placement, `final_logits_bias` = 0). Marian's sinusoids put all sines before all cosines
  where ours (§3.5) interleave them, so its outputs differ from ours unless its table is replaced by ours (the
  tests do that); the work is the same.
- `torch.nn.Transformer` (post-LN: norm_first=False, batch_first=True, no final LayerNorm) with our embeddings,
  positions and tied output projection. It has no `generate()` and no key/value cache: it decodes greedily by
  re-running the decoder over the whole prefix at each step, as PyTorch's own translation tutorial does.
- CTranslate2 (if installed): our model through `hf_vanilla_transformer.export_ctranslate2`, and the Marian peer
  through CTranslate2's own `TransformersConverter`, in float32 and int8.

Steps are interleaved (round-robin over the models within each repetition, the starting model rotating), so that
machine drift (other jobs, clocks, heat) hits every model alike. Sentences are random token ids of 10-30 tokens
(Multi30k-like), seeded. Inference forces every output to the same length (</s> suppressed up to the maximum
number of new tokens), so every engine does the same work whatever its weights predict.

    python benchmarks/benchmark.py --quick                       # about a minute on 2 CPU cores
    python benchmarks/benchmark.py --output_json b.json --output_md b.md
    python benchmarks/benchmark.py --device cuda --bf16 --output_json gpu.json
"""

import argparse
import contextlib
import gc
import json
import logging
import math
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

import torch
import transformers
from tokenizers import Tokenizer, models
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList, MarianConfig, MarianMTModel, PreTrainedTokenizerFast
from transformers.modeling_outputs import Seq2SeqLMOutput

import hf_vanilla_transformer
from hf_vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from hf_vanilla_transformer.batching import batch_by_tokens
from hf_vanilla_transformer.data import load_parallel_corpus
from hf_vanilla_transformer.modeling_vanilla_transformer import shift_tokens_right, sinusoids

try:
    import ctranslate2
except ImportError:  # optional: its rows are then reported as skipped
    ctranslate2 = None

logger = logging.getLogger("benchmark")

PAD, EOS = 0, 2
MODELS = ("ours", "marian", "torch_nn")
MARIAN = "marian"
FOOTPRINT_STEPS = 2  # the second step is the peak: Adam state, gradients and activations all live at once
# Dense bf16 peak of the datasheets (SXM parts), for model FLOPs utilisation; --peak_tflops overrides.
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
VARIED_LENGTHS = "beam4_lengths"
DECODINGS = {
    "greedy": {"num_beams": 1, "do_sample": False},
    "beam4": {"num_beams": 4, "do_sample": False, "length_penalty": 1.0, "early_stopping": True},
    # the paper's §6.1 scoring: GNMT length penalty, alpha = 0.6 (ours only)
    "beam4_gnmt": {
        "num_beams": 4,
        "do_sample": False,
        "length_penalty": 0.6,
        "length_penalty_form": "gnmt",
        "early_stopping": "never",  # §6.1's "terminate early when possible" (no effect at a forced output length)
    },
    # beam4 with real-like output lengths: each sentence ends as long as its source (10-30 tokens), so that a batch
    # holds finished sentences while others still decode, as in real translation (ours and Marian only)
    VARIED_LENGTHS: {"num_beams": 4, "do_sample": False, "length_penalty": 1.0, "early_stopping": True},
}


# --- settings and sizes ----------------------------------------------------------------------------------------


@dataclass
class Settings:
    """What one run measures; `--quick` shrinks every count."""

    sizes: dict[str, VanillaTransformerConfig]
    device: str = "cpu"
    bf16: bool = False
    token_budget: int = 2000  # target tokens per training batch
    train_models: tuple[str, ...] = MODELS  # the models whose training is measured
    compile: str | None = None  # torch.compile mode (dynamic shapes) of the models for training
    train_batches: int = 4
    train_warmup: int = 2  # untimed steps per model on each batch shape: allocator, kernels, Adam state
    train_reps: int = 10
    sentences: int = 320
    batch_size: int = 32
    output_length: int = 40
    inference_reps: int = 2
    latency_sentences: int = 16
    memory: bool = True
    training: bool = True
    inference: bool = True
    peak_tflops: float | None = None
    seed: int = 0
    # lengths (words + </s>) of a corpus's train split for the training batches, bucketed as our sampler does
    length_corpus: tuple[str, str, str] | None = None  # (directory or Hub name, source lang, target lang)


def parse_size(spec: str, vocab_size: int) -> tuple[str, VanillaTransformerConfig]:
    """A preset name (tiny, small, base, big) or NAME:D_MODEL:LAYERS:HEADS:FFN for a custom size."""
    if ":" not in spec:
        return spec, VanillaTransformerConfig.from_preset(spec, vocab_size=vocab_size)
    parts = spec.split(":")
    if len(parts) != 5 or not all(p.isdigit() for p in parts[1:]):
        raise ValueError(f"A custom size must read NAME:D_MODEL:LAYERS:HEADS:FFN (integers), got {spec!r}.")
    d_model, layers, heads, ffn = (int(p) for p in parts[1:])
    config = VanillaTransformerConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
    )
    return parts[0], config


# --- data ------------------------------------------------------------------------------------------------------


def random_sentences(count: int, vocab_size: int, generator: torch.Generator) -> list[list[int]]:
    """Multi30k-like lengths, 10-30 tokens with the final </s>; ids avoid the specials and the last id (see
    `benchmark_tokenizer`)."""
    return sentences_of_lengths(torch.randint(10, 31, (count,), generator=generator).tolist(), vocab_size, generator)


def sentences_of_lengths(lengths: Sequence[int], vocab_size: int, generator: torch.Generator) -> list[list[int]]:
    """Random ids, each sentence ending with </s> at its given length."""
    return [torch.randint(4, vocab_size - 1, (n - 1,), generator=generator).tolist() + [EOS] for n in lengths]


def pad(sequences: Sequence[Sequence[int]], value: int = PAD) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    return torch.tensor([list(s) + [value] * (width - len(s)) for s in sequences])


@dataclass
class TrainBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor  # -100 at padding
    target_tokens: int

    @classmethod
    def of(cls, sources: list[list[int]], targets: list[list[int]]) -> "TrainBatch":
        input_ids = pad(sources)
        return cls(input_ids, (input_ids != PAD).long(), pad(targets, -100), sum(map(len, targets)))

    def to(self, device: str) -> "TrainBatch":
        return TrainBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.target_tokens
        )


def token_budget_batches(
    count: int, token_budget: int, vocab_size: int, generator: torch.Generator
) -> list[TrainBatch]:
    """`count` batches of sentence pairs, each filled up to `token_budget` target tokens (§5.1 batches by tokens)."""
    batches = []
    for _ in range(count):
        sources, targets = [], []
        while sum(map(len, targets)) < token_budget:
            source, target = random_sentences(2, vocab_size, generator)
            if targets and sum(map(len, targets)) + len(target) > token_budget:
                break
            sources.append(source)
            targets.append(target)
        batches.append(TrainBatch.of(sources, targets))
    return batches


def corpus_length_batches(
    corpus: tuple[str, str, str], count: int, token_budget: int, vocab_size: int, generator: torch.Generator
) -> list[TrainBatch]:
    """`count` batches of random ids with the sentence lengths of a real corpus (words + </s>), cut by
    `batch_by_tokens` as our trainer's sampler cuts them: length-sorted, so padding is what real training meets."""
    directory, source_lang, target_lang = corpus
    train = load_parallel_corpus(directory, source_lang, target_lang, splits=["train"])["train"]
    lengths = {lang: [len(line.split()) + 1 for line in train[lang]] for lang in (source_lang, target_lang)}
    order = batch_by_tokens(lengths[source_lang], lengths[target_lang], token_budget, seed=0, epoch=0)
    return [
        TrainBatch.of(
            *(sentences_of_lengths([lengths[lang][i] for i in indices], vocab_size, generator) for lang in lengths)
        )
        for indices in order[:count]
    ]


def training_batches(settings: Settings, vocab_size: int) -> list[TrainBatch]:
    """The seeded training batches of a run, on its device: a corpus's lengths if given, else random ones."""
    generator = torch.Generator().manual_seed(settings.seed + 2)
    count, budget = settings.train_batches, settings.token_budget
    if settings.length_corpus:
        batches = corpus_length_batches(settings.length_corpus, count, budget, vocab_size, generator)
    else:
        batches = token_budget_batches(count, budget, vocab_size, generator)
    return [batch.to(settings.device) for batch in batches]


def benchmark_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """One token per id, the id itself as its name, for the CTranslate2 converters (they read a vocabulary).

    CTranslate2's Marian converter drops the last vocabulary entry, which real Marian models reserve for <pad>:
    the last id is therefore named "<pad>" (and never used), id 0 "<blank>".
    """
    names = ["<blank>", "<s>", "</s>", "<unk>", *map(str, range(4, vocab_size - 1)), "<pad>"]
    word_level = Tokenizer(models.WordLevel({name: i for i, name in enumerate(names)}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=word_level, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


# --- the peers -------------------------------------------------------------------------------------------------


def marian_config(config: VanillaTransformerConfig) -> MarianConfig:
    """MarianMTModel as the same post-LN model: ReLU, scaled shared embeddings tied to the output, same dropouts."""
    return MarianConfig(
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.encoder_attention_heads,
        decoder_attention_heads=config.decoder_attention_heads,
        encoder_ffn_dim=config.encoder_ffn_dim,
        decoder_ffn_dim=config.decoder_ffn_dim,
        activation_function=config.activation_function,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout,
        max_position_embeddings=config.max_position_embeddings,
        scale_embedding=config.scale_embedding,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=config.tie_word_embeddings,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        forced_eos_token_id=None,
    )


def marian_state_dict(ours: VanillaTransformerForConditionalGeneration) -> dict[str, torch.Tensor]:
    """Our weights under Marian's names: only the feed-forward sits one level higher there (`fc1`, not `ffn.fc1`)."""
    return {name.replace(".ffn.", "."): tensor for name, tensor in ours.state_dict().items()}


def port_to_marian(
    ours: VanillaTransformerForConditionalGeneration, marian: MarianMTModel, our_positions: bool = False
) -> None:
    """Copies our weights into `marian`; its position tables stay Marian's unless `our_positions`."""
    missing, unexpected = marian.load_state_dict(marian_state_dict(ours), strict=False)
    position_tables = {"model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight"}
    # Marian's attention projections always have biases; ours only with `attention_bias`: Marian's stay zero.
    zero = {name for name in missing if name.endswith("_proj.bias")}
    not_ported = sorted(set(missing) - position_tables - zero - {"final_logits_bias"})
    if unexpected or not_ported:
        raise ValueError(f"Marian port: none of our weights for {not_ported}; none of Marian's for {unexpected}")
    with torch.no_grad():
        marian.final_logits_bias.zero_()  # a buffer
        for name in zero:
            marian.get_parameter(name).zero_()
        if our_positions:
            for stack in (marian.model.encoder, marian.model.decoder):
                table = stack.embed_positions.weight
                table.copy_(sinusoids(torch.arange(table.shape[0]), table.shape[1]))


class TorchTransformerTranslator(nn.Module):
    """`torch.nn.Transformer` between our embeddings (§3.4), positions (§3.5) and tied output projection."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.config = config
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        common = {"dropout": config.dropout, "activation": config.activation_function, "batch_first": True}
        encoder_layer = nn.TransformerEncoderLayer(
            config.d_model, config.encoder_attention_heads, config.encoder_ffn_dim, norm_first=False, **common
        )
        decoder_layer = nn.TransformerDecoderLayer(
            config.d_model, config.decoder_attention_heads, config.decoder_ffn_dim, norm_first=False, **common
        )
        self.transformer = nn.Transformer(
            config.d_model,
            custom_encoder=nn.TransformerEncoder(
                encoder_layer, config.encoder_layers, norm=None, enable_nested_tensor=False
            ),
            custom_decoder=nn.TransformerDecoder(decoder_layer, config.decoder_layers, norm=None),
            batch_first=True,
        )
        # torch puts its one dropout rate on attention weights and after the ReLU too; ours has them apart.
        for layer in (*self.transformer.encoder.layers, *self.transformer.decoder.layers):
            layer.dropout.p = config.activation_dropout
            for attention in (layer.self_attn, getattr(layer, "multihead_attn", None)):
                if attention is not None:
                    attention.dropout = config.attention_dropout

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        positions = sinusoids(torch.arange(ids.shape[1], device=ids.device), self.config.d_model)
        hidden = self.embed_tokens(ids) * self.embed_scale + positions
        return nn.functional.dropout(hidden, p=self.config.dropout, training=self.training)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.transformer.encoder(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)

    def decode(self, decoder_input_ids: torch.Tensor, memory: torch.Tensor, attention_mask: torch.Tensor):
        length = decoder_input_ids.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=memory.device, dtype=memory.dtype)
        hidden = self.transformer.decoder(
            self.embed(decoder_input_ids),
            memory,
            tgt_mask=causal,
            tgt_is_causal=True,
            memory_key_padding_mask=attention_mask == 0,
        )
        return nn.functional.linear(hidden, self.embed_tokens.weight)  # (B, T, V), tied (§3.4)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        decoder_input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Seq2SeqLMOutput:
        if decoder_input_ids is None:
            decoder_input_ids = shift_tokens_right(labels, PAD, self.config.decoder_start_token_id)
        logits = self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        return Seq2SeqLMOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def greedy(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, length: int) -> torch.Tensor:
        """`length` argmax tokens, </s> excluded; no cache: the decoder re-reads the whole prefix each step."""
        memory = self.encode(input_ids, attention_mask)
        output = input_ids.new_full((input_ids.shape[0], 1), self.config.decoder_start_token_id)
        for _ in range(length):
            logits = self.decode(output, memory, attention_mask)[:, -1]
            logits[:, self.config.eos_token_id] = -math.inf
            output = torch.cat([output, logits.argmax(-1, keepdim=True)], dim=1)
        return output


def port_to_torch_transformer(
    ours: VanillaTransformerForConditionalGeneration, peer: TorchTransformerTranslator
) -> None:
    """Copies our weights into the nn.Transformer peer: Q, K, V stacked into `in_proj`, norm1..3 in layer order."""

    def attention(target: nn.MultiheadAttention, source) -> None:
        projections = (source.q_proj, source.k_proj, source.v_proj)
        target.in_proj_weight.copy_(torch.cat([projection.weight for projection in projections]))
        target.out_proj.weight.copy_(source.out_proj.weight)
        if source.out_proj.bias is None:  # nn.MultiheadAttention's projections always have biases: zero
            target.in_proj_bias.zero_()
            target.out_proj.bias.zero_()
        else:
            target.in_proj_bias.copy_(torch.cat([projection.bias for projection in projections]))
            target.out_proj.bias.copy_(source.out_proj.bias)

    def feed_forward(target, source) -> None:
        target.linear1.load_state_dict(source.ffn.fc1.state_dict())
        target.linear2.load_state_dict(source.ffn.fc2.state_dict())

    with torch.no_grad():
        peer.embed_tokens.weight.copy_(ours.model.shared.weight)
        for target, source in zip(peer.transformer.encoder.layers, ours.model.encoder.layers, strict=True):
            attention(target.self_attn, source.self_attn)
            feed_forward(target, source)
            target.norm1.load_state_dict(source.self_attn_layer_norm.state_dict())
            target.norm2.load_state_dict(source.final_layer_norm.state_dict())
        for target, source in zip(peer.transformer.decoder.layers, ours.model.decoder.layers, strict=True):
            attention(target.self_attn, source.self_attn)
            attention(target.multihead_attn, source.encoder_attn)
            feed_forward(target, source)
            target.norm1.load_state_dict(source.self_attn_layer_norm.state_dict())
            target.norm2.load_state_dict(source.encoder_attn_layer_norm.state_dict())
            target.norm3.load_state_dict(source.final_layer_norm.state_dict())


def build_model(name: str, config: VanillaTransformerConfig, seed: int = 0) -> nn.Module:
    """One model with its own initialisation (enough for memory, where the values do not matter)."""
    torch.manual_seed(seed)
    if name == "ours":
        return VanillaTransformerForConditionalGeneration(config)
    if name == "marian":
        return MarianMTModel(marian_config(config))
    if name == "torch_nn":
        return TorchTransformerTranslator(config)
    raise ValueError(f"Unknown model {name!r}; known: {', '.join(MODELS)}.")


def build_models(config: VanillaTransformerConfig, seed: int = 0) -> dict[str, nn.Module]:
    """Our model and both peers, all holding our random weights."""
    models = {name: build_model(name, config, seed) for name in MODELS}
    port_to_marian(models["ours"], models["marian"])
    port_to_torch_transformer(models["ours"], models["torch_nn"])
    return models


# --- timing helpers --------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, function: Callable, *args) -> float:
    """Seconds that `function(*args)` takes, the GPU's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    function(*args)
    synchronize(device)
    return time.perf_counter() - start


def rotated(names: Sequence[str], rep: int) -> list[str]:
    """The round-robin order of repetition `rep`: each model goes first in turn."""
    shift = rep % len(names)
    return [*names[shift:], *names[:shift]]


def autocast(settings: Settings) -> contextlib.AbstractContextManager:
    if settings.bf16:
        return torch.autocast(device_type=settings.device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- training --------------------------------------------------------------------------------------------------


def training_flops(config: VanillaTransformerConfig, attention_mask: torch.Tensor, labels: torch.Tensor) -> int:
    """Matrix-multiply FLOPs of forward + backward (3x forward) of the model on the real tokens of a batch.

    Per layer and token, a d x d' projection costs 2 d d'; attention costs 4 d per query-key pair (QK^T and AV),
    all keys of the sentence (the causal mask is not halved, as in PaLM's MFU). Padding counts for nothing: the
    model's work is that of each sentence alone, whatever a codebase spends on padding.
    """
    c, v = config.d_model, config.vocab_size
    source_lengths = attention_mask.sum(-1).long()  # (B,)
    target_lengths = (labels != -100).sum(-1).long()  # (B,); right-padded labels
    source, target = int(source_lengths.sum()), int(target_lengths.sum())
    encoder = config.encoder_layers * (
        source * 2 * (4 * c * c + 2 * c * config.encoder_ffn_dim) + 4 * c * int((source_lengths**2).sum())
    )
    decoder = config.decoder_layers * (
        target * 2 * (6 * c * c + 2 * c * config.decoder_ffn_dim)  # self Q,K,V,O; cross Q,O; FFN
        + source * 2 * 2 * c * c  # cross-attention K, V of the source
        + 4 * c * int((target_lengths * (target_lengths + source_lengths)).sum())
    )
    output = target * 2 * c * v
    return 3 * (encoder + decoder + output)


@dataclass
class TrainingResult:
    """Target tokens per second of forward + backward + Adam step, and what it costs."""

    size: str
    model: str
    steps: int
    target_tokens: int
    seconds: float
    tokens_per_s: float
    step_ms_median: float
    achieved_tflops: float
    mfu: float | None = None  # achieved / peak dense bf16, CUDA only
    memory_mib: float | None = None
    vs_marian: float | None = None


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: TrainBatch, settings: Settings) -> None:
    with autocast(settings):
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def adam(model: nn.Module) -> torch.optim.Optimizer:
    # §5.3's betas and eps; fused, as our trainer's and transformers' default optimizers run
    return torch.optim.Adam(model.parameters(), lr=1e-5, betas=(0.9, 0.98), eps=1e-9, fused=True)


def measure_training(
    size: str, models: dict[str, nn.Module], batches: list[TrainBatch], settings: Settings
) -> list[TrainingResult]:
    """Round-robin training steps: in repetition r every model takes one step on the same batch r."""
    config = settings.sizes[size]
    optimizers = {name: adam(model.train()) for name, model in models.items()}
    for name, model in models.items():
        # Every batch shape once at least: on CUDA the first model to meet a new shape pays the caching allocator's
        # growth and kernel choices for all (an H200 run warmed on 2 of 4 shapes gave ours and Marian step medians
        # within 1% but totals 25% apart).
        for step in range(max(settings.train_warmup, len(batches))):
            train_step(model, optimizers[name], batches[step % len(batches)], settings)
    times: dict[str, list[float]] = {name: [] for name in models}
    tokens, flops = 0, 0
    for rep in range(settings.train_reps):
        batch = batches[rep % len(batches)]
        tokens += batch.target_tokens
        flops += training_flops(config, batch.attention_mask, batch.labels)
        for name in rotated(list(models), rep):
            times[name].append(timed(settings.device, train_step, models[name], optimizers[name], batch, settings))
    peak = peak_tflops(settings)
    results = []
    for name, seconds in times.items():
        achieved = flops / sum(seconds) / 1e12
        results.append(
            TrainingResult(
                size=size,
                model=name,
                steps=len(seconds),
                target_tokens=tokens,
                seconds=sum(seconds),
                tokens_per_s=tokens / sum(seconds),
                step_ms_median=1000 * statistics.median(seconds),
                achieved_tflops=achieved,
                mfu=achieved / peak if peak else None,
            )
        )
    return results


def peak_tflops(settings: Settings) -> float | None:
    """Dense bf16 peak of this GPU (datasheet), or --peak_tflops; None on CPU or an unknown card."""
    if settings.peak_tflops is not None:
        return settings.peak_tflops
    if not (settings.device.startswith("cuda") and settings.bf16):
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


# --- memory ----------------------------------------------------------------------------------------------------


def _status_mib(field_name: str) -> float:
    """A field of /proc/self/status (Linux), in MiB: VmRSS now, or VmHWM, the peak since the last reset."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise ValueError(f"{field_name} not in /proc/self/status")


def _cpu_training_footprint(name: str, config: VanillaTransformerConfig, batches: list[TrainBatch], threads: int):
    """In a fresh process: peak RSS while building `name` and taking 2 training steps, minus the RSS before.

    A micro model of the same class trains first, so that lazy imports and kernel set-up do not count; then the
    peak is reset (writing 5 to /proc/self/clear_refs).
    """
    torch.set_num_threads(threads)
    micro = VanillaTransformerConfig(
        vocab_size=8, d_model=8, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=8, decoder_ffn_dim=8
    )
    micro_model = build_model(name, micro)
    ids = torch.tensor([[4, 5, EOS]])
    train_step(micro_model, adam(micro_model), TrainBatch(ids, torch.ones_like(ids), ids, 3), Settings(sizes={}))
    del micro_model
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mib("VmRSS")
    model = build_model(name, config).train()
    optimizer = adam(model)
    for step in range(FOOTPRINT_STEPS):
        train_step(model, optimizer, batches[step % len(batches)], Settings(sizes={}))
    return _status_mib("VmHWM") - before


def training_footprints_mib(
    names: Sequence[str], config: VanillaTransformerConfig, batches: list[TrainBatch], settings: Settings
) -> dict[str, float]:
    """Weights + gradients + Adam state + activations of training each model on these batches, in MiB.

    CUDA: peak `torch.cuda.max_memory_allocated` over 2 steps of a fresh copy, minus what was allocated before.
    CPU: freed memory stays with the allocator of a process, so each model trains in its own fresh (spawned)
    process, all at once on one thread each (memory does not mind sharing the cores), and we read the rise of
    its peak RSS. There glibc's malloc serves every block of 64 KiB or more by mmap and returns it when freed
    (`MALLOC_MMAP_THRESHOLD_`), so that the peak RSS follows the live tensors, not how the heap fragmented: two
    runs then agree to 0.1 MiB (2026-11-27, tiny: 371.8 / 371.9 MiB; 407 / 414 with malloc's own threshold).
    """
    if not settings.device.startswith("cuda"):
        context = multiprocessing.get_context("spawn")
        with (
            mock.patch.dict(os.environ, {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}),  # read by each new process
            ProcessPoolExecutor(len(names), mp_context=context, max_tasks_per_child=1) as pool,
        ):
            futures = {name: pool.submit(_cpu_training_footprint, name, config, batches, 1) for name in names}
            return {name: future.result() for name, future in futures.items()}
    footprints = {}
    for name in names:
        gc.collect()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        model = build_model(name, config).to(settings.device).train()
        optimizer = adam(model)
        for step in range(FOOTPRINT_STEPS):
            train_step(model, optimizer, batches[step % len(batches)], settings)
        footprints[name] = (torch.cuda.max_memory_allocated() - before) / 2**20
        del model, optimizer
    torch.cuda.empty_cache()
    return footprints


# --- inference -------------------------------------------------------------------------------------------------


@dataclass
class ThroughputResult:
    """Sentences per second translating `sentences` sources in batches, every output `output_length` tokens."""

    size: str
    engine: str
    decoding: str
    sentences: int
    batch_size: int
    output_length: int | None  # None: each sentence as long as its source (`VARIED_LENGTHS`)
    seconds: float
    sentences_per_s: float
    vs_marian: float | None = None


@dataclass
class LatencyResult:
    """Median milliseconds to translate one sentence alone (batch of 1)."""

    size: str
    engine: str
    decoding: str
    sentences: int
    output_length: int
    ms_median: float
    vs_marian: float | None = None  # Marian's time / this engine's: above 1 is faster


@dataclass
class Engine:
    """Something that translates batches of token-id lists, for the decodings it supports."""

    name: str
    translate: Callable[[list[list[int]], str], object]
    decodings: tuple[str, ...]


class SuppressEndOfSentence(LogitsProcessor):
    """Forces the benchmark's fixed output length: </s> never wins, masked in place.

    `min_new_tokens` would do the same through transformers' two minimum-length processors, each of which copies
    and rewrites the whole (rows, vocabulary) score matrix at every step: a fifth of a `tiny` beam-4 step (19% in
    an A/B), a cost that real decoding, with no minimum length, never pays.
    """

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, EOS] = -math.inf
        return scores


class EndAtSourceLength(LogitsProcessor):
    """Forces `VARIED_LENGTHS`' output lengths: sentence i gets as many tokens as its source (its </s> included),
    </s> masked before the last and forced as the last, for each of its rows (beams), in place."""

    def __init__(self, lengths: torch.Tensor):
        self.lengths = lengths  # (B,)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows_per_sentence = input_ids.shape[0] // self.lengths.shape[0]
        last = self.lengths.repeat_interleave(rows_per_sentence) <= input_ids.shape[1]  # the next token is the last
        scores[~last, EOS] = -math.inf
        scores[last] = -math.inf
        scores[last, EOS] = 0.0
        return scores


def hf_engine(name: str, model: nn.Module, settings: Settings, decodings: tuple[str, ...]) -> Engine:
    our_model = isinstance(model, VanillaTransformerForConditionalGeneration)

    def translate(sources: list[list[int]], decoding: str) -> torch.Tensor:
        kwargs = dict(DECODINGS[decoding])
        if our_model and decoding in ("beam4", VARIED_LENGTHS):
            kwargs["length_penalty_form"] = "hf"  # the same scoring as Marian's
        input_ids = pad(sources).to(settings.device)
        if decoding == VARIED_LENGTHS:
            length = EndAtSourceLength(torch.tensor([len(source) for source in sources], device=settings.device))
        else:
            length = SuppressEndOfSentence()
        with torch.inference_mode(), autocast(settings):
            return model.generate(
                input_ids=input_ids,
                attention_mask=(input_ids != PAD).long(),
                max_new_tokens=settings.output_length,
                logits_processor=LogitsProcessorList([length]),
                **kwargs,
            )

    return Engine(name, translate, decodings)


def torch_nn_engine(model: TorchTransformerTranslator, settings: Settings) -> Engine:
    def translate(sources: list[list[int]], decoding: str) -> torch.Tensor:
        input_ids = pad(sources).to(settings.device)
        with torch.inference_mode(), autocast(settings):
            return model.greedy(input_ids, (input_ids != PAD).long(), settings.output_length)

    return Engine("torch_nn", translate, ("greedy",))


# CTranslate2 runs in a process of its own. Its OpenMP calls bind to torch's libgomp (the one already loaded), where
# its translating thread gets a team of threads of its own: the runtime then manages more threads than there are
# cores and stops spin-waiting (libgomp's GOMP_SPINCOUNT rule), so every later parallel torch operator here waits
# for its threads to wake: a 128 x 128 matrix product on 2 threads took 29-33 -> 94-163 us, a `tiny` greedy batch
# 0.21 -> 0.53-0.62 s (benchmarks/RESULTS.md, session 17), and the PyTorch rows measured after it were not the models'.
_CTRANSLATE2_TRANSLATORS: dict[str, tuple] = {}  # in the CTranslate2 process: engine name -> (translator, tokenizer)


def _load_ctranslate2(name: str, model_dir: str, compute_type: str, device: str, threads: int, vocab: int) -> None:
    translator = ctranslate2.Translator(model_dir, device=device, compute_type=compute_type, intra_threads=threads)
    _CTRANSLATE2_TRANSLATORS[name] = (translator, benchmark_tokenizer(vocab))


def _ctranslate2_translate(name: str, sources: list[list[int]], num_beams: int, output_length: int) -> None:
    translator, tokenizer = _CTRANSLATE2_TRANSLATORS[name]
    translator.translate_batch(
        [tokenizer.convert_ids_to_tokens(s) for s in sources],
        beam_size=num_beams,
        length_penalty=1.0,
        min_decoding_length=output_length,
        max_decoding_length=output_length,
    )


def ctranslate2_engine(
    name: str, model_dir: Path, compute_type: str, vocab_size: int, server: ProcessPoolExecutor, settings: Settings
) -> Engine:
    """A CTranslate2 model loaded in `server`, the CTranslate2 process; each call there and back adds ~0.3 ms."""
    device = "cuda" if settings.device.startswith("cuda") else "cpu"
    threads = torch.get_num_threads()
    server.submit(_load_ctranslate2, name, str(model_dir), compute_type, device, threads, vocab_size).result()

    def translate(sources: list[list[int]], decoding: str) -> None:
        num_beams = DECODINGS[decoding]["num_beams"]
        server.submit(_ctranslate2_translate, name, sources, num_beams, settings.output_length).result()

    return Engine(name, translate, ("greedy", "beam4"))


def ctranslate2_compute_types(settings: Settings) -> dict[str, str]:
    """Row label -> CTranslate2 compute type: float32 and int8 on CPU; bf16 and int8 weights on a GPU with --bf16."""
    if settings.device.startswith("cuda") and settings.bf16:
        return {"bfloat16": "bfloat16", "int8": "int8_bfloat16"}
    return {"float32": "float32", "int8": "int8"}


@contextlib.contextmanager
def ctranslate2_engines(
    models: dict[str, nn.Module], settings: Settings, workdir: Path, skipped: list[str]
) -> Iterator[list[Engine]]:
    """Our model through our exporter, Marian through CTranslate2's TransformersConverter, served by one
    CTranslate2 process while the context lasts; failures are skipped."""
    if ctranslate2 is None:
        skipped.append("CTranslate2 rows: the ctranslate2 package is not installed")
        yield []
        return
    if settings.device.startswith("cuda") and ctranslate2.get_cuda_device_count() == 0:
        skipped.append("CTranslate2 rows: this ctranslate2 build sees no CUDA device (it needs CUDA 12 libraries)")
        yield []
        return
    from ctranslate2.converters import TransformersConverter

    from hf_vanilla_transformer.export_ctranslate2 import VanillaTransformerConverter

    vocab_size = models["ours"].config.vocab_size
    tokenizer = benchmark_tokenizer(vocab_size)
    marian_dir = workdir / "marian"
    models["marian"].save_pretrained(marian_dir)
    tokenizer.save_pretrained(marian_dir)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as server:
        engines = []
        for label, compute_type in ctranslate2_compute_types(settings).items():
            quantization = None if label == "float32" else compute_type
            converters = {
                "ours": VanillaTransformerConverter(models["ours"], tokenizer),
                "marian": TransformersConverter(str(marian_dir)),
            }
            for model_name, converter in converters.items():
                name = f"ct2_{model_name}_{label}"
                try:
                    output = converter.convert(str(workdir / name), quantization=quantization, force=True)
                    engines.append(ctranslate2_engine(name, Path(output), compute_type, vocab_size, server, settings))
                except (RuntimeError, ValueError) as error:
                    skipped.append(f"{name}: {error}")
        yield engines


def measure_throughput(
    size: str, engines: list[Engine], sources: list[list[int]], settings: Settings
) -> list[ThroughputResult]:
    """Per decoding, every engine translates all `sources` once per repetition, batch by batch: each batch through
    every engine in turn (round-robin), so that drift of the machine within a repetition hits all engines alike."""
    chunks = [sources[i : i + settings.batch_size] for i in range(0, len(sources), settings.batch_size)]
    sentences = len(sources) * settings.inference_reps
    results = []
    for decoding in DECODINGS:
        taking_part = [engine for engine in engines if decoding in engine.decodings]
        if not taking_part:
            continue
        for engine in taking_part:  # warm-up at the full batch size: a smaller one left CUDA set-up to the first timed
            engine.translate(chunks[0], decoding)
        times: dict[str, list[float]] = {engine.name: [] for engine in taking_part}
        for rep in range(settings.inference_reps):
            for index, chunk in enumerate(chunks):
                for engine in rotated(taking_part, rep * len(chunks) + index):
                    times[engine.name].append(timed(settings.device, engine.translate, chunk, decoding))
        for name, seconds in times.items():
            results.append(
                ThroughputResult(
                    size=size,
                    engine=name,
                    decoding=decoding,
                    sentences=sentences,
                    batch_size=settings.batch_size,
                    output_length=None if decoding == VARIED_LENGTHS else settings.output_length,
                    seconds=sum(seconds),
                    sentences_per_s=sentences / sum(seconds),
                )
            )
    return results


def measure_latency(size: str, engines: list[Engine], sources: list[list[int]], settings: Settings):
    """Per decoding (greedy, beam 4), each sentence alone through every engine in turn; the median time."""
    results = []
    for decoding in ("greedy", "beam4"):
        taking_part = [engine for engine in engines if decoding in engine.decodings]
        times: dict[str, list[float]] = {engine.name: [] for engine in taking_part}
        for index, sentence in enumerate(sources):
            for engine in rotated(taking_part, index):
                times[engine.name].append(timed(settings.device, engine.translate, [sentence], decoding))
        for name, seconds in times.items():
            results.append(
                LatencyResult(
                    size=size,
                    engine=name,
                    decoding=decoding,
                    sentences=len(seconds),
                    output_length=settings.output_length,
                    ms_median=1000 * statistics.median(seconds),
                )
            )
    return results


# --- one size, then the report ---------------------------------------------------------------------------------


@dataclass
class Report:
    machine: dict
    settings: dict
    training: list[TrainingResult] = field(default_factory=list)
    throughput: list[ThroughputResult] = field(default_factory=list)
    latency: list[LatencyResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    padding: dict[str, dict[str, float]] = field(default_factory=dict)  # size -> side -> padded / real positions


def benchmark_inference(size: str, models: dict[str, nn.Module], settings: Settings, report: Report) -> None:
    """Throughput and latency of every engine; CTranslate2 exports are made first, from the untrained weights."""
    with (
        tempfile.TemporaryDirectory() as workdir,
        ctranslate2_engines(models, settings, Path(workdir), report.skipped) as ctranslate2_rows,
    ):
        for model in models.values():
            model.to(settings.device).eval()
        engines = [
            hf_engine("ours", models["ours"], settings, tuple(DECODINGS)),
            hf_engine("marian", models["marian"], settings, ("greedy", "beam4", VARIED_LENGTHS)),
            torch_nn_engine(models["torch_nn"], settings),
            *ctranslate2_rows,
        ]
        generator = torch.Generator().manual_seed(settings.seed + 1)
        sources = random_sentences(settings.sentences, models["ours"].config.vocab_size, generator)
        logger.info("%s: throughput", size)
        report.throughput += measure_throughput(size, engines, sources, settings)
        logger.info("%s: latency", size)
        report.latency += measure_latency(size, engines, sources[: settings.latency_sentences], settings)


def padding_ratios(batches: list[TrainBatch]) -> dict[str, float]:
    """Padded / real positions of the batches: work a model spends on padding unless it skips it."""
    real_source = sum(int(b.attention_mask.sum()) for b in batches)
    real_target = sum(b.target_tokens for b in batches)
    return {
        "source": sum(b.input_ids.numel() for b in batches) / real_source,
        "target": sum(b.labels.numel() for b in batches) / real_target,
    }


def benchmark_training(size: str, models: dict[str, nn.Module], settings: Settings, report: Report) -> None:
    """Tokens/s (round-robin) with the models given, then each model's memory footprint from a fresh copy."""
    config = models["ours"].config
    batches = training_batches(settings, config.vocab_size)
    report.padding[size] = padding_ratios(batches)
    logger.info("%s: training%s", size, " (compiling first)" if settings.compile else "")
    trained = {name: models[name].to(settings.device) for name in settings.train_models}
    if settings.compile:  # one graph for every batch shape: the shapes of token-budget batches vary
        mode = None if settings.compile == "default" else settings.compile
        trained = {name: torch.compile(model, dynamic=True, mode=mode) for name, model in trained.items()}
    training = measure_training(size, trained, batches, settings)
    models.clear()  # free them before the footprints
    trained.clear()
    gc.collect()
    if settings.memory:
        logger.info("%s: memory", size)
        footprints = training_footprints_mib(settings.train_models, config, batches, settings)
        for result in training:
            result.memory_mib = footprints[result.model]
    report.training += training


def benchmark_size(size: str, config: VanillaTransformerConfig, settings: Settings, report: Report) -> None:
    models = build_models(config, settings.seed)
    logger.info("%s: %.1fM parameters (ours)", size, models["ours"].num_parameters() / 1e6)
    if settings.inference:
        benchmark_inference(size, models, settings, report)
    if settings.training:
        benchmark_training(size, models, settings, report)


def add_ratios(rows: list, name_field: str, value: str, keys: tuple[str, ...], higher_is_better: bool = True) -> None:
    """`vs_marian` = this row's speed over Marian's (HF, PyTorch) in the row with the same `keys`."""
    reference = {
        tuple(getattr(row, k) for k in keys): getattr(row, value) for row in rows if getattr(row, name_field) == MARIAN
    }
    for row in rows:
        marian = reference.get(tuple(getattr(row, k) for k in keys))
        if marian:
            row.vs_marian = getattr(row, value) / marian if higher_is_better else marian / getattr(row, value)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(settings: Settings) -> dict:
    info = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "ctranslate2_intra_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "ctranslate2": ctranslate2.__version__ if ctranslate2 else None,
            "hf_vanilla_transformer": getattr(hf_vanilla_transformer, "__version__", None) or _package_version(),
        },
    }
    if settings.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["peak_bf16_tflops"] = peak_tflops(settings)
    return info


def _package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hf_vanilla_transformer")
    except PackageNotFoundError:
        return None


def size_summary(config: VanillaTransformerConfig) -> dict[str, int]:
    fields = (
        "vocab_size",
        "d_model",
        "encoder_layers",
        "decoder_layers",
        "encoder_attention_heads",
        "encoder_ffn_dim",
    )
    return {name: getattr(config, name) for name in fields}


def _number(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _table(title: str, header: Sequence[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    align = ["---" if i < 3 else "---:" for i in range(len(header))]
    return ["", f"## {title}", "", "| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def markdown(report: Report) -> str:
    machine, versions, settings = report.machine, report.machine["versions"], report.settings
    lines = [
        "# Speed: our Transformer and its peers, side by side",
        "",
        f"Machine: {machine['cpu']}, {machine['usable_cpus']} usable of {machine['logical_cpus']} logical CPUs"
        + (f", GPU {machine['gpu']}" if "gpu" in machine else "")
        + f". torch threads {machine['torch_threads']} (inter-op {machine['torch_interop_threads']}), "
        f"CTranslate2 intra-threads {machine['ctranslate2_intra_threads']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"Settings: {json.dumps(settings)}.",
    ]
    precision = "bf16 autocast" if settings["bf16"] else "fp32"
    if settings["compile"]:
        precision += ", torch.compile" + ("" if settings["compile"] == "default" else f" {settings['compile']}")
    lines += _table(
        f"Training: forward + backward + Adam step, {settings['token_budget']} target tokens per batch",
        ["size", "model", "precision", "target tokens/s", "× Marian", "step ms (median)", "TFLOP/s", "MFU", "MiB"],
        [
            [r.size, r.model, precision, _number(r.tokens_per_s, 0)]
            + [_number(r.vs_marian, 2), _number(r.step_ms_median), _number(r.achieved_tflops, 3)]
            + ["" if r.mfu is None else f"{100 * r.mfu:.1f}%", _number(r.memory_mib, 0)]
            for r in report.training
        ],
    )
    if report.training:
        lines += [
            "",
            "Padded / real positions in these batches ("
            + (
                f"sentence lengths of {settings['length_corpus'][0]} train, length-bucketed as our trainer does"
                if settings["length_corpus"]
                else "random lengths, not sorted"
            )
            + "): "
            + "; ".join(
                f"{size} source {p['source']:.2f}, target {p['target']:.2f}" for size, p in report.padding.items()
            )
            + ". `TFLOP/s` counts the model's work on real tokens only.",
        ]
    lines += _table(
        f"Translation throughput: batches of {settings['batch_size']}, every output {settings['output_length']} "
        f"tokens ({VARIED_LENGTHS}: as long as its source, 10-30)",
        ["size", "engine", "decoding", "sentences/s", "× Marian"],
        [
            [r.size, r.engine, r.decoding, _number(r.sentences_per_s), _number(r.vs_marian, 2)]
            for r in report.throughput
        ],
    )
    lines += _table(
        "Single-sentence latency",
        ["size", "engine", "decoding", "ms (median)", "× Marian (speed)"],
        [[r.size, r.engine, r.decoding, _number(r.ms_median), _number(r.vs_marian, 2)] for r in report.latency],
    )
    if report.skipped:
        lines += ["", "Skipped: " + "; ".join(report.skipped)]
    lines += ["", "Methods: benchmarks/README.md.", ""]
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny size, few repetitions: about a minute on 2 cores")
    parser.add_argument("--presets", nargs="+", default=None, help="sizes (default: tiny small base)")
    parser.add_argument("--sizes", nargs="+", default=None, help=argparse.SUPPRESS)  # NAME:D_MODEL:LAYERS:HEADS:FFN
    parser.add_argument("--vocab_size", type=int, default=10000)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch (and CTranslate2) threads")
    parser.add_argument("--token_budget", type=int, default=2000, help="target tokens per training batch")
    parser.add_argument(
        "--train_models", nargs="+", choices=MODELS, default=list(MODELS), help="models whose training is measured"
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        help="torch.compile the models for training, in this mode (reduce-overhead: CUDA graphs)",
    )
    parser.add_argument("--skip_memory", action="store_true", help="do not measure training memory")
    parser.add_argument("--skip_inference", action="store_true", help="measure training only")
    parser.add_argument("--skip_training", action="store_true", help="measure inference only")
    parser.add_argument("--train_reps", type=int, default=None, help="timed training steps per model")
    parser.add_argument("--sentences", type=int, default=None, help="sentences translated per repetition")
    parser.add_argument("--latency_sentences", type=int, default=None, help="sentences timed alone")
    parser.add_argument("--peak_tflops", type=float, default=None, help="peak for MFU (default: from the GPU name)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--length_corpus",
        nargs=3,
        metavar=("CORPUS", "SOURCE_LANG", "TARGET_LANG"),
        default=None,
        help="training batches with the sentence lengths of this corpus, bucketed (../shared/data/multi30k en de)",
    )
    parser.add_argument("--output_json", type=Path, default=None)
    parser.add_argument("--output_md", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.vocab_size < 8:
        raise ValueError(
            f"--vocab_size must be at least 8 (4 special tokens and room for words), got {args.vocab_size}."
        )
    if args.skip_training and args.skip_inference:
        raise ValueError("--skip_training and --skip_inference together leave nothing to measure.")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device.")
    specs = args.sizes or args.presets or (["tiny"] if args.quick else ["tiny", "small", "base"])
    sizes = dict(parse_size(spec, args.vocab_size) for spec in specs)
    settings = Settings(
        sizes=sizes,
        device=args.device,
        bf16=args.bf16,
        token_budget=args.token_budget,
        train_models=tuple(args.train_models),
        compile=args.compile,
        memory=not args.skip_memory,
        training=not args.skip_training,
        inference=not args.skip_inference,
        peak_tflops=args.peak_tflops,
        seed=args.seed,
        length_corpus=tuple(args.length_corpus) if args.length_corpus else None,
    )
    if args.quick:
        settings.train_batches, settings.train_warmup, settings.train_reps = 2, 1, 2
        settings.sentences, settings.inference_reps, settings.latency_sentences = 32, 1, 2
    for name in ("train_reps", "sentences", "latency_sentences"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise ValueError(f"--{name} must be a positive integer, got {value}.")
            setattr(settings, name, value)
    return settings, args


def main(argv: Sequence[str] | None = None) -> Report:
    settings, args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    report = Report(
        machine=machine_info(settings),
        settings={k: v for k, v in asdict(settings).items() if k != "sizes"}
        | {"sizes": {name: size_summary(config) for name, config in settings.sizes.items()}},
    )
    for size, config in settings.sizes.items():
        benchmark_size(size, config, settings, report)
        write_report(report, args.output_json, args.output_md)  # after each size: a cut-off run keeps the rest
    print(markdown(report))
    return report


def write_report(report: Report, json_path: Path | None, markdown_path: Path | None) -> None:
    add_ratios(report.training, "model", "tokens_per_s", ("size",))
    add_ratios(report.throughput, "engine", "sentences_per_s", ("size", "decoding"))
    add_ratios(report.latency, "engine", "ms_median", ("size", "decoding"), higher_is_better=False)
    if markdown_path:
        markdown_path.write_text(markdown(report))
    if json_path:
        json_path.write_text(json.dumps(asdict(report), indent=2) + "\n")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    main()
