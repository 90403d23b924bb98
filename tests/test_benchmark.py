"""benchmarks/benchmark.py: the peers really are our model, the FLOP count is exact, and a run reports every row."""

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY
from torch.utils.flop_counter import FlopCounterMode
from transformers import MarianMTModel

from hf_vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from hf_vanilla_transformer.batching import least_padded_sort
from hf_vanilla_transformer.modeling_vanilla_transformer import sinusoids

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import attention_shapes  # noqa: E402
import benchmark  # noqa: E402
import count_operators  # noqa: E402
import linear_shapes  # noqa: E402
import profile_training  # noqa: E402

MICRO = "micro:16:1:2:32"


@pytest.fixture
def config() -> VanillaTransformerConfig:
    return VanillaTransformerConfig(**TINY, init_std=0.5, max_position_embeddings=64)


@pytest.fixture
def ours(config) -> VanillaTransformerForConditionalGeneration:
    torch.manual_seed(0)
    return VanillaTransformerForConditionalGeneration(config).eval()


@pytest.fixture
def padded_batch() -> dict[str, torch.Tensor]:
    input_ids = torch.tensor([[5, 6, 7, 8, 9, 2], [10, 11, 12, 2, 0, 0]])
    labels = torch.tensor([[13, 14, 15, 16, 2], [17, 18, 2, -100, -100]])
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(), "labels": labels}


def marian_with_our_weights(ours, our_positions: bool) -> MarianMTModel:
    marian = MarianMTModel(benchmark.marian_config(ours.config))
    benchmark.port_to_marian(ours, marian, our_positions=our_positions)
    return marian.eval()


def test_marian_with_our_weights_and_positions_gives_our_logits_and_loss(ours, padded_batch):
    marian = marian_with_our_weights(ours, our_positions=True)
    with torch.no_grad():
        expected, got = ours(**padded_batch), marian(**padded_batch)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)
    assert marian.final_logits_bias.abs().sum() == 0
    assert marian.lm_head.weight is marian.model.shared.weight  # tied, as ours (§3.4)


def test_marians_own_sinusoids_are_ours_with_sines_first_so_its_logits_differ(ours, padded_batch):
    marian = marian_with_our_weights(ours, our_positions=False)
    table, d = marian.model.encoder.embed_positions.weight, ours.config.d_model
    interleaved = sinusoids(torch.arange(table.shape[0]), d)
    torch.testing.assert_close(table[:, : d // 2], interleaved[:, 0::2], atol=1e-6, rtol=0)  # sin
    torch.testing.assert_close(table[:, d // 2 :], interleaved[:, 1::2], atol=1e-6, rtol=0)  # cos
    with torch.no_grad():
        assert not torch.allclose(marian(**padded_batch).logits, ours(**padded_batch).logits, atol=1e-3)


def test_marian_port_refuses_a_model_of_another_shape(ours, config):
    other = MarianMTModel(benchmark.marian_config(VanillaTransformerConfig(**{**TINY, "decoder_layers": 3})))
    with pytest.raises(ValueError, match=r"Marian port: none of our weights for \['model.decoder.layers.2"):
        benchmark.port_to_marian(ours, other)


def test_torch_transformer_peer_with_our_weights_gives_our_logits_and_loss(ours, config, padded_batch):
    peer = benchmark.TorchTransformerTranslator(config)
    benchmark.port_to_torch_transformer(ours, peer)
    peer.eval()
    with torch.no_grad():
        expected, got = ours(**padded_batch), peer(**padded_batch)
    mask = padded_batch["labels"] != -100  # positions after the target end hold different garbage
    torch.testing.assert_close(got.logits[mask], expected.logits[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)


def test_torch_transformer_greedy_equals_our_generate_at_forced_length(ours, config, padded_batch):
    peer = benchmark.TorchTransformerTranslator(config)
    benchmark.port_to_torch_transformer(ours, peer)
    peer.eval()
    sources = {k: padded_batch[k] for k in ("input_ids", "attention_mask")}
    expected = ours.generate(**sources, num_beams=1, min_new_tokens=7, max_new_tokens=7)
    assert torch.equal(peer.greedy(*sources.values(), length=7), expected)


@pytest.mark.parametrize("decoding", ["greedy", "beam4", "beam4_gnmt"])
def test_forced_length_decodes_as_min_new_tokens_does_without_its_copies(ours, config, decoding):
    with torch.no_grad():  # a model that would end every sentence at once: </s> wins every step by a margin
        final_norm = ours.model.decoder.layers[-1].final_layer_norm
        final_norm.weight.mul_(0.1)
        final_norm.bias.copy_(ours.lm_head.weight[benchmark.EOS])
        ours.lm_head.weight[benchmark.EOS] *= 3
    settings = benchmark.Settings(sizes={"micro": config}, output_length=9)
    sources = [[5, 6, 7, 8, 9, 2], [10, 11, 2]]
    input_ids = benchmark.pad(sources)
    kwargs = dict(benchmark.DECODINGS[decoding]) | ({"length_penalty_form": "hf"} if decoding == "beam4" else {})
    expected = ours.generate(
        input_ids=input_ids, attention_mask=(input_ids != 0).long(), min_new_tokens=9, max_new_tokens=9, **kwargs
    )
    generated = benchmark.hf_engine("ours", ours, settings, (decoding,)).translate(sources, decoding)
    assert generated.shape == (2, 1 + 9) and not (generated[:, 1:] == benchmark.EOS).any()
    assert torch.equal(generated, expected)


def test_varied_lengths_end_each_sentence_as_long_as_its_source_in_both_models(ours, config):
    """`beam4_lengths`: the same work for ours and Marian, whatever their weights predict; ours drops the sentences
    that ended from its batch (and so does less work per step), Marian keeps them to the end."""
    settings = benchmark.Settings(sizes={"micro": config})
    generator = torch.Generator().manual_seed(3)
    sources = benchmark.sentences_of_lengths([12, 4, 9, 6], config.vocab_size, generator)
    marian = marian_with_our_weights(ours, our_positions=True)
    rows = []
    ours.model.decoder.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    for name, model in (("ours", ours), ("marian", marian)):
        generated = benchmark.hf_engine(name, model, settings, ("beam4_lengths",)).translate(sources, "beam4_lengths")
        for row, length in zip(generated, [12, 4, 9, 6], strict=True):  # after the decoder start: length tokens
            tokens = row[1 : 1 + length].tolist()  # (Marian then fills the row with </s>, ours with padding)
            assert tokens[-1] == benchmark.EOS and not {benchmark.EOS, benchmark.PAD} & set(tokens[:-1]), name
    assert rows[0] == 16 and rows[-1] == 4 and rows == sorted(rows, reverse=True)  # ours: sentences left


def test_torch_transformer_peer_puts_dropout_where_we_do():
    config = VanillaTransformerConfig(**TINY, dropout=0.3, attention_dropout=0.1, activation_dropout=0.2)
    peer = benchmark.TorchTransformerTranslator(config)
    decoder_layer = peer.transformer.decoder.layers[0]
    assert (decoder_layer.dropout1.p, decoder_layer.dropout2.p, decoder_layer.dropout3.p) == (0.3, 0.3, 0.3)
    assert decoder_layer.dropout.p == 0.2  # after the ReLU
    assert decoder_layer.self_attn.dropout == decoder_layer.multihead_attn.dropout == 0.1
    assert peer.transformer.encoder.norm is None and peer.transformer.decoder.norm is None  # post-LN: none


def test_training_flops_equal_torchs_flop_counter_over_eager_attention():
    config = VanillaTransformerConfig(**{**TINY, "decoder_layers": 1, "decoder_ffn_dim": 24})
    model = VanillaTransformerForConditionalGeneration(config)
    model.set_attn_implementation("eager")  # matmuls the counter sees (it skips the CPU sdpa kernel)
    input_ids, labels = torch.randint(4, 99, (3, 7)), torch.randint(4, 99, (3, 5))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels).loss.backward()
    assert benchmark.training_flops(config, torch.ones_like(input_ids), labels) == counter.get_total_flops()


def test_training_flops_of_a_padded_batch_are_those_of_its_sentences_alone(config, padded_batch):
    alone = [
        benchmark.training_flops(config, padded_batch["attention_mask"][i : i + 1], padded_batch["labels"][i : i + 1])
        for i in range(2)
    ]
    assert benchmark.training_flops(config, padded_batch["attention_mask"], padded_batch["labels"]) == sum(alone)
    trimmed = benchmark.training_flops(config, torch.ones(1, 4), torch.ones(1, 3))
    assert alone[1] == trimmed  # the second sentence: 4 source tokens, 3 labels


def test_token_budget_batches_fill_up_to_the_budget_with_multi30k_lengths():
    batches = benchmark.token_budget_batches(3, 500, 100, torch.Generator().manual_seed(0))
    for batch in batches:
        target_lengths = (batch.labels != -100).sum(-1)
        assert batch.target_tokens == int(target_lengths.sum()) <= 500
        assert batch.target_tokens > 500 - 30  # one more sentence would not have fitted
        assert target_lengths.min() >= 10 and target_lengths.max() <= 30
        source_lengths = batch.attention_mask.sum(-1)
        ends = batch.input_ids.gather(1, (source_lengths - 1)[:, None])
        assert (ends == benchmark.EOS).all()
        words = batch.input_ids[(batch.input_ids != 0) & (batch.input_ids != benchmark.EOS)]
        assert words.min() >= 4 and words.max() < 99  # never a special, never the last id


def test_corpus_length_batches_have_the_corpus_lengths_bucketed_within_the_budget(tmp_path):
    rng = torch.Generator().manual_seed(1)
    en = torch.randint(3, 20, (300,), generator=rng)
    words = {"en": en.tolist(), "de": (en + torch.randint(-2, 3, (300,), generator=rng)).clamp(min=1).tolist()}
    for lang, counts in words.items():
        (tmp_path / f"train.{lang}").write_text("".join(" ".join(["w"] * n) + "\n" for n in counts))
    batches = benchmark.corpus_length_batches((str(tmp_path), "en", "de"), 3, 200, 100, rng)
    assert len(batches) == 3
    # the trainer's order for these lengths and budget (EOS included)
    sort = least_padded_sort([n + 1 for n in words["en"]], [n + 1 for n in words["de"]], 200)
    for batch in batches:
        source_lengths = batch.attention_mask.sum(-1).tolist()
        target_lengths = (batch.labels != -100).sum(-1).tolist()
        assert batch.input_ids.numel() <= 200 and batch.labels.numel() <= 200  # padded tokens per side
        keys = source_lengths if sort == "source" else list(map(max, source_lengths, target_lengths))
        assert max(keys) - min(keys) <= 1  # length-sorted: one bucket
        assert (batch.input_ids.gather(1, torch.tensor(source_lengths)[:, None] - 1) == benchmark.EOS).all()
        pairs = {(words["en"][i] + 1, words["de"][i] + 1) for i in range(300)}
        assert set(zip(source_lengths, target_lengths, strict=True)) <= pairs
    ratios = benchmark.padding_ratios(batches)
    assert ratios["source"] < 1.15 and ratios["target"] < 1.15, ratios


def test_sizes_are_presets_or_custom_and_bad_ones_are_refused():
    name, config = benchmark.parse_size(MICRO, 64)
    assert (name, config.d_model, config.decoder_layers, config.decoder_attention_heads) == ("micro", 16, 1, 2)
    assert benchmark.parse_size("small", 64)[1].d_model == 256
    with pytest.raises(ValueError, match="A custom size must read NAME:D_MODEL:LAYERS:HEADS:FFN"):
        benchmark.parse_size("micro:16:1", 64)
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        benchmark.parse_size("huge", 64)


def test_round_robin_order_rotates_and_ratios_are_relative_to_marian():
    assert [benchmark.rotated("abc", rep) for rep in range(3)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    rows = [benchmark.LatencyResult("s", engine, "greedy", 1, 40, ms) for engine, ms in (("marian", 30), ("ours", 20))]
    benchmark.add_ratios(rows, "engine", "ms_median", ("size", "decoding"), higher_is_better=False)
    assert [row.vs_marian for row in rows] == [1.0, 1.5]


def test_throughput_takes_each_batch_through_every_engine_in_turn():
    calls = []

    def engine(name: str) -> benchmark.Engine:  # beam 4 only: no engine takes part in the other decodings
        def translate(sources: list[list[int]], decoding: str) -> None:
            calls.append((name, sources[0][0], decoding))

        return benchmark.Engine(name, translate, ("beam4",))

    settings = benchmark.Settings(sizes={}, batch_size=2, inference_reps=2)
    sources = [[1], [1], [2], [2], [3]]  # batches of 2: first tokens 1, 2, 3
    results = benchmark.measure_throughput("s", [engine("a"), engine("b")], sources, settings)
    warm_up, timed_calls = calls[:2], calls[2:]
    assert warm_up == [("a", 1, "beam4"), ("b", 1, "beam4")]
    order = [(name, batch) for name, batch, _ in timed_calls]
    assert order == [
        ("a", 1), ("b", 1), ("b", 2), ("a", 2), ("a", 3), ("b", 3),  # repetition 1: each batch, engines rotating
        ("b", 1), ("a", 1), ("a", 2), ("b", 2), ("b", 3), ("a", 3),  # repetition 2
    ]  # fmt: skip
    assert [(row.engine, row.sentences) for row in results] == [("a", 10), ("b", 10)]
    assert all(row.sentences_per_s == 10 / row.seconds for row in results)


def test_quick_run_on_a_micro_size_reports_every_model_engine_and_decoding(tmp_path):
    pytest.importorskip("ctranslate2")
    json_path, md_path = tmp_path / "bench.json", tmp_path / "bench.md"
    args = ["--quick", "--sizes", MICRO, "--vocab_size", "64", "--skip_memory", "--threads", "1"]
    benchmark.main([*args, "--output_json", str(json_path), "--output_md", str(md_path)])
    report = json.loads(json_path.read_text())

    assert report["skipped"] == []
    assert {"cpu", "usable_cpus", "torch_threads", "versions"} <= report["machine"].keys()
    assert report["machine"]["torch_threads"] == 1
    training = {row["model"]: row for row in report["training"]}
    assert training.keys() == {"ours", "marian", "torch_nn"}
    for row in training.values():
        assert row["steps"] == 2 and row["tokens_per_s"] == pytest.approx(row["target_tokens"] / row["seconds"])
        assert row["mfu"] is None and row["memory_mib"] is None  # CPU; --skip_memory
    assert training["marian"]["vs_marian"] == 1.0
    padding = report["padding"]["micro"]
    assert padding["source"] > 1.0 and padding["target"] > 1.0  # random lengths 10-30, not sorted
    assert f"micro source {padding['source']:.2f}, target {padding['target']:.2f}" in md_path.read_text()

    engines = {"ours", "marian", "torch_nn"} | {
        f"ct2_{m}_{t}" for m in ("ours", "marian") for t in ("float32", "int8")
    }
    throughput = {(row["engine"], row["decoding"]) for row in report["throughput"]}
    assert {e for e, d in throughput if d == "greedy"} == engines
    assert {e for e, d in throughput if d == "beam4"} == engines - {"torch_nn"}
    assert {e for e, d in throughput if d == "beam4_gnmt"} == {"ours"}
    assert {e for e, d in throughput if d == "beam4_lengths"} == {"ours", "marian"}
    for row in report["throughput"]:
        assert row["sentences"] == 32 and row["output_length"] == (None if row["decoding"] == "beam4_lengths" else 40)
    latency = {(row["engine"], row["decoding"]) for row in report["latency"]}
    assert latency == throughput - {("ours", "beam4_gnmt"), ("ours", "beam4_lengths"), ("marian", "beam4_lengths")}
    markdown = md_path.read_text()
    assert "| micro | ct2_marian_int8 | beam4 |" in markdown and "## Single-sentence latency" in markdown


def test_ctranslate2_translates_in_a_process_of_its_own(tmp_path):
    """CTranslate2's OpenMP work, once it has run here, slows torch's two-thread operators in this process: its
    translators are loaded and run in a child process (a thread pool instead would load them here)."""
    pytest.importorskip("ctranslate2")
    _, config = benchmark.parse_size(MICRO, 64)
    models = benchmark.build_models(config)
    sources = benchmark.random_sentences(3, 64, torch.Generator().manual_seed(0))
    with benchmark.ctranslate2_engines(models, benchmark.Settings(sizes={}), tmp_path, skipped := []) as engines:
        assert skipped == [] and len(engines) == 4
        for engine in engines:
            for decoding in engine.decodings:
                engine.translate(sources, decoding)
    assert benchmark._CTRANSLATE2_TRANSLATORS == {}


def test_train_models_measures_those_models_only(tmp_path):
    json_path, md_path = tmp_path / "bench.json", tmp_path / "bench.md"
    args = ["--quick", "--sizes", MICRO, "--vocab_size", "64", "--skip_memory", "--skip_inference"]
    benchmark.main([*args, "--train_models", "ours", "--output_json", str(json_path), "--output_md", str(md_path)])
    report = json.loads(json_path.read_text())
    assert [row["model"] for row in report["training"]] == ["ours"]
    assert report["training"][0]["vs_marian"] is None  # no Marian row to divide by
    assert "| micro | ours | fp32 |" in md_path.read_text()
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--train_models", "fairseq"])
    assert benchmark.parse_args(["--compile", "reduce-overhead"])[0].compile == "reduce-overhead"


def test_profile_reports_queue_and_wall_times_and_the_operators_of_a_step(tmp_path):
    md_path = tmp_path / "profile.md"
    args = ["--preset", MICRO, "--vocab_size", "64", "--token_budget", "200", "--reps", "3", "--profiled_steps", "1"]
    report = profile_training.main([*args, "--rows", "12", "--output_md", str(md_path)])
    assert md_path.read_text() == report
    assert report.startswith("# One training step of ours (micro) on cpu, 200 target tokens per batch")
    assert "TFLOP/s over all." in report and "MFU" not in report  # no peak to divide by on a CPU
    assert "Per step: " in report and "ms of CPU operator time." in report
    assert "kernel launches" not in report  # a CPU step launches no kernels
    operators = report.split("```")[1]
    assert "aten::mm" in operators or "aten::addmm" in operators  # the projections are in the step
    # each step's wall time includes the time to queue it, so the medians keep that order
    size, config = benchmark.parse_size(MICRO, 64)
    settings = benchmark.Settings(sizes={size: config})
    batches = benchmark.token_budget_batches(2, 200, 64, torch.Generator().manual_seed(0))
    model = benchmark.build_model("ours", config)
    times = profile_training.timings_ms(model, benchmark.adam(model), batches, settings, reps=3)
    assert 0 < times["queued_ms"] <= times["wall_ms"]
    with pytest.raises(ValueError, match="--reps must be a positive integer, got 0"):
        profile_training.main([*args[:-4], "--reps", "0"])


def test_profile_with_one_sdpa_backend_runs_that_kernel_alone():
    args = ["--preset", MICRO, "--vocab_size", "64", "--token_budget", "200", "--reps", "1", "--profiled_steps", "1"]
    chosen = profile_training.main([*args, "--rows", "200"])
    assert "attention: the model’s choice" in chosen and "_scaled_dot_product_flash_attention_for_cpu" in chosen
    math = profile_training.main([*args, "--rows", "200", "--sdpa_backend", "math"])
    assert "attention: math" in math
    assert "_scaled_dot_product_attention_math" in math and "flash_attention" not in math
    with pytest.raises(SystemExit):
        profile_training.main([*args, "--sdpa_backend", "xformers"])


def test_skip_training_measures_inference_only(tmp_path):
    md_path = tmp_path / "bench.md"
    args = ["--quick", "--sizes", MICRO, "--vocab_size", "64", "--skip_training", "--output_md", str(md_path)]
    report = benchmark.main(args)
    assert report.training == [] and report.padding == {}
    assert {row.decoding for row in report.throughput} == {"greedy", "beam4", "beam4_gnmt", "beam4_lengths"}
    markdown = md_path.read_text()
    assert "## Training" not in markdown and "Padded / real" not in markdown and "## Translation" in markdown
    with pytest.raises(ValueError, match="--skip_training and --skip_inference together leave nothing to measure"):
        benchmark.parse_args(["--skip_training", "--skip_inference"])


@pytest.mark.slow  # compiles C++ kernels: minutes on 2 cores
def test_compiled_training_is_reported_as_such(tmp_path):
    md_path = tmp_path / "bench.md"
    args = ["--quick", "--sizes", MICRO, "--vocab_size", "64", "--skip_memory", "--skip_inference", "--compile"]
    report = benchmark.main([*args, "--train_models", "ours", "--output_md", str(md_path)])
    assert report.settings["compile"] == "default" and [row.model for row in report.training] == ["ours"]
    assert "| micro | ours | fp32, torch.compile |" in md_path.read_text()


@pytest.mark.slow  # four fresh interpreters import torch and transformers: 20-80 s on two shared cores
def test_cpu_training_footprints_hold_the_logits_and_agree_across_codebases():
    """Each model trains in a fresh process; with a large vocabulary the logits dominate: all positions' in the
    peers, the labelled positions' only in ours."""
    batches = benchmark.token_budget_batches(1, 500, 20000, torch.Generator().manual_seed(0))
    config = benchmark.parse_size(MICRO, 20000)[1]
    footprints = benchmark.training_footprints_mib(benchmark.MODELS, config, batches, benchmark.Settings(sizes={}))
    padded_logits_mib = batches[0].labels.numel() * config.vocab_size * 4 / 2**20  # one (B, T, V) float32 tensor
    real_logits_mib = batches[0].target_tokens * config.vocab_size * 4 / 2**20  # one (N, V) float32 tensor
    assert footprints.keys() == set(benchmark.MODELS)
    # logits and their gradient
    assert footprints["ours"] > 2 * real_logits_mib
    assert footprints["marian"] > 2 * padded_logits_mib and footprints["torch_nn"] > 2 * padded_logits_mib
    assert footprints["ours"] < min(footprints["marian"], footprints["torch_nn"])
    assert max(footprints["marian"], footprints["torch_nn"]) < 1.3 * min(footprints["marian"], footprints["torch_nn"])
    # malloc returns freed blocks (MALLOC_MMAP_THRESHOLD_), so a measurement repeats, as heap peaks did not
    again = benchmark.training_footprints_mib(["ours"], config, batches, benchmark.Settings(sizes={}))
    assert again["ours"] == pytest.approx(footprints["ours"], abs=0.5)


def test_operator_counter_counts_every_launching_operator_and_no_view():
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    assert count_operators.operator_counts(lambda: (a @ b).relu().t().unsqueeze(0)) == {"mm": 1, "relu": 1}


def test_a_training_step_of_ours_projects_as_torch_nn_does_and_runs_fewer_operators_than_marian():
    size, config = benchmark.parse_size(MICRO, 50)
    counts = count_operators.step_counts(config, benchmark.Settings(sizes={size: config}), sentences=4)
    products = {name: count["mm"] + count["addmm"] for name, count in counts.items()}
    # torch.nn.Transformer packs Q, K, V (and the source's K, V) into one product each, as we do in training
    assert products["ours"] == products["torch_nn"] < products["marian"]
    assert sum(counts["ours"].values()) < sum(counts["marian"].values())
    assert counts["ours"]["_fused_adam_"] == counts["marian"]["_fused_adam_"] == 1


def test_operator_count_report_lists_the_most_frequent_and_refuses_no_rows():
    table = count_operators.main(["--preset", MICRO, "--vocab_size", "50", "--rows", "2"]).splitlines()
    assert table[0] == "| operator | ours | marian | torch_nn |" and table[2].startswith("| all | ")
    assert len(table) == 5  # header, rule, all, the 2 most frequent operators
    with pytest.raises(ValueError, match="--rows must be a positive integer, got 0"):
        count_operators.main(["--preset", MICRO, "--rows", "0"])


def test_attention_shapes_times_each_cell_and_marks_where_the_model_runs_matrix_products(tmp_path, capsys):
    md_path = tmp_path / "shapes.md"
    args = ["--rows", "1", "64", "--queries", "4", "300", "--keys", "4", "--presets", "tiny", "--reps", "1"]
    grid = attention_shapes.main([*args, "--output_md", str(md_path)])
    config = VanillaTransformerConfig.from_preset("tiny")
    heads = config.encoder_attention_heads
    names = [f"tiny: {heads} heads of {config.d_model // heads}, {rows} rows" for rows in (1, 64)]
    assert list(grid) == names and all(list(cells) == [(4, 4), (300, 4)] for cells in grid.values())
    assert all(ratio > 0 for cells in grid.values() for ratio, _ in cells.values())
    # the products where a head has few scores (16) and the call many heads (64 x 4)
    assert [matmul for cells in grid.values() for _, matmul in cells.values()] == [False, False, True, False]
    table = md_path.read_text()
    assert table == capsys.readouterr().out.rstrip("\n") + "\n"
    assert f"| 4 | {grid[names[1]][4, 4][0]:.2f}* |" in table and f"| 4 | {grid[names[0]][4, 4][0]:.2f} |" in table


@pytest.mark.parametrize("script", [attention_shapes, linear_shapes])
def test_shapes_ab_of_generate_pairs_each_timing_of_the_rule_with_one_without(script, capsys):
    speedups = script.main(["--generate", "tiny", "--generate_reps", "2", "--generate_batch", "8"])
    result = speedups["tiny"]
    assert list(speedups) == ["tiny"] and 0 < result["min"] <= result["median"] <= result["max"]
    assert 0 <= result["faster"] <= 2
    expected = f"tiny: generate() with 4 beams, 8 sentences a batch: {result['median']:.3f}x faster with the rule"
    assert expected in capsys.readouterr().out


def test_the_ab_arms_without_a_rule_run_sdpas_kernel_and_f_linear_everywhere():
    with torch.no_grad():
        assert linear_shapes.uses_onednn(1, 128, 10000) and attention_shapes.uses_matmul(64, 4, 4, 4)
        with linear_shapes.linear_everywhere():
            assert not linear_shapes.uses_onednn(1, 128, 10000)
        with attention_shapes.sdpa_everywhere():
            assert not attention_shapes.uses_matmul(64, 4, 4, 4)


def test_attention_shapes_rejects_empty_shapes(capsys):
    with pytest.raises(SystemExit):
        attention_shapes.main(["--generate_batch", "0"])
    expected = "--rows, --queries, --keys, --reps and the --generate_* counts must be positive integers"
    assert expected in capsys.readouterr().err


def test_linear_shapes_times_each_layer_and_marks_where_the_model_runs_onednn(tmp_path, capsys):
    md_path = tmp_path / "linears.md"
    grid = linear_shapes.main(["--rows", "1", "64", "--presets", "small", "--reps", "1", "--output_md", str(md_path)])
    names = ["attention (256 x 256)", "ffn in (256 x 1024)", "ffn out (1024 x 256)", "output (256 x 10000)"]
    assert list(grid) == [f"small: {name}" for name in names]
    assert all(len(cells) == 2 and all(ratio > 0 for ratio, _ in cells) for cells in grid.values())
    # oneDNN for the output projection at any rows, for the others from 64 rows (64 x 256 x 256 multiply-adds)
    assert [[used for _, used in cells] for cells in grid.values()] == [[False, True]] * 3 + [[True, True]]
    table = md_path.read_text()
    assert table == capsys.readouterr().out.rstrip("\n") + "\n"
    ratios = [f"{ratio:.2f}" for ratio, _ in grid["small: attention (256 x 256)"]]
    assert f"| small: attention (256 x 256) | {ratios[0]} | {ratios[1]}* |" in table


def test_linear_shapes_rejects_empty_shapes_and_unknown_presets(capsys):
    with pytest.raises(SystemExit):
        linear_shapes.main(["--rows", "0"])
    expected = "--rows, --vocab_size, --reps and the --generate_* counts must be positive integers"
    assert expected in capsys.readouterr().err
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        linear_shapes.main(["--presets", "huge"])
