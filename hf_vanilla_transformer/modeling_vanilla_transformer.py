"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), as a transformers model.

The post-LN encoder-decoder of §3 exactly: scaled embeddings shared three ways (§3.4), interleaved sinusoidal
positions (§3.5), scaled dot-product multi-head attention (§3.2), ReLU feed-forward networks (§3.3) and
LayerNorm(x + Dropout(Sublayer(x))) around every sub-layer (§3.1, §5.4).

This file is copied into every saved model folder as remote code, so it imports only torch, transformers and
its configuration (flat relative import).

Shape letters: B batch, S source length, T target length, H heads, D head dim, C = d_model, V vocabulary.
"""

import contextlib
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache
from transformers.generation import GenerationMixin, LogitsProcessor, LogitsProcessorList
from transformers.generation.utils import ALL_CACHE_NAMES
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_vanilla_transformer import VanillaTransformerConfig


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs for teacher forcing: the outputs "shifted right by one position" (§3.1)."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


def sinusoids(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """§3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))."""
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, device=positions.device, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, C/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (T, C): sin, cos interleaved


class VanillaTransformerSinusoidalPositionalEmbedding(nn.Module):
    """Fixed sinusoidal positions of §3.5, for any length.

    Note: computed on the fly rather than read from a table. It costs T x C/2 sin/cos, nothing next to a layer,
    works beyond `max_position_embeddings` and leaves no buffer for `from_pretrained` to refill with garbage.
    """

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.d_model = config.d_model

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return sinusoids(position_ids, self.d_model)


class VanillaTransformerLearnedPositionalEmbedding(nn.Embedding):
    """Learned positional embeddings, Table 3 row (E): one vector per position up to `max_position_embeddings`."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config.max_position_embeddings, config.d_model)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        if position_ids[-1] >= self.num_embeddings:
            raise ValueError(
                f"Sequence of length {int(position_ids[-1]) + 1} is longer than max_position_embeddings="
                f"{self.num_embeddings} of this model's learned positions; truncate the input or use "
                "position_embedding_type='sinusoidal'."
            )
        return super().forward(position_ids)


POSITIONAL_EMBEDDINGS = {
    "sinusoidal": VanillaTransformerSinusoidalPositionalEmbedding,
    "learned": VanillaTransformerLearnedPositionalEmbedding,
}


class PackedTokens:
    """The real tokens of a padded (B, L) batch, so that position-wise work skips the padding.

    Every sub-layer but attention treats each position alone (§3.3: "applied to each position separately and
    identically"), so projections, FFNs, LayerNorms and dropout run on the N real tokens only; attention gets
    the padded (B, L) layout back, zeros at padding, which its mask hides. Results at real tokens are unchanged;
    at random lengths 10-30 (a third padding) a `base` training step does 30% fewer FLOPs (torch.profiler).
    Used on CPU only (see `VanillaTransformerStack.pack`).
    """

    def __init__(self, mask: torch.Tensor):
        self.batch, self.length = mask.shape  # mask (B, L): nonzero at real tokens
        self.index = mask.flatten().nonzero().squeeze(-1)  # (N,)

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) -> (N, ...)"""
        return padded.flatten(0, 1).index_select(0, self.index)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, L, ...), zeros at padding"""
        padded = packed.new_zeros(self.batch * self.length, *packed.shape[1:])
        # index_put, not index_copy: index_copy's backward keeps its source, which kept every packed query, key
        # and value alive beside the padded copies attention keeps (165 MiB of a base step at random lengths)
        return padded.index_put((self.index,), packed).unflatten(0, (self.batch, self.length))


def _on_eager_cpu(device: torch.device) -> bool:
    """Whether the CPU shortcuts (`VanillaTransformerStack.pack`, `dropout`) apply: on CPU, outside `torch.compile`."""
    return device.type == "cpu" and not torch.compiler.is_compiling()


def dropout(hidden_states: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout, §5.4: zero each element with probability p and scale the others by 1 / (1 - p).

    On CPU torch draws each element's Bernoulli sample through a float uniform, one at a time (12-20 ms for 1.15M
    elements on 2 cores, over 100 times a multiplication; 13% of a tiny training step at 8,192-token batches), and
    keeps the float32 mask for the backward pass. Here one draw of 31 random bits an element, kept when below
    (1 - p) * 2^31, makes the whole dropout 2-3x faster (5-6 ms), and the backward pass keeps a boolean mask, a
    quarter of the memory (`benchmarks/RESULTS.md`). Elsewhere torch's dropout (one fused kernel on a GPU;
    generated by `torch.compile`).
    """
    if not training or p == 0.0:
        return hidden_states
    if not _on_eager_cpu(hidden_states.device):
        return nn.functional.dropout(hidden_states, p=p, training=True)
    bits = torch.empty(hidden_states.shape, dtype=torch.int32, device=hidden_states.device).random_()  # [0, 2^31)
    return torch.where(bits < round((1 - p) * 2**31), hidden_states * (1 / (1 - p)), 0.0)


# Training on a GPU, torch's choice for masked attention is cuDNN's flash kernels; at translation's short sentences
# the memory-efficient (cutlass) kernels take about half their time: a base training step at 25,000 tokens 6-11%
# faster on an H200 (`benchmarks/RESULTS.md`).
def _attention_kernels(device: torch.device, training: bool) -> contextlib.AbstractContextManager:
    """In CUDA training, the memory-efficient SDPA kernels first, the others enabled after them in torch's order (a
    caller's `torch.nn.attention.sdpa_kernel` narrowing is kept); torch takes the next where one cannot run. Entered
    around each attention, so that gradient checkpointing's recomputation picks the same kernel. Not under
    `torch.compile`, which cannot trace the reading of which kernels are enabled (a graph break at every attention)."""
    if device.type != "cuda" or not training or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    # torch's own reading of the enabled kernels: no public function covers them all (OVERRIDEABLE has none)
    enabled = torch.nn.attention._cur_sdpa_kernel_backends(with_priority=True)
    first = SDPBackend.EFFICIENT_ATTENTION
    if first not in enabled:
        return contextlib.nullcontext()
    return sdpa_kernel([first, *(kernel for kernel in enabled if kernel != first)], set_priority=True)


# SDPA's CPU kernel works in blocks of queries and keys, a waste for the small score matrices of decoding (one query a
# step, or a sentence's beams grouped, over a Multi30k source). Two matrix products and a softmax cost a few
# operators more per call instead, repaid where a head's scores (queries x keys) are few, at most 1024, and the heads
# of the call (rows x heads) many, at least 128, or 256 for a single query. In a grid of shapes on 2 cores they were
# faster at 37 of the 44 such shapes (up to 4.2x) and slower at most others, where SDPA's kernel ran up to 4.5x faster
# (greedy decoding of small batches, one sentence alone, long sentences): `benchmarks/RESULTS.md`. Not in training,
# where a whole step gained little and the products' backward keeps the (T, S) attention weights.
MATMUL_ATTENTION_MAX_SCORES = 1024  # queries x keys of one head
MATMUL_ATTENTION_MIN_HEADS = 128  # rows x heads of the call, twice as many for a single query


def _cpu_inference_attention(query: torch.Tensor, key: torch.Tensor, training: bool) -> bool:
    """Whether attention under `attn_implementation="sdpa"` runs as `eager_attention_forward`: in eager CPU inference,
    within `MATMUL_ATTENTION_MAX_SCORES` and `MATMUL_ATTENTION_MIN_HEADS`."""
    if training or not _on_eager_cpu(query.device):
        return False
    rows, heads, queries = query.shape[:3]
    min_heads = MATMUL_ATTENTION_MIN_HEADS * (2 if queries == 1 else 1)
    return queries * key.shape[-2] <= MATMUL_ATTENTION_MAX_SCORES and rows * heads >= min_heads


# On the CPU `F.linear` runs MKL's sgemm. oneDNN's matrix product, the one torch.compile's CPU code calls for linear
# layers, computes the same x W^T + b faster where a call has enough work to repay its larger fixed cost: in a grid
# of our layers' shapes on 2 cores, 1.1-3.8x for the output projection (also for one row) and mostly 1.0-3.5x for
# base's and small's feed-forward layers, while small layers at few rows ran at 0.2-0.8x MKL's time
# (`benchmarks/RESULTS.md`). It has no backward pass, so only where no gradient is wanted.
ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
ONEDNN_LINEAR_MIN_WEIGHTS = 2**20  # in x out: a layer this large runs oneDNN at any number of rows
ONEDNN_LINEAR_MIN_WORK = 2**22  # rows x in x out multiply-adds: a smaller layer runs oneDNN from here
PACKED_LINEAR_MIN_WEIGHTS = 2**16  # in x out: a layer this large holds a packed weight in a beam search


def _onednn_linear(inputs: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a linear layer runs through oneDNN: eager CPU float32, no gradient wanted, and a large layer
    (`ONEDNN_LINEAR_MIN_WEIGHTS`) or a call with work enough (`ONEDNN_LINEAR_MIN_WORK`)."""
    if not (ONEDNN_LINEAR and inputs.dtype == weight.dtype == torch.float32 and _on_eager_cpu(inputs.device)):
        return False
    if torch.is_grad_enabled() and (inputs.requires_grad or weight.requires_grad):
        return False
    return weight.numel() >= ONEDNN_LINEAR_MIN_WEIGHTS or inputs.numel() * weight.shape[0] >= ONEDNN_LINEAR_MIN_WORK


def onednn_linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x W^T + b by oneDNN's matrix product (no autograd)."""
    return torch.ops.mkldnn._linear_pointwise(inputs, weight, bias, "none", [], "")


class VanillaTransformerLinear(nn.Linear):
    """`nn.Linear` (y = x W^T + b), through oneDNN where `_onednn_linear` says so, or with `packed_weight` while
    a beam search holds one (`VanillaTransformerForConditionalGeneration._packed_decoder_weights`)."""

    packed_weight: torch.Tensor | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        holds_packed = self.packed_weight is not None and not torch.is_grad_enabled()
        if holds_packed and inputs.dtype == torch.float32 and _on_eager_cpu(inputs.device):
            return onednn_linear(inputs, self.packed_weight, self.bias)
        if _onednn_linear(inputs, self.weight):
            return onednn_linear(inputs, self.weight, self.bias)
        return super().forward(inputs)


def _unpacked(hidden_states: torch.Tensor, tokens: PackedTokens | None) -> torch.Tensor:
    return hidden_states if tokens is None else tokens.unpack(hidden_states)


def _group_queries(query: torch.Tensor, sources: int) -> torch.Tensor:
    """(B*k, H, T, D) -> (B, H, k*T, D): the k decoder rows of each source sentence become one row of queries."""
    return query.unflatten(0, (sources, -1)).transpose(1, 2).flatten(2, 3)


def _ungroup_weights(weights: torch.Tensor, rows_per_source: int) -> torch.Tensor:
    """(B, H, k*T, S) -> (B*k, H, T, S), the inverse of `_group_queries` for attention weights."""
    return weights.unflatten(2, (rows_per_source, -1)).transpose(1, 2).flatten(0, 1)


def _joint_projections(inputs: torch.Tensor, *projections: nn.Linear) -> tuple[torch.Tensor, ...]:
    """Several projections of one input as one matrix product: [xW_1 + b_1, xW_2 + b_2] = x[W_1 W_2] + [b_1 b_2].

    Used in training, where it replaces 3 (or 2) products, their dtype casts and their gradients by one of each: a
    base training step under bf16 autocast runs 1,012 torch operators instead of 1,216 (1,156 instead of 1,432 with
    attention biases), each a kernel launch on a GPU, where launching bounds the step (benchmarks/RESULTS.md). Not
    while decoding, where concatenating the weights at every step would copy them once more than the products read
    them. It reads the weights without calling the `nn.Linear` modules: a sharding framework that gathers a
    module's weights only when that module runs (DeepSpeed ZeRO-3) must gather the attention module whole, as FSDP
    wrapping whole layers does.
    """
    weight = torch.cat([projection.weight for projection in projections])
    bias = None if projections[0].bias is None else torch.cat([projection.bias for projection in projections])
    return nn.functional.linear(inputs, weight, bias).chunk(len(projections), dim=-1)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, §3.2.1: Attention(Q, K, V) = softmax(QK^T / sqrt(d_k)) V.

    Takes the eager masks (float, the dtype's minimum where masked) and SDPA's (bool, True where attending; None for
    `module.is_causal` attention over several queries, as SDPA's `is_causal`): see `_cpu_inference_attention`.
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, T, S)
    if attention_mask is None and module.is_causal and query.shape[2] > 1:
        attention_mask = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool, device=query.device).tril()
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)  # as the eager masks' value
    elif attention_mask is not None:
        scores = scores + attention_mask  # the minimum where masked (padding, or future positions in the decoder)
    weights = nn.functional.softmax(scores, dim=-1)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, T, H, D)
    return output, weights


class VanillaTransformerAttention(nn.Module):
    """Multi-head attention, §3.2.2: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O."""

    def __init__(
        self, config: VanillaTransformerConfig, num_heads: int, is_causal: bool, layer_idx: int | None = None
    ):
        super().__init__()
        self.config = config
        self.head_dim = config.d_model // num_heads  # d_k = d_v = d_model / h
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = is_causal  # read by the sdpa/flash kernels when no mask is given
        self.layer_idx = layer_idx
        self.q_proj = VanillaTransformerLinear(config.d_model, config.d_model, bias=config.attention_bias)
        self.k_proj = VanillaTransformerLinear(config.d_model, config.d_model, bias=config.attention_bias)
        self.v_proj = VanillaTransformerLinear(config.d_model, config.d_model, bias=config.attention_bias)
        self.out_proj = VanillaTransformerLinear(config.d_model, config.d_model, bias=config.attention_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        tokens: PackedTokens | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states` (B, T, C), or (N, C) packed as `tokens` says; the output has the same layout."""
        is_cross_attention = key_value_states is not None
        source = key_value_states if is_cross_attention else hidden_states
        source_tokens = None if is_cross_attention else tokens
        if not self.training:
            query, key, value = self.q_proj(hidden_states), None, None  # keys and values below, unless cached
        elif is_cross_attention:
            query, (key, value) = self.q_proj(hidden_states), _joint_projections(source, self.k_proj, self.v_proj)
        else:
            query, key, value = _joint_projections(hidden_states, self.q_proj, self.k_proj, self.v_proj)
        query = _unpacked(query, tokens)
        batch, length = query.shape[:2]
        query = query.view(batch, length, -1, self.head_dim).transpose(1, 2)  # (B, H, T, D)

        layer_cache = None
        if cache is not None:
            layer_cache = cache.cross_attention_cache if is_cross_attention else cache.self_attention_cache
        if is_cross_attention and cache is not None and cache.is_updated.get(self.layer_idx):
            # The source does not change while decoding: its keys and values are projected once per sentence.
            key = layer_cache.layers[self.layer_idx].keys
            value = layer_cache.layers[self.layer_idx].values
        else:
            if key is None:
                key, value = self.k_proj(source), self.v_proj(source)
            key, value = _unpacked(key, source_tokens), _unpacked(value, source_tokens)
            kv_shape = (*key.shape[:2], -1, self.head_dim)
            key = key.view(kv_shape).transpose(1, 2)  # (B, H, S, D)
            value = value.view(kv_shape).transpose(1, 2)  # (B, H, S, D)
            if layer_cache is not None:
                key, value = layer_cache.update(key, value, self.layer_idx)
                if is_cross_attention:
                    cache.is_updated[self.layer_idx] = True

        # In generation each source sentence has k decoder rows (beams, returned sequences) but one copy of its
        # keys and values (see `_expand_inputs_for_generation`): its rows' queries attend to it together.
        rows_per_source = batch // key.shape[0]
        if rows_per_source > 1:
            query = _group_queries(query, key.shape[0])  # (B, H, k*T, D)
            if attention_mask is not None:
                attention_mask = attention_mask[:, :, :1]  # a padding mask: the same row for every query

        implementation = self.config._attn_implementation
        substituted = implementation == "sdpa" and _cpu_inference_attention(query, key, self.training)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            "eager" if substituted else implementation, eager_attention_forward
        )
        with _attention_kernels(query.device, self.training):
            output, weights = attention_interface(
                self,
                query,
                key,
                value,
                attention_mask,
                dropout=self.dropout if self.training else 0.0,
                scaling=self.scaling,
            )
        if substituted:
            weights = None  # as SDPA's: the weights are returned by attn_implementation="eager" only
        if rows_per_source > 1 and weights is not None:
            weights = _ungroup_weights(weights, rows_per_source)
        output = output.reshape(batch, length, -1)  # (B, T, C); from (B, k*T, H, D) too, the same memory order
        if tokens is not None:
            output = tokens.pack(output)  # (N, C)
        return self.out_proj(output), weights


class VanillaTransformerFeedForward(nn.Module):
    """Position-wise feed-forward network, §3.3: FFN(x) = max(0, x W1 + b1) W2 + b2."""

    def __init__(self, config: VanillaTransformerConfig, ffn_dim: int):
        super().__init__()
        self.fc1 = VanillaTransformerLinear(config.d_model, ffn_dim)
        self.fc2 = VanillaTransformerLinear(ffn_dim, config.d_model)
        self.activation = nn.ReLU() if config.activation_function == "relu" else nn.GELU()
        self.activation_dropout = config.activation_dropout

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.activation(self.fc1(hidden_states))
        hidden_states = dropout(hidden_states, self.activation_dropout, self.training)
        return self.fc2(hidden_states)


class VanillaTransformerEncoderLayer(GradientCheckpointingLayer):
    """Encoder layer, §3.1: self-attention then FFN, each as LayerNorm(x + Dropout(Sublayer(x)))."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.dropout = config.dropout
        self.self_attn = VanillaTransformerAttention(config, config.encoder_attention_heads, is_causal=False)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.ffn = VanillaTransformerFeedForward(config, config.encoder_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(config.d_model)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, tokens: PackedTokens | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        residual = hidden_states
        hidden_states, self_attn_weights = self.self_attn(hidden_states, attention_mask=attention_mask, tokens=tokens)
        hidden_states = dropout(hidden_states, self.dropout, self.training)
        hidden_states = self.self_attn_layer_norm(residual + hidden_states)

        residual = hidden_states
        hidden_states = self.ffn(hidden_states)
        hidden_states = dropout(hidden_states, self.dropout, self.training)
        hidden_states = self.final_layer_norm(residual + hidden_states)
        return hidden_states, self_attn_weights


class VanillaTransformerDecoderLayer(GradientCheckpointingLayer):
    """Decoder layer, §3.1: masked self-attention, encoder-decoder attention, FFN, each post-LN."""

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int):
        super().__init__()
        self.dropout = config.dropout
        heads = config.decoder_attention_heads
        self.self_attn = VanillaTransformerAttention(config, heads, is_causal=True, layer_idx=layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.encoder_attn = VanillaTransformerAttention(config, heads, is_causal=False, layer_idx=layer_idx)
        self.encoder_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.ffn = VanillaTransformerFeedForward(config, config.decoder_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(config.d_model)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None,
        cache: EncoderDecoderCache | None = None,
        tokens: PackedTokens | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        residual = hidden_states
        hidden_states, self_attn_weights = self.self_attn(
            hidden_states, attention_mask=attention_mask, cache=cache, tokens=tokens
        )
        hidden_states = dropout(hidden_states, self.dropout, self.training)
        hidden_states = self.self_attn_layer_norm(residual + hidden_states)

        residual = hidden_states
        hidden_states, cross_attn_weights = self.encoder_attn(
            hidden_states,
            key_value_states=encoder_hidden_states,
            attention_mask=encoder_attention_mask,
            cache=cache,
            tokens=tokens,
        )
        hidden_states = dropout(hidden_states, self.dropout, self.training)
        hidden_states = self.encoder_attn_layer_norm(residual + hidden_states)

        residual = hidden_states
        hidden_states = self.ffn(hidden_states)
        hidden_states = dropout(hidden_states, self.dropout, self.training)
        hidden_states = self.final_layer_norm(residual + hidden_states)
        return hidden_states, self_attn_weights, cross_attn_weights


class VanillaTransformerPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the flags transformers reads (attention kernels, checkpointing, caching).

    Note: the paper does not give its initialisation. We follow fairseq's Transformer (the Annotated
    Transformer also uses Xavier): Xavier-uniform projections with zero biases, and embeddings drawn from
    N(0, d_model^-0.5) so that after the sqrt(d_model) scale (§3.4) they have unit variance, the scale of the
    sinusoids. Unlike fairseq, the query, key and value projections keep Xavier's gain of 1 (fairseq uses
    1/sqrt(2) there). Setting `config.init_std` gives transformers' N(0, init_std) for every weight matrix
    instead. Neither alternative has been compared with ours on Multi30k.
    """

    config_class = VanillaTransformerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["VanillaTransformerEncoderLayer", "VanillaTransformerDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True

    def _init_embedding(self, weight: torch.Tensor) -> None:
        std = self.config.init_std or self.config.d_model**-0.5
        init.normal_(weight, mean=0.0, std=std)
        init.zeros_(weight[self.config.pad_token_id])

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, nn.Embedding):  # token and learned-position embeddings
            self._init_embedding(module.weight)
        elif isinstance(module, nn.Linear):
            if std is None:
                init.xavier_uniform_(module.weight)
            else:
                init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, VanillaTransformerForConditionalGeneration):
            # Runs after its children: the output projection is an embedding (§3.4), tied or not.
            self._init_embedding(module.lm_head.weight)

    def save_pretrained(self, save_directory: str | Path, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, plus what a self-contained Hub repo needs beyond the model class.

        `auto_map` gets `AutoModel` too (transformers records only the saved class), and the folder carries
        our translation pipeline as a custom pipeline, since transformers 5 has none built in.
        """
        if self._auto_class is not None:
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": "modeling_vanilla_transformer.VanillaTransformerModel",
            }
        pipeline_file = Path(__file__).with_name("pipeline_vanilla_transformer.py")
        if pipeline_file.exists():
            self.config.custom_pipelines = {
                "translation": {
                    "impl": "pipeline_vanilla_transformer.TranslationPipeline",
                    "pt": ["AutoModelForSeq2SeqLM"],
                    "type": "text",
                }
            }
        elif hasattr(self.config, "custom_pipelines"):
            # A remote-code copy loaded without the pipeline file: never point to a file we cannot ship.
            del self.config.custom_pipelines
        super().save_pretrained(save_directory, *args, **kwargs)
        if pipeline_file.exists():
            shutil.copy(pipeline_file, Path(save_directory) / pipeline_file.name)


def _add(collected: tuple | None, item: torch.Tensor | None, tokens: PackedTokens | None = None) -> tuple | None:
    return None if collected is None else (*collected, _unpacked(item, tokens))


class VanillaTransformerStack(nn.Module):
    """The input of both stacks, §3.4-3.5 and §5.4: Dropout(Embedding(x) * sqrt(d_model) + PE)."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.config = config
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.embed_positions = POSITIONAL_EMBEDDINGS[config.position_embedding_type](config)

    def embed(self, input_ids: torch.Tensor, past_length: int = 0) -> torch.Tensor:
        positions = torch.arange(past_length, past_length + input_ids.shape[1], device=input_ids.device)
        embeds = self.embed_tokens(input_ids) * self.embed_scale  # (B, L, C)
        hidden_states = embeds + self.embed_positions(positions).to(embeds.dtype)
        return dropout(hidden_states, self.config.dropout, self.training)

    @staticmethod
    def pack(
        hidden_states: torch.Tensor, padding_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, PackedTokens | None]:
        """(B, L, C) -> (N, C) real tokens, when a (B, L) padding mask says which they are.

        On CPU only, and not under `torch.compile`: N depends on the data, so packing waits for the device
        (`nonzero`), which stalls a GPU's queue of kernels, and would cut a compiled graph (breaking `fullgraph`
        compilation of `generate`). Elsewhere the model computes the padding positions too; the masks hide them.
        On an H200, base training on 25k-token batches ran at 0.89x MarianMTModel's speed with packing (at
        parity without it, in an earlier run).
        """
        if padding_mask is None or padding_mask.dim() != 2 or not _on_eager_cpu(hidden_states.device):
            return hidden_states, None
        padding_mask = padding_mask[:, -hidden_states.shape[1] :]  # a cached decoder's mask spans the past
        if padding_mask.all():  # nothing to skip: spare the copies
            return hidden_states, None
        tokens = PackedTokens(padding_mask)
        return tokens.pack(hidden_states), tokens


class VanillaTransformerEncoder(VanillaTransformerStack):
    """The encoder stack, §3.1: N identical layers of self-attention and feed-forward sub-layers."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.layers = nn.ModuleList(VanillaTransformerEncoderLayer(config) for _ in range(config.encoder_layers))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> BaseModelOutput:
        hidden_states = self.embed(input_ids)  # (B, S, C)
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )

        hidden_states, tokens = self.pack(hidden_states, attention_mask)  # (N, C)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            all_hidden_states = _add(all_hidden_states, hidden_states, tokens)
            hidden_states, attentions = layer(hidden_states, mask, tokens)
            all_attentions = _add(all_attentions, attentions)
        all_hidden_states = _add(all_hidden_states, hidden_states, tokens)
        return BaseModelOutput(
            last_hidden_state=_unpacked(hidden_states, tokens),  # zeros at padding where packed (CPU)
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


class VanillaTransformerDecoder(VanillaTransformerStack):
    """The decoder stack, §3.1: N layers, masked so that position i sees only positions before it."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.layers = nn.ModuleList(
            VanillaTransformerDecoderLayer(config, layer_idx=i) for i in range(config.decoder_layers)
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
        hidden_states = self.embed(input_ids, cache.get_seq_length() if cache is not None else 0)  # (B, T, C)
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=hidden_states,
            attention_mask=attention_mask,
            cache=cache.self_attention_cache if cache is not None else None,
        )
        encoder_mask = create_bidirectional_mask(
            config=self.config,
            inputs_embeds=hidden_states,
            attention_mask=encoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states,
        )

        hidden_states, tokens = self.pack(hidden_states, attention_mask)  # (N, C)

        all_hidden_states = () if output_hidden_states else None
        all_self_attentions = () if output_attentions else None
        all_cross_attentions = () if output_attentions else None
        for layer in self.layers:
            all_hidden_states = _add(all_hidden_states, hidden_states, tokens)
            hidden_states, self_attentions, cross_attentions = layer(
                hidden_states, causal_mask, encoder_hidden_states, encoder_mask, cache=cache, tokens=tokens
            )
            all_self_attentions = _add(all_self_attentions, self_attentions)
            all_cross_attentions = _add(all_cross_attentions, cross_attentions)
        all_hidden_states = _add(all_hidden_states, hidden_states, tokens)
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=_unpacked(hidden_states, tokens),  # zeros at padding where packed (CPU)
            cache=cache if use_cache else None,
            hidden_states=all_hidden_states,
            attentions=all_self_attentions,
            cross_attentions=all_cross_attentions,
        )


# The attention kernels whose masks broadcast over grouped queries (see `VanillaTransformerAttention.forward`).
GROUPED_CROSS_ATTENTION = ("eager", "sdpa")


def _check_rows_per_source(config: VanillaTransformerConfig, rows: int, sources: int) -> None:
    """The decoder may have k rows per source sentence (beams), in order: sentence 0's k rows first."""
    if rows == sources:
        return
    if rows % sources:
        raise ValueError(
            f"decoder_input_ids has {rows} rows for {sources} source sentences: expected the same number, or k rows "
            "per source sentence (a multiple)."
        )
    if config._attn_implementation not in GROUPED_CROSS_ATTENTION:
        raise ValueError(
            f"decoder_input_ids has {rows} rows for {sources} source sentences: with attn_implementation "
            f"{config._attn_implementation!r} they must be equal (k rows per source need one of "
            f"{GROUPED_CROSS_ATTENTION}); repeat the encoder's output and mask for each row."
        )


class VanillaTransformerModel(VanillaTransformerPreTrainedModel):
    """The encoder-decoder of §3 (Figure 1) without the final linear + softmax."""

    _tied_weights_keys = {  # noqa: RUF012 (transformers reads this class attribute)
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = VanillaTransformerEncoder(config)
        self.decoder = VanillaTransformerDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = value
        self.encoder.embed_tokens = value
        self.decoder.embed_tokens = value

    def get_encoder(self) -> VanillaTransformerEncoder:
        return self.encoder

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: EncoderDecoderCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> Seq2SeqModelOutput:
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if output_attentions and self.config._attn_implementation != "eager":
            raise ValueError(
                f"output_attentions=True needs attn_implementation='eager' (the {self.config._attn_implementation!r} "
                "kernel does not return attention weights): load the model with attn_implementation='eager'."
            )
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("Pass `input_ids` (the source sentence) or precomputed `encoder_outputs`.")
            encoder_outputs = self.encoder(
                input_ids,
                attention_mask,
                output_attentions=bool(output_attentions),
                output_hidden_states=bool(output_hidden_states),
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        if decoder_input_ids is None:
            raise ValueError("Pass `decoder_input_ids`, or `labels` to the ForConditionalGeneration model.")
        _check_rows_per_source(self.config, len(decoder_input_ids), len(encoder_outputs.last_hidden_state))

        decoder_outputs = self.decoder(
            decoder_input_ids,
            encoder_outputs.last_hidden_state,
            attention_mask=decoder_attention_mask,
            encoder_attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            cache=decoder_outputs.cache,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )


# §6.1: "beam search with a beam size of 4 and length penalty alpha = 0.6 [...] maximum output length during
# inference to input length + 50, but terminate early when possible". `length_penalty_form` and
# `max_length_offset` are our generation-config fields; "hf" gives stock transformers scoring.
# "Terminate early when possible" is transformers' early_stopping="never": a sentence stops once no running
# hypothesis, even at the longest length it may reach, can beat the finished ones (tensor2tensor's rule compares with
# the best finished one, transformers' with the worst it keeps). early_stopping=True stops as soon as `num_beams`
# hypotheses have finished, and may miss a better, longer one still running (tested).
PAPER_DECODING = {
    "num_beams": 4,
    "length_penalty": 0.6,
    "length_penalty_form": "gnmt",
    "max_length_offset": 50,
    "early_stopping": "never",
}


def gnmt_length_penalty(length: int, alpha: float) -> float:
    """GNMT (Wu et al., 2016), used by §6.1: lp(Y) = ((5 + |Y|) / 6)^alpha; a hypothesis scores log P(Y) / lp(Y)."""
    return ((5 + length) / 6) ** alpha


TOPK_CHUNK = 64  # scores per chunk in `row_topk`
CHUNKED_TOPK_MIN_SCORES = 1 << 18  # below this many, torch's own top-k is faster (`row_topk` costs ~0.1 ms more)


def row_topk(scores: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`scores.topk(count, dim=-1)` of a (rows, V) tensor; on the CPU, the best `count` chunks of `TOPK_CHUNK`
    scores by their maxima first, which hold each row's best `count` scores.

    torch's CPU top-k walks a row score by score; the chunks' maxima are vectorised. 128 rows (32 sentences,
    beam 4), 2 threads: V = 10,000 0.46 ms against 1.17 ms, V = 37,000 0.87 ms against 4.5 ms.
    """
    rows, vocab = scores.shape
    whole = vocab // TOPK_CHUNK * TOPK_CHUNK
    if scores.device.type != "cpu" or scores.numel() < CHUNKED_TOPK_MIN_SCORES or whole < count * TOPK_CHUNK:
        return scores.topk(count, dim=-1)
    chunks = scores[:, :whole].view(rows, -1, TOPK_CHUNK)
    best = chunks.amax(-1).topk(count, dim=-1).indices  # (rows, count)
    offsets = torch.arange(TOPK_CHUNK, device=scores.device)
    candidates = chunks.gather(1, best[:, :, None].expand(-1, -1, TOPK_CHUNK)).flatten(1)
    ids = (best[:, :, None] * TOPK_CHUNK + offsets).flatten(1)
    if whole < vocab:  # the last, shorter chunk joins the candidates whole
        candidates = torch.cat((candidates, scores[:, whole:]), dim=-1)
        ids = torch.cat((ids, torch.arange(whole, vocab, device=scores.device).expand(rows, -1)), dim=-1)
    top, picked = candidates.topk(count, dim=-1)
    return top, ids.gather(1, picked)


def best_continuations(
    log_probs: torch.Tensor, beam_scores: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each sentence's `count` best continuations: their scores (beam score + log p(token)), beams and tokens.

    `log_probs` (B*k, V), `beam_scores` (B, k); returns three (B, count) tensors, best first. transformers adds the
    beam scores to all B*k*V log-probabilities, then ranks each sentence's k*V sums. A beam adds one score to all
    its tokens, so its best `count` tokens are also its best sums: ranking each row first leaves k*count sums to
    add and rank, the same continuations with the same scores, and no (B*k, V) sum to write at every step.
    """
    batch_size, num_beams = beam_scores.shape
    row_scores, row_tokens = row_topk(log_probs, count)  # (B*k, count)
    sums = (row_scores.view(batch_size, num_beams, count) + beam_scores[:, :, None]).view(batch_size, -1)
    scores, picked = sums.topk(count, dim=-1)
    return scores, picked // count, row_tokens.view(batch_size, -1).gather(1, picked)


def finished_for_good(
    is_sent_finished: torch.Tensor, is_early_stop_heuristic_unsatisfied: torch.Tensor, early_stopping: bool | str
) -> torch.Tensor:
    """The sentences (B,) whose k finished hypotheses are final: all k slots are filled, and either early stopping
    is on or no running beam can beat them (transformers' heuristic, which never turns back once satisfied).
    `_update_finished_beams` puts every later candidate of theirs about 1e9 below the finished scores, so their
    log-probabilities are never read again."""
    full = is_sent_finished.all(dim=-1)
    return full if early_stopping is True else full & ~is_early_stop_heuristic_unsatisfied[:, 0]


class SourceLengthLimitLogitsProcessor(LogitsProcessor):
    """Forces </s> once a hypothesis has `limit` tokens, a limit per source sentence (input length + offset)."""

    def __init__(self, limits: torch.Tensor, prompt_length: int, eos_token_id: int):
        self.limits = limits  # (B,)
        self.prompt_length = prompt_length
        self.eos_token_id = eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows_per_sentence = input_ids.shape[0] // self.limits.shape[0]  # beams or returned sequences
        limits = self.limits.to(input_ids.device).repeat_interleave(rows_per_sentence)
        at_limit = (input_ids.shape[1] - self.prompt_length + 1) >= limits  # the next token is the last one
        if not at_limit.any():  # most steps: leave the scores alone, allocate nothing
            return scores
        forced = torch.full_like(scores, -math.inf)
        forced[:, self.eos_token_id] = 0.0
        return torch.where(at_limit[:, None], forced, scores)


def _cache_of(model_kwargs: dict) -> Cache | None:
    """The cache among generation's model kwargs, under whichever of transformers' names it has."""
    return next((model_kwargs[key] for key in ALL_CACHE_NAMES if model_kwargs.get(key) is not None), None)


def _select_sentences(value, kept: torch.Tensor):
    """A per-sentence encoder output (a tensor, or a tuple of them by layer) cut to the sentences at `kept`."""
    if isinstance(value, tuple):
        return tuple(_select_sentences(item, kept) for item in value)
    return value[kept] if isinstance(value, torch.Tensor) else value


class VanillaTransformerForConditionalGeneration(VanillaTransformerPreTrainedModel, GenerationMixin):
    """Figure 1 whole: the encoder-decoder, then the "learned linear transformation and softmax" of §3.4."""

    _tied_weights_keys = {  # noqa: RUF012 (transformers reads this class attribute)
        "lm_head.weight": "model.shared.weight",
        "model.encoder.embed_tokens.weight": "model.shared.weight",
        "model.decoder.embed_tokens.weight": "model.shared.weight",
    }

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.model = VanillaTransformerModel(config)
        self.lm_head = VanillaTransformerLinear(config.d_model, config.vocab_size, bias=False)
        self.post_init()
        for name, value in PAPER_DECODING.items():  # replaced by generation_config.json when loading
            setattr(self.generation_config, name, value)
        # A config marked "from the model config" drops unknown fields such as ours when it is loaded again.
        self.generation_config._from_model_config = False
        self._gnmt_alpha: float | None = None  # set while a beam search scores with the GNMT penalty

    def get_encoder(self) -> VanillaTransformerEncoder:
        return self.model.encoder

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: EncoderDecoderCache | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        logits_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        r"""`labels` (B, T) give the token-level cross-entropy, positions set to -100 ignored.

        `num_items_in_batch` (passed by the Trainer) is the number of label tokens in the whole accumulated
        batch: the loss is then summed and divided by it, so gradient accumulation equals one big batch.
        Label smoothing (§5.4) belongs to the training recipe, not the model.

        `logits_mask` (B, T) bool: compute logits only where it is True, returned packed as (N, V) in row-major
        order; the decoder then skips the positions after each sentence's last True. In training mode with
        `labels` it defaults to `labels != -100`, as transformers' `skip_logits` models skip logits when
        training: the loss never reads the logits of padding, and the output projection with its softmax over V
        is the largest layer of a small model (40% of a `tiny` step at vocabulary 10000).
        """
        if labels is not None:
            use_cache = False
            if decoder_input_ids is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
            if logits_mask is None and self.training:
                logits_mask = labels != -100
        if logits_mask is not None:
            target_shape = None if decoder_input_ids is None else tuple(decoder_input_ids.shape)
            if tuple(logits_mask.shape) != target_shape or logits_mask.dtype != torch.bool:
                raise ValueError(
                    f"logits_mask must be a bool tensor of shape {target_shape} (batch, target length), got "
                    f"{logits_mask.dtype} {tuple(logits_mask.shape)}"
                )
            if decoder_attention_mask is None and _on_eager_cpu(self.lm_head.weight.device):
                # Positions after a sentence's last wanted logit neither give one nor feed one that does (the
                # decoder is causal): as padding, the decoder skips them (see PackedTokens). Elsewhere no mask:
                # the decoder's self-attention keeps the kernels' plain causal path.
                # (A cumulative sum, not cummax: torch 2.11's inductor fails to compile cummax for CUDA.)
                decoder_attention_mask = logits_mask.flip(-1).cumsum(-1).flip(-1) > 0
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        hidden_states = outputs.last_hidden_state
        if logits_mask is not None:
            logits_mask = logits_mask.to(hidden_states.device)
            hidden_states = hidden_states[logits_mask]  # (N, C)
        logits = self.lm_head(hidden_states)  # (B, T, V), or (N, V) with logits_mask

        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            targets = labels[logits_mask] if logits_mask is not None else labels.flatten()
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="sum")
            loss = loss / (num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum())
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
        )

    # --- decoding as in §6.1 -------------------------------------------------------------------------------

    def generate(
        self,
        inputs: torch.Tensor | None = None,
        generation_config=None,
        logits_processor: LogitsProcessorList | None = None,
        **kwargs,
    ):
        """`GenerationMixin.generate`, plus the paper's maximum output length of input length + 50 (§6.1).

        With `max_length_offset` set in the generation config (default 50 for our models) and neither
        `max_length` nor `max_new_tokens` passed, each sentence stops at its own source length (non-pad tokens,
        </s> included) + offset, and with learned positions at `max_position_embeddings` tokens at most.
        The GNMT length penalty is applied in `_beam_search`. On the CPU a beam search packs its weights once
        (`_packed_decoder_weights`).
        """
        config = generation_config if generation_config is not None else self.generation_config
        num_beams = kwargs.get("num_beams", config.num_beams)
        if not isinstance(num_beams, int) or num_beams < 1:  # 0 would fail deep in beam search (ZeroDivisionError)
            raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
        offset = kwargs.pop("max_length_offset", getattr(config, "max_length_offset", None))
        source = inputs if inputs is not None else kwargs.get("input_ids")
        if offset is not None and source is not None and not {"max_length", "max_new_tokens"} & kwargs.keys():
            mask = kwargs.get("attention_mask")
            lengths = mask.sum(-1) if mask is not None else torch.full(source.shape[:1], source.shape[1])
            limits = lengths.to(torch.long) + offset
            if self.config.position_embedding_type == "learned":
                # Learned positions end at max_position_embeddings: token k is predicted from positions 0..k-1.
                limits = limits.clamp(max=self.config.max_position_embeddings)
            kwargs["max_new_tokens"] = int(limits.max())
            limit = SourceLengthLimitLogitsProcessor(limits, prompt_length=1, eos_token_id=self.config.eos_token_id)
            logits_processor = LogitsProcessorList([*(logits_processor or []), limit])
        with self._packed_decoder_weights(num_beams):
            output = super().generate(inputs, generation_config, logits_processor, **kwargs)
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        # Beam search fills finished hypotheses with `pad_token_id or eos_token_id`: </s> when <pad> is id 0.
        is_eos = sequences == self.config.eos_token_id
        is_eos[:, 0] = False  # the decoder start token, even where a model starts with </s>
        after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0
        sequences.masked_fill_(after_eos, self.config.pad_token_id)
        return output

    @contextlib.contextmanager
    def _packed_decoder_weights(self, num_beams: int):
        """For one beam search on the CPU in float32: the decoder's and the output projection's weights in oneDNN's
        blocked layout, packed once for the call instead of by oneDNN at every step.

        Layers of `PACKED_LINEAR_MIN_WEIGHTS` or more: `tiny`'s smaller ones ran faster through MKL at a few rows.
        Beam 4, the packing counted: one sentence 1.08-1.15x faster at `tiny`, 1.25x at `small`, 1.32-1.34x at
        `base`; 32 sentences 0.99-1.09x. Greedy decoding, with fewer rows a step, did not repay it
        (benchmarks/RESULTS.md). Held by the layers for the call only: a weight changed later (also through
        `.data`, which its version counter does not see) is never read stale.
        """
        if num_beams < 2 or not (ONEDNN_LINEAR and _on_eager_cpu(self.device) and self.dtype == torch.float32):
            yield
            return
        layers = [
            m
            for m in (*self.model.decoder.modules(), self.lm_head)
            if isinstance(m, VanillaTransformerLinear) and m.weight.numel() >= PACKED_LINEAR_MIN_WEIGHTS
        ]
        with torch.no_grad():
            for layer in layers:
                layer.packed_weight = torch.ops.mkldnn._reorder_linear_weight(layer.weight)
        try:
            yield
        finally:
            for layer in layers:
                layer.packed_weight = None

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        """transformers' expansion to `expand_size` decoder rows per sentence (beams, returned sequences), without
        copying the source: its cross-attention keys and values are then projected, kept and read once per
        sentence instead of once per row (`VanillaTransformerAttention` groups each sentence's rows)."""
        if self.config._attn_implementation not in GROUPED_CROSS_ATTENTION:
            return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)
        source = {key: model_kwargs.pop(key) for key in ("encoder_outputs", "attention_mask") if key in model_kwargs}
        input_ids, model_kwargs = super()._expand_inputs_for_generation(expand_size, False, input_ids, **model_kwargs)
        return input_ids, {**model_kwargs, **source}

    def _reorder_cache(self, cache: EncoderDecoderCache, beam_idx: torch.Tensor) -> EncoderDecoderCache:
        """Beam search's per-step reordering, of the self-attention cache only.

        transformers reorders the cross-attention keys/values too, but a beam never moves to another sentence and
        they are the same for all its beams (held once per sentence, see `_expand_inputs_for_generation`).
        """
        cache.self_attention_cache.reorder_cache(beam_idx)
        return cache

    def _sample(
        self,
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        synced_gpus=False,
        streamer=None,
        **model_kwargs,
    ):
        """Greedy decoding on the CPU through `_greedy_search`; sampling, streaming, outputs beyond the sequences
        (`return_dict_in_generate`), synchronised GPUs and other devices through transformers' own loop. (On a GPU
        transformers' loop checks for the end without waiting for the device at every step, which ours, deciding
        which sentences leave, cannot.)"""
        stock = generation_config.do_sample or generation_config.return_dict_in_generate or synced_gpus or streamer
        if stock or input_ids.device.type != "cpu":
            search = (input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, streamer)
            return super()._sample(*search, **model_kwargs)
        return self._greedy_search(input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs)

    def _greedy_search(self, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs):
        """transformers' greedy loop (`GenerationMixin._sample` without sampling), returning the same sequences,
        except that a finished sentence leaves the decoder's batch (`_drop_sentences`) instead of being fed
        padding to the end: transformers has no way to do that. Its later tokens are padding in both loops."""
        pad_token_id = generation_config._pad_token_tensor
        pads = any(hasattr(criteria, "eos_token_id") for criteria in stopping_criteria)  # as transformers
        batch_size = input_ids.shape[0]
        unfinished = torch.ones(batch_size, dtype=torch.long, device=input_ids.device)
        decoding = torch.ones(batch_size, dtype=torch.bool, device=input_ids.device)
        every_row = torch.arange(batch_size, device=input_ids.device)
        rows = scores = can_drop = None
        outputs = self._prefill(
            input_ids, generation_config, model_kwargs, is_first_iteration=not generation_config.is_assistant
        )
        while True:
            model_kwargs = self._update_model_kwargs_for_generation(outputs, model_kwargs, True)
            logits = outputs.logits[:, -1].to(device=input_ids.device, dtype=torch.float32)
            del outputs  # the model's logits are not kept through the next forward pass
            if rows is None:
                scores = logits.clone()  # the logits processors may write into it
            else:  # finished sentences' rows keep stale scores: their next token is padding
                scores.index_copy_(0, rows, logits)
            next_tokens = logits_processor(input_ids, scores).argmax(dim=-1)
            if pads:
                next_tokens = next_tokens * unfinished + pad_token_id * (1 - unfinished)
            input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
            unfinished = unfinished & ~stopping_criteria(input_ids, None)
            if not bool(unfinished.any()):
                break
            if can_drop is None:  # (without padding, transformers keeps writing finished rows' own tokens)
                can_drop = pads and self._can_drop_sentences(model_kwargs)
            finished = unfinished == 0
            if can_drop and bool((finished & decoding).any()):
                rows, kept, decoding = self._drop_sentences(model_kwargs, every_row, decoding, finished, 1)
                if (cache := _cache_of(model_kwargs)) is not None:
                    self._reorder_cache(cache, kept)  # cuts the self-attention cache, as in beam search
            model_inputs = self.prepare_inputs_for_generation(
                input_ids if rows is None else input_ids[rows],
                next_sequence_length=1 if model_kwargs["use_cache"] else None,
                **model_kwargs,
            )
            outputs = self(**model_inputs, return_dict=True)
        return input_ids

    def _beam_search(
        self, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False, **model_kwargs
    ):
        """Beam search (§6.1): `_ranked_beam_search`, or transformers' own loop where outputs beyond the sequences
        (`return_dict_in_generate`), sampling, `low_memory` or synchronised GPUs are asked for. Both score
        finished hypotheses with the penalty of `length_penalty_form`: transformers' log P / |Y|^alpha, which
        `_update_finished_beams` and `_check_early_stop_heuristic` turn into GNMT's where the form is "gnmt"."""
        form = getattr(generation_config, "length_penalty_form", "hf")
        if form not in ("hf", "gnmt"):
            raise ValueError(f"`length_penalty_form` must be 'hf' or 'gnmt', got {form!r}.")
        stock = (
            generation_config.return_dict_in_generate
            or generation_config.do_sample
            or generation_config.low_memory
            or synced_gpus
        )
        self._gnmt_alpha = generation_config.length_penalty if form == "gnmt" else None
        search = (input_ids, logits_processor, stopping_criteria, generation_config)
        try:
            if stock:
                return super()._beam_search(*search, synced_gpus, **model_kwargs)
            return self._ranked_beam_search(*search, **model_kwargs)
        finally:
            self._gnmt_alpha = None

    def _ranked_beam_search(self, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs):
        """transformers' beam search loop (`GenerationMixin._beam_search`) and its helpers, returning the same
        sequences, with two (B*k, V) tensors a step fewer: no copy of the logits, and the continuations chosen by
        `best_continuations`; log-probabilities are written to one buffer kept for the call. The model stops
        running the sentences whose hypotheses are final (`_drop_sentences`). Where candidates tie exactly (common
        with bf16 logits), either loop may keep either: `topk` leaves the order of equal scores unspecified, and
        the two loops call it on different tensors. Beam 4, 32 sentences of 40 tokens, 2 threads: 1.07-1.17x as fast
        as transformers' loop at `tiny`, 1.02-1.18x at `small`, the same at `base`, where the forward pass dominates
        (paired A/Bs, benchmarks/RESULTS.md)."""
        config = generation_config
        num_beams, max_length, early_stopping = config.num_beams, config.max_length, config.early_stopping
        eos_token_id = config._eos_token_tensor
        device = input_ids.device
        batch_size, cur_len = input_ids.shape[0] // num_beams, input_ids.shape[1]
        prompt_len = cur_len
        # as transformers: 2k candidates (k with one </s> id), so that k can go on when k of them have finished
        beams_to_keep = max(2, 1 + (eos_token_id.shape[0] if eos_token_id is not None else 0)) * num_beams
        top_num_beam_mask = torch.arange(beams_to_keep, device=device) < num_beams
        fill_value = config._pad_token_tensor or eos_token_id[0] if eos_token_id is not None else -1
        running_sequences = torch.full(
            (batch_size, num_beams, max_length), fill_value, dtype=torch.long, device=device
        )
        running_sequences[:, :, :cur_len] = self._unflatten_beam_dim(input_ids, batch_size, num_beams)
        sequences = running_sequences.clone()
        running_beam_scores = torch.zeros((batch_size, num_beams), device=device)
        running_beam_scores[:, 1:] = -1.0e9  # the first step continues the first beam only
        beam_scores = torch.full((batch_size, num_beams), -1.0e9, device=device)
        is_sent_finished = torch.zeros((batch_size, num_beams), dtype=torch.bool, device=device)
        is_early_stop_heuristic_unsatisfied = torch.ones((batch_size, 1), dtype=torch.bool, device=device)
        running_beam_indices = torch.full(
            (batch_size, num_beams, max_length - cur_len), -1, dtype=torch.int32, device=device
        )
        beam_indices = running_beam_indices.clone()
        first_row = torch.arange(batch_size, device=device)[:, None] * num_beams
        log_probs = None
        decoding = torch.ones(batch_size, dtype=torch.bool, device=device)  # the sentences the model still runs
        rows = None  # their rows in the flat beams, or None while all are run
        can_drop = None
        scoring = {
            "decoder_prompt_len": prompt_len,
            "length_penalty": config.length_penalty,
            "early_stopping": early_stopping,
        }

        flat_running_sequences = input_ids
        model_outputs = self._prefill(input_ids, config, model_kwargs, is_first_iteration=not config.is_assistant)
        while True:
            model_kwargs = self._update_model_kwargs_for_generation(model_outputs, model_kwargs, True)
            logits = model_outputs.logits[:, -1, :].to(device=device, dtype=torch.float32)
            if log_probs is None:
                log_probs = torch.empty_like(logits)
            if rows is None:
                torch.log_softmax(logits, dim=-1, out=log_probs)
            else:  # the rows of finished sentences keep stale, never-read values
                log_probs.index_copy_(0, rows, torch.log_softmax(logits, dim=-1))
            del model_outputs, logits  # the model's logits are not kept through the next forward pass
            scores = logits_processor(flat_running_sequences, log_probs)
            topk_log_probs, topk_beams, topk_tokens = best_continuations(scores, running_beam_scores, beams_to_keep)

            topk_running_sequences = self._gather_beams(running_sequences, topk_beams)
            topk_running_sequences[:, :, cur_len] = topk_tokens
            topk_running_beam_indices = self._gather_beams(running_beam_indices, topk_beams)
            topk_running_beam_indices[:, :, cur_len - prompt_len] = topk_beams + first_row
            next_token_hits_stopping_criteria = self._unflatten_beam_dim(
                stopping_criteria(self._flatten_beam_dim(topk_running_sequences[:, :, : cur_len + 1]), None),
                batch_size,
                beams_to_keep,
            )
            running_sequences, running_beam_scores, running_beam_indices = self._get_running_beams_for_next_iteration(
                topk_log_probs=topk_log_probs,
                topk_running_sequences=topk_running_sequences,
                topk_running_beam_indices=topk_running_beam_indices,
                next_token_hits_stopping_criteria=next_token_hits_stopping_criteria,
                num_beams=num_beams,
            )
            sequences, beam_scores, beam_indices, is_sent_finished = self._update_finished_beams(
                sequences=sequences,
                topk_running_sequences=topk_running_sequences,
                beam_scores=beam_scores,
                topk_log_probs=topk_log_probs,
                beam_indices=beam_indices,
                topk_running_beam_indices=topk_running_beam_indices,
                is_early_stop_heuristic_unsatisfied=is_early_stop_heuristic_unsatisfied,
                is_sent_finished=is_sent_finished,
                next_token_hits_stopping_criteria=next_token_hits_stopping_criteria,
                top_num_beam_mask=top_num_beam_mask,
                num_beams=num_beams,
                cur_len=cur_len,
                **scoring,
            )
            cur_len += 1
            is_early_stop_heuristic_unsatisfied = self._check_early_stop_heuristic(
                is_early_stop_heuristic_unsatisfied=is_early_stop_heuristic_unsatisfied,
                running_beam_scores=running_beam_scores,
                beam_scores=beam_scores,
                is_sent_finished=is_sent_finished,
                cur_len=cur_len,
                max_length=max_length,
                **scoring,
            )
            if not self._beam_search_has_unfinished_sequences(
                is_early_stop_heuristic_unsatisfied,
                is_sent_finished,
                next_token_hits_stopping_criteria,
                early_stopping,
            ):
                break
            beam_idx = self._flatten_beam_dim(running_beam_indices[..., cur_len - 1 - prompt_len])
            if can_drop is None:
                can_drop = self._can_drop_sentences(model_kwargs)
            if can_drop:
                finished = finished_for_good(is_sent_finished, is_early_stop_heuristic_unsatisfied, early_stopping)
                rows, beam_idx, decoding = self._drop_sentences(model_kwargs, beam_idx, decoding, finished, num_beams)
            if (cache := _cache_of(model_kwargs)) is not None:
                self._reorder_cache(cache, beam_idx)  # in place
            flat_running_sequences = self._flatten_beam_dim(running_sequences[:, :, :cur_len])
            model_inputs = self.prepare_inputs_for_generation(
                flat_running_sequences if rows is None else flat_running_sequences[rows],
                next_sequence_length=1 if model_kwargs["use_cache"] else None,
                **model_kwargs,
            )
            model_outputs = self(**model_inputs, return_dict=True)

        # the best num_return_sequences of each sentence, cut after the longest generated one (as transformers)
        sequences = self._flatten_beam_dim(sequences[:, : config.num_return_sequences])
        beam_indices = self._flatten_beam_dim(beam_indices[:, : config.num_return_sequences])
        return sequences[:, : prompt_len + int((beam_indices >= 0).sum(dim=1).max())]

    @staticmethod
    def _can_drop_sentences(model_kwargs: dict) -> bool:
        """Whether `_drop_sentences` can cut all of the model's per-sentence state: the encoder's outputs and
        padding mask (a `ModelOutput` and a tensor), and an encoder-decoder cache of `DynamicLayer`s (none of
        fixed size). Any other tensor (a decoder attention mask, a user's extra input) keeps every sentence in the
        batch."""
        known = {"encoder_outputs", "attention_mask", *ALL_CACHE_NAMES}
        stateful = (torch.Tensor, Cache, ModelOutput, tuple)
        if any(isinstance(value, stateful) and key not in known for key, value in model_kwargs.items()):
            return False
        if not isinstance(model_kwargs.get("encoder_outputs"), ModelOutput):
            return False
        cache = _cache_of(model_kwargs)
        if cache is None:
            return True
        if not isinstance(cache, EncoderDecoderCache):
            return False
        parts = (cache.self_attention_cache, cache.cross_attention_cache)
        return all(type(layer) is DynamicLayer for part in parts for layer in part.layers)

    @staticmethod
    def _drop_sentences(
        model_kwargs: dict, beam_idx: torch.Tensor, decoding: torch.Tensor, finished: torch.Tensor, num_beams: int
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Stops running the model for the sentences `finished` (in beam search `finished_for_good`; in greedy
        search, ended), as fairseq's beam search does: with the lengths of real sentences, half a batch's rows were
        finished ones (val of Multi30k, batches of 64), and beam 4 ran 1.31-1.48x faster without them, greedy
        1.01-1.29x (`benchmarks/real_sentences.py`, benchmarks/RESULTS.md).

        `decoding` (B,) marks the sentences the model ran at the last step. Returns the rows it runs next (None:
        all), `beam_idx` (the flat beams' new order) as positions among the rows it ran, to reorder and cut the
        self-attention cache at once, and the new `decoding`. The per-sentence state is cut here."""
        still = decoding & ~finished
        if bool(still.all()):
            return None, beam_idx, decoding
        if not torch.equal(still, decoding):
            kept = (decoding.cumsum(0) - 1)[still]  # positions among the sentences the model ran
            encoder_outputs = model_kwargs["encoder_outputs"]
            model_kwargs["encoder_outputs"] = type(encoder_outputs)(
                **{key: _select_sentences(value, kept) for key, value in encoder_outputs.items()}
            )
            if model_kwargs.get("attention_mask") is not None:
                model_kwargs["attention_mask"] = model_kwargs["attention_mask"][kept]
            if (cache := _cache_of(model_kwargs)) is not None:
                cache.cross_attention_cache.batch_select_indices(kept)
        position = decoding.repeat_interleave(num_beams).cumsum(0) - 1  # a row's position among the rows run
        rows = still.repeat_interleave(num_beams).nonzero().squeeze(1)
        return rows, position[beam_idx[rows]], still

    def _gnmt_rescale(self, log_probs: torch.Tensor, length: int) -> torch.Tensor:
        """Multiply by |Y|^alpha / lp(Y), so that transformers' division by |Y|^alpha leaves log P / lp(Y)."""
        alpha = self._gnmt_alpha
        return log_probs * (length**alpha / gnmt_length_penalty(length, alpha))

    def _update_finished_beams(self, **kwargs):
        if self._gnmt_alpha is not None:
            length = kwargs["cur_len"] + 1 - kwargs["decoder_prompt_len"]
            kwargs["topk_log_probs"] = self._gnmt_rescale(kwargs["topk_log_probs"], length)
        return super()._update_finished_beams(**kwargs)

    def _check_early_stop_heuristic(self, **kwargs):
        if self._gnmt_alpha is not None:
            # the same hypothetical length as the base method, rescaled the same way
            never = kwargs["early_stopping"] == "never" and kwargs["length_penalty"] > 0.0
            length = (kwargs["max_length"] if never else kwargs["cur_len"]) - kwargs["decoder_prompt_len"]
            kwargs["running_beam_scores"] = self._gnmt_rescale(kwargs["running_beam_scores"], length)
        return super()._check_early_stop_heuristic(**kwargs)


__all__ = [
    "PAPER_DECODING",
    "VanillaTransformerForConditionalGeneration",
    "VanillaTransformerModel",
    "VanillaTransformerPreTrainedModel",
]
