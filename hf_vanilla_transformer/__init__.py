"""The Transformer of "Attention Is All You Need" as a Hugging Face transformers model."""

from .configuration_vanilla_transformer import PRESETS, VanillaTransformerConfig

__all__ = ["PRESETS", "VanillaTransformerConfig"]
