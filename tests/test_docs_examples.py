"""Every ```python example of the README and docs/ runs as written (in a scratch folder, on the
test session's Redis), as vector-quantize-pytorch tests its README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sidcore.index.embedded import ENV_URL

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _examples() -> list:
    out = []
    for page in PAGES:
        for n, code in enumerate(re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)):
            out.append(pytest.param(code, id=f"{page.relative_to(ROOT)}#{n + 1}"))
    return out


def test_the_docs_have_python_examples():
    assert len(_examples()) >= 2


@pytest.mark.parametrize("code", _examples())
def test_example_runs(code, tmp_path, monkeypatch, redis_client, redis_url):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_URL, redis_url)
    exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})
