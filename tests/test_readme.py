"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    from wildmix import corpus

    missing = corpus.missing_packages("tiny")
    if missing:  # the examples build the corpus as users do
        pytest.skip(f"the README's examples need {' '.join(missing)} (make debs-tiny)")
    monkeypatch.chdir(tmp_path)  # examples may write files
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
