"""The README's usage example runs as written, and its first two commands are what CI runs."""

import re
from pathlib import Path

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def test_usage_example_runs(tmp_path, monkeypatch, capsys):
    example = re.search(r"## Usage\n\n```python\n(.*?)```", README, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "translation_text" in printed
    assert (tmp_path / "my-model" / "pipeline_vanilla_transformer.py").is_file()


def test_ci_runs_the_readme_test_command():
    commands = re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
    test_command = [line for line in commands if line and not line.startswith("#")][1]
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
