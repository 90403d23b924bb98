"""Export to CTranslate2, a C++ inference engine for Transformer models, with int8 and float16 weights.

CTranslate2 has its own converter for transformers' Marian and BART (`ctranslate2.converters.
TransformersConverter`), but none for a model type it does not know, so we fill its `TransformerSpec`
ourselves, following that converter's `BartLoader`/`MarianMTLoader` and its OpenNMT-py converter. What differs
from them: our sinusoids are interleaved (§3.5), sin(pos w_i) at dimension 2i and cos(pos w_i) at 2i+1, while
CTranslate2's default table puts all sines before all cosines; we therefore store our own table.

Decoding there matches ours token for token (see `tests/test_export_ctranslate2.py`) for greedy search and for beam
search with transformers' length normalisation log P(Y) / |Y|^alpha (`length_penalty_form="hf"`, |Y| counting
</s>, so pass `return_end_token=True`). CTranslate2 offers no GNMT penalty ((5 + |Y|) / 6)^alpha, used by the
paper's decoding (§6.1), nor a maximum length per sentence (input length + 50): beam results with the paper's
settings can differ from our `generate()`.
"""

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .modeling_vanilla_transformer import (
    VanillaTransformerAttention,
    VanillaTransformerForConditionalGeneration,
    sinusoids,
)

try:
    import ctranslate2
    from ctranslate2.converters import Converter
    from ctranslate2.converters.utils import fuse_linear
    from ctranslate2.specs import common_spec, transformer_spec
    from ctranslate2.specs.model_spec import ACCEPTED_MODEL_TYPES
except ImportError as error:  # an optional dependency: say how to get it
    raise ImportError(
        "Exporting to CTranslate2 needs the ctranslate2 package: pip install 'hf_vanilla_transformer[ctranslate2]'"
    ) from error

# Past its table's end CTranslate2 raises "No position encodings are defined for positions >= N"; ours have no end.
MIN_POSITIONS = 1024


def ctranslate2_vocabulary(vocab_size: int, tokenizer: PreTrainedTokenizerBase | None = None) -> list[str]:
    """The token of each id, as CTranslate2 reads and writes text: the tokenizer's, or the id itself as a string.

    A tokenizer smaller than the model's vocabulary (a vocabulary padded for speed) gets placeholder names for the
    ids it never produces.
    """
    if tokenizer is None:
        return [str(index) for index in range(vocab_size)]
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}: "
            "the model could not embed every token id."
        )
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    tokens += [f"<unused_{index}>" for index in range(len(tokens), vocab_size)]
    if len(set(tokens)) != len(tokens):
        raise ValueError("The tokenizer maps two ids to the same token: CTranslate2 needs one token per id.")
    return tokens


def _set_linear(spec: common_spec.LinearSpec, linear: torch.nn.Linear) -> None:
    spec.weight = linear.weight
    if linear.bias is not None:
        spec.bias = linear.bias


def _set_layer_norm(spec: common_spec.LayerNormSpec, layer_norm: torch.nn.LayerNorm) -> None:
    spec.gamma = layer_norm.weight
    spec.beta = layer_norm.bias


def _set_attention(spec, attention: VanillaTransformerAttention, self_attention: bool) -> None:
    """CTranslate2 fuses Q, K, V into one projection in self-attention, and K, V in encoder-decoder attention."""
    q, k, v = (common_spec.LinearSpec() for _ in range(3))
    _set_linear(q, attention.q_proj)
    _set_linear(k, attention.k_proj)
    _set_linear(v, attention.v_proj)
    if self_attention:
        fuse_linear(spec.linear[0], [q, k, v])
    else:
        fuse_linear(spec.linear[0], [q])
        fuse_linear(spec.linear[1], [k, v])
    _set_linear(spec.linear[-1], attention.out_proj)


def _set_feed_forward(spec, layer) -> None:
    _set_linear(spec.linear_0, layer.ffn.fc1)
    _set_linear(spec.linear_1, layer.ffn.fc2)
    _set_layer_norm(spec.layer_norm, layer.final_layer_norm)


def _position_table(stack: torch.nn.Module, d_model: int, num_positions: int) -> torch.Tensor:
    """§3.5's interleaved sinusoids for `num_positions` positions, or the learned table (Table 3 row (E))."""
    if isinstance(stack.embed_positions, torch.nn.Embedding):
        return stack.embed_positions.weight
    return sinusoids(torch.arange(num_positions), d_model)


def _set_stack_inputs(spec, stack: torch.nn.Module, d_model: int, num_positions: int) -> None:
    """Scaled token embeddings plus positions (§3.4, §3.5): E[x] * sqrt(d_model) + PE[pos]."""
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    embeddings.weight = stack.embed_tokens.weight
    spec.scale_embeddings = float(stack.embed_scale)
    spec.position_encodings.encodings = _position_table(stack, d_model, num_positions)


def build_ctranslate2_spec(
    model: VanillaTransformerForConditionalGeneration, vocabulary: Sequence[str], num_positions: int | None = None
) -> "transformer_spec.TransformerSpec":
    """The post-LN encoder-decoder of §3 as CTranslate2's `TransformerSpec`, weights taken from `model`.

    `num_positions` (default: max(1024, max_position_embeddings)) is the length of the sinusoid table stored.
    """
    config = model.config
    if len(vocabulary) != config.vocab_size:
        raise ValueError(
            f"`vocabulary` has {len(vocabulary)} tokens but the model's vocab_size is {config.vocab_size}."
        )
    if config.encoder_attention_heads != config.decoder_attention_heads:
        raise ValueError(
            "CTranslate2's TransformerSpec has one head count: encoder_attention_heads "
            f"({config.encoder_attention_heads}) must equal decoder_attention_heads "
            f"({config.decoder_attention_heads})."
        )
    num_positions = num_positions or max(MIN_POSITIONS, config.max_position_embeddings)
    activation = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU}
    spec = transformer_spec.TransformerSpec.from_config(
        (config.encoder_layers, config.decoder_layers),
        config.encoder_attention_heads,
        with_relative_position=False,
        pre_norm=False,  # LayerNorm(x + Sublayer(x)), §3.1
        activation=activation[config.activation_function],
    )
    encoder, decoder = model.model.encoder, model.model.decoder
    with torch.no_grad():
        _set_stack_inputs(spec.encoder, encoder, config.d_model, num_positions)
        for layer_spec, layer in zip(spec.encoder.layer, encoder.layers, strict=True):
            _set_attention(layer_spec.self_attention, layer.self_attn, self_attention=True)
            _set_layer_norm(layer_spec.self_attention.layer_norm, layer.self_attn_layer_norm)
            _set_feed_forward(layer_spec.ffn, layer)

        _set_stack_inputs(spec.decoder, decoder, config.d_model, num_positions)
        for layer_spec, layer in zip(spec.decoder.layer, decoder.layers, strict=True):
            _set_attention(layer_spec.self_attention, layer.self_attn, self_attention=True)
            _set_layer_norm(layer_spec.self_attention.layer_norm, layer.self_attn_layer_norm)
            _set_attention(layer_spec.attention, layer.encoder_attn, self_attention=False)
            _set_layer_norm(layer_spec.attention.layer_norm, layer.encoder_attn_layer_norm)
            _set_feed_forward(layer_spec.ffn, layer)
        _set_linear(spec.decoder.projection, model.lm_head)

    spec.config.layer_norm_epsilon = encoder.layers[0].final_layer_norm.eps
    spec.config.unk_token = _unk_token(vocabulary, config)
    spec.config.bos_token = vocabulary[config.bos_token_id]
    spec.config.eos_token = vocabulary[config.eos_token_id]
    spec.config.decoder_start_token = vocabulary[config.decoder_start_token_id]
    spec.register_source_vocabulary(list(vocabulary))  # one joint vocabulary (§5.1)
    spec.register_target_vocabulary(list(vocabulary))
    return spec


def _unk_token(vocabulary: Sequence[str], config) -> str:
    # Our byte-level BPE never needs <unk>, but CTranslate2 maps unknown strings to it: keep a real token.
    return "<unk>" if "<unk>" in vocabulary else vocabulary[config.pad_token_id]


class VanillaTransformerConverter(Converter):
    """CTranslate2's `Converter` (validation, quantization, `--force`, saving) for an in-memory model."""

    def __init__(
        self, model: VanillaTransformerForConditionalGeneration, tokenizer: PreTrainedTokenizerBase | None = None
    ):
        self.model = model
        self.tokenizer = tokenizer

    def _load(self) -> "transformer_spec.TransformerSpec":
        vocabulary = ctranslate2_vocabulary(self.model.config.vocab_size, self.tokenizer)
        return build_ctranslate2_spec(self.model, vocabulary)


def export_ctranslate2(
    model_dir: str | os.PathLike, output_dir: str | os.PathLike, quantization: str | None = None, force: bool = False
) -> Path:
    """Converts a saved model folder (and its tokenizer, if saved there) into a CTranslate2 model folder."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"model_dir {model_dir} has no config.json: pass a folder written by save_pretrained")
    if quantization is not None and quantization not in ACCEPTED_MODEL_TYPES:
        raise ValueError(f"`quantization` must be one of {', '.join(ACCEPTED_MODEL_TYPES)}, got {quantization!r}.")
    model = VanillaTransformerForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    has_tokenizer = any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir) if has_tokenizer else None
    converter = VanillaTransformerConverter(model, tokenizer)
    return Path(converter.convert(str(output_dir), quantization=quantization, force=force))


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line: MODEL_DIR OUT_DIR [--quantization int8] [--force]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="folder written by save_pretrained (tokenizer optional)")
    parser.add_argument("output_dir", help="CTranslate2 model folder to write")
    parser.add_argument("--quantization", choices=ACCEPTED_MODEL_TYPES, default=None, help="weight type")
    parser.add_argument("--force", action="store_true", help="overwrite output_dir if it exists")
    args = parser.parse_args(argv)
    output_dir = export_ctranslate2(args.model_dir, args.output_dir, args.quantization, args.force)
    print(f"CTranslate2 {ctranslate2.__version__} model written to {output_dir}")
    return output_dir


__all__ = [
    "VanillaTransformerConverter",
    "build_ctranslate2_spec",
    "ctranslate2_vocabulary",
    "export_ctranslate2",
    "main",
]
