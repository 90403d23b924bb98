"""scripts/compare_runs.py: the best run per language pair is chosen on the validation split alone."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
import compare_runs  # noqa: E402


def scores(bleu: float, tok_bleu: float) -> dict:
    return {"bleu": bleu, "chrf": bleu + 20, "tok_bleu": tok_bleu}


def make_run(root: Path, name: str, pair: tuple[str, str], val: float, test: float, averaged: bool = True) -> Path:
    run = root / name
    folder = run / "averaged" if averaged else run
    folder.mkdir(parents=True)
    results = {
        "training": {"languages": list(pair), "minutes": 4.0, "updates": 100, "target_tokens_per_s": 5000},
        "val": scores(val, val + 0.1),
        "test_2016_flickr": scores(test, test + 0.1),
    }
    (folder / "results.json").write_text(json.dumps(results))
    return run


def test_the_best_val_score_wins_even_where_test_disagrees(tmp_path):
    """Runs are told apart by folder, so runs of the same name under different parents stay distinct."""
    runs = [
        make_run(tmp_path, "a", ("en", "de"), val=30.0, test=35.0),
        make_run(tmp_path, "b", ("en", "de"), val=31.0, test=33.0, averaged=False),  # results.json in the run
        make_run(tmp_path, "c", ("de", "en"), val=20.0, test=21.0),
        make_run(tmp_path / "elsewhere", "a", ("de", "en"), val=19.0, test=25.0),  # same name as the first
    ]
    rows, best = compare_runs.compare(runs, split="val", metric="tok_bleu")
    assert best == {"en-de": str(runs[1]), "de-en": str(runs[2])}
    assert [row["scores"]["test_2016_flickr"]["bleu"] for row in rows] == [35.0, 33.0, 21.0, 25.0]


def test_main_prints_the_table_with_the_best_in_bold_and_writes_best_json(tmp_path, capsys):
    runs = [make_run(tmp_path, "a", ("en", "de"), 30.0, 35.0), make_run(tmp_path, "b", ("en", "de"), 29.0, 36.0)]
    best_json = tmp_path / "best.json"
    assert compare_runs.main([str(r) for r in runs] + ["--best_json", str(best_json)]) == {"en-de": str(runs[0])}
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| run | pair | minutes | updates | tgt tok/s | val bleu | val chrf | val tok_bleu |")
    assert table[2] == f"| **{runs[0]}** | en-de | 4.0 | 100 | 5000 | 30.00 | 50.00 | 30.10 | 35.00 | 55.00 | 35.10 |"
    assert table[3].startswith(f"| {runs[1]} | en-de |")
    assert json.loads(best_json.read_text()) == {"en-de": str(runs[0])}


def test_a_run_without_scores_is_listed_but_never_chosen(tmp_path):
    finished = make_run(tmp_path, "finished", ("en", "fr"), 40.0, 41.0)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    rows, best = compare_runs.compare([crashed, finished], split="val", metric="bleu")
    assert best == {"en-fr": str(finished)}
    assert [row["run"] for row in rows] == [str(crashed), str(finished)] and rows[0]["scores"] == {}
    assert f"| {crashed} | ?-? |" in compare_runs.markdown(rows, best)


def test_a_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder .*nowhere does not exist"):
        compare_runs.compare([tmp_path / "nowhere"], split="val", metric="bleu")
