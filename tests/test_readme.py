"""The README's two set-up commands are the ones CI and users run."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    blocks = _commands()
    test_cmd = next(b for b in blocks if "pytest" in b)
    assert test_cmd.strip() in (ROOT / ".ci" / "run").read_text()


def test_readme_main_job_is_the_demo():
    assert any("fimaudit demo" in b for b in _commands())


def test_the_30_second_example_runs():
    import pytest

    pytest.importorskip("torch")
    pytest.importorskip("fimaudit_torch")
    text = (ROOT / "README.md").read_text()
    block = text.split("## 30-second example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    scope = {}
    exec(compile(block, "README.md", "exec"), scope)
    r = scope["r"]
    assert r.value.shape == (64,) and r.direction.shape == (64, 3, 32, 32)
