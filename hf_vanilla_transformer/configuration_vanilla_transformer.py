"""Configuration of the Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

Field names follow BART/Marian so that transformers users (and `DynamicCache`, which sizes itself from
`hidden_size`/`num_attention_heads`/`num_hidden_layers`) find what they expect.
"""

from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

ACTIVATIONS = ("relu", "gelu")  # relu is the paper's (§3.3); gelu is kept for ablations
POSITION_EMBEDDING_TYPES = ("sinusoidal", "learned")  # §3.5; "learned" is Table 3 row (E)

# Table 3 of the paper, plus two CPU-sized models. Sizes not given here take the class defaults (= "base").
PRESETS: dict[str, dict] = {
    # Table 3 "base": N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1.
    "base": {},
    # Table 3 "big": N=6, d_model=1024, d_ff=4096, h=16, P_drop=0.3.
    "big": {
        "d_model": 1024,
        "encoder_ffn_dim": 4096,
        "decoder_ffn_dim": 4096,
        "encoder_attention_heads": 16,
        "decoder_attention_heads": 16,
        "dropout": 0.3,
    },
    # CPU-sized: trains on two cores in minutes.
    "small": {
        "d_model": 256,
        "encoder_layers": 3,
        "decoder_layers": 3,
        "encoder_ffn_dim": 1024,
        "decoder_ffn_dim": 1024,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
    },
    # Transformer-Tiny of the published Multi30k results (Wu et al., ACL 2021).
    "tiny": {
        "d_model": 128,
        "encoder_layers": 4,
        "decoder_layers": 4,
        "encoder_ffn_dim": 256,
        "decoder_ffn_dim": 256,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "dropout": 0.3,
    },
}


@strict
class VanillaTransformerConfig(PreTrainedConfig):
    r"""The post-LN encoder-decoder of §3, defaults = the "base" model of Table 3.

    Note: the paper's 65M (base) / 213M (big) parameters are for WMT En-De with a shared vocabulary of about
    37000 tokens. With exactly 37000 we count 63.0M / 214.2M (see `tests/test_modeling.py`): the paper
    rounds, does not say its exact vocabulary size, and our output projection has no bias (tied to the
    embedding, §3.4), nor have the attention projections (§3.2.2), while each LayerNorm carries a gain and a bias.
    """

    model_type = "vanilla_transformer"
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model",
        "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "encoder_layers",
    }

    vocab_size: int = 37000  # one joint BPE vocabulary for source and target (§5.1)
    d_model: int = 512  # d_model in Table 3
    encoder_layers: int = 6  # N
    decoder_layers: int = 6  # N
    encoder_attention_heads: int = 8  # h
    decoder_attention_heads: int = 8  # h
    encoder_ffn_dim: int = 2048  # d_ff
    decoder_ffn_dim: int = 2048  # d_ff
    dropout: float = 0.1  # P_drop: sub-layer outputs and embedding sums (§5.4)
    attention_dropout: float = 0.0  # not in the paper; tensor2tensor later added it
    activation_dropout: float = 0.0  # not in the paper; inside the FFN, after the ReLU
    activation_function: str = "relu"
    attention_bias: bool = False  # §3.2.2's W^Q, W^K, W^V, W^O are matrices; True: biases, as fairseq and Marian
    max_position_embeddings: int = 1024  # learned positions only; sinusoids extend to any length
    position_embedding_type: str = "sinusoidal"
    scale_embedding: bool = True  # multiply embeddings by sqrt(d_model) (§3.4)
    tie_word_embeddings: bool = True  # one matrix for both embeddings and the pre-softmax projection (§3.4)
    init_std: float | None = None  # None: N(0, d_model^-0.5) embeddings (see _init_weights)
    use_cache: bool = True
    is_encoder_decoder: bool = True
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    decoder_start_token_id: int = 1

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "VanillaTransformerConfig":
        """A config, as saved: one without `attention_bias` was saved before the field existed, when every attention
        projection had a bias, and its checkpoint holds them."""
        return super().from_dict({"attention_bias": True, **config_dict}, **kwargs)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._check_values()

    def _check_values(self) -> None:
        for name in (
            "vocab_size",
            "d_model",
            "encoder_layers",
            "decoder_layers",
            "encoder_attention_heads",
            "decoder_attention_heads",
            "encoder_ffn_dim",
            "decoder_ffn_dim",
            "max_position_embeddings",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name):
                raise ValueError(
                    f"`d_model` ({self.d_model}) must be divisible by `{name}` ({getattr(self, name)}): "
                    "each head gets d_k = d_v = d_model / h (§3.2.2)."
                )
        if self.d_model % 2:
            raise ValueError(f"`d_model` must be even for the sin/cos pairs of §3.5, got {self.d_model}.")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"`activation_function` must be one of {ACTIVATIONS}, got {self.activation_function!r}.")
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"`position_embedding_type` must be one of {POSITION_EMBEDDING_TYPES}, "
                f"got {self.position_embedding_type!r}."
            )
        if self.init_std is not None and self.init_std <= 0:
            raise ValueError(f"`init_std` must be positive or None, got {self.init_std}.")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"`{name}` must be in [0, vocab_size={self.vocab_size}), got {value}.")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "VanillaTransformerConfig":
        """A config of a named size: "base" and "big" of Table 3, or the CPU-sized "small" and "tiny"."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; known presets: {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})


__all__ = ["VanillaTransformerConfig", "PRESETS"]
