"""VanillaTransformerConfig: the paper's sizes, the generic names transformers reads, and clear errors."""

import pytest

from hf_vanilla_transformer import PRESETS, VanillaTransformerConfig


def test_defaults_are_the_base_model_of_table_3():
    config = VanillaTransformerConfig()
    assert (config.encoder_layers, config.decoder_layers, config.d_model) == (6, 6, 512)
    assert (config.encoder_ffn_dim, config.encoder_attention_heads, config.dropout) == (2048, 8, 0.1)
    assert config.activation_function == "relu" and config.position_embedding_type == "sinusoidal"
    assert config.scale_embedding and config.tie_word_embeddings and config.is_encoder_decoder
    assert not config.attention_bias  # §3.2.2's projections are matrices


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("base", (6, 512, 2048, 8, 0.1)),
        ("big", (6, 1024, 4096, 16, 0.3)),
        ("small", (3, 256, 1024, 4, 0.1)),
        ("tiny", (4, 128, 256, 4, 0.3)),
    ],
)
def test_presets(name, expected):
    config = VanillaTransformerConfig.from_preset(name)
    for side in ("encoder", "decoder"):
        layers, d_model, ffn, heads, dropout = expected
        assert getattr(config, f"{side}_layers") == layers
        assert getattr(config, f"{side}_ffn_dim") == ffn
        assert getattr(config, f"{side}_attention_heads") == heads
        assert (config.d_model, config.dropout) == (d_model, dropout)


def test_preset_overrides_win():
    config = VanillaTransformerConfig.from_preset("tiny", vocab_size=10000, dropout=0.1)
    assert (config.vocab_size, config.dropout, config.d_model) == (10000, 0.1, 128)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown preset 'huge'; known presets: base, big, small, tiny"):
        VanillaTransformerConfig.from_preset("huge")
    assert list(PRESETS) == ["base", "big", "small", "tiny"]


def test_generic_names_resolve_through_attribute_map():
    config = VanillaTransformerConfig.from_preset("small")
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (256, 4, 3)
    assert config.get_text_config(decoder=True).hidden_size == 256


def test_round_trip_through_json(tmp_path):
    config = VanillaTransformerConfig.from_preset("tiny", position_embedding_type="learned")
    config.save_pretrained(tmp_path)
    reloaded = VanillaTransformerConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"d_model": 100, "encoder_attention_heads": 3},
            r"`d_model` \(100\) must be divisible by `encoder_attention_heads` \(3\)",
        ),
        (
            {"d_model": 96, "decoder_attention_heads": 5},
            r"`d_model` \(96\) must be divisible by `decoder_attention_heads` \(5\)",
        ),
        ({"d_model": 9, "encoder_attention_heads": 1, "decoder_attention_heads": 1}, "`d_model` must be even"),
        ({"vocab_size": 0}, "`vocab_size` must be a positive integer, got 0"),
        ({"d_model": -8}, "`d_model` must be a positive integer, got -8"),
        ({"encoder_layers": 0}, "`encoder_layers` must be a positive integer, got 0"),
        ({"decoder_layers": -1}, "`decoder_layers` must be a positive integer, got -1"),
        ({"encoder_ffn_dim": 0}, "`encoder_ffn_dim` must be a positive integer"),
        ({"decoder_ffn_dim": 0}, "`decoder_ffn_dim` must be a positive integer"),
        ({"encoder_attention_heads": 0}, "`encoder_attention_heads` must be a positive integer"),
        ({"max_position_embeddings": 0}, "`max_position_embeddings` must be a positive integer"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"`dropout` must be in \[0, 1\), got -0.1"),
        ({"attention_dropout": 1.5}, r"`attention_dropout` must be in \[0, 1\)"),
        ({"activation_dropout": -1.0}, r"`activation_dropout` must be in \[0, 1\)"),
        ({"activation_function": "tanh"}, r"`activation_function` must be one of \('relu', 'gelu'\), got 'tanh'"),
        ({"position_embedding_type": "rotary"}, "`position_embedding_type` must be one of .*got 'rotary'"),
        ({"init_std": 0.0}, "`init_std` must be positive or None, got 0.0"),
        ({"pad_token_id": 99, "vocab_size": 99}, r"`pad_token_id` must be in \[0, vocab_size=99\), got 99"),
        ({"eos_token_id": -1}, r"`eos_token_id` must be in \[0, vocab_size=37000\), got -1"),
    ],
)
def test_invalid_values_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VanillaTransformerConfig(**kwargs)


def test_a_saved_config_without_attention_bias_was_saved_before_the_field_existed(tmp_path):
    """Every attention projection had a bias then; a config saved now always names the field."""
    (tmp_path / "config.json").write_text('{"model_type": "vanilla_transformer"}')
    assert VanillaTransformerConfig.from_pretrained(tmp_path).attention_bias is True
    VanillaTransformerConfig().save_pretrained(tmp_path)
    assert VanillaTransformerConfig.from_pretrained(tmp_path).attention_bias is False
    assert VanillaTransformerConfig.from_pretrained(tmp_path, attention_bias=True).attention_bias is True


def test_invalid_values_in_a_saved_config_fail_on_load(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "vanilla_transformer", "dropout": 2.0}')
    with pytest.raises(ValueError, match=r"`dropout` must be in \[0, 1\), got 2.0"):
        VanillaTransformerConfig.from_pretrained(tmp_path)
