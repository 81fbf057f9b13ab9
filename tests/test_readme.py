"""The README's two set-up commands are the ones CI and users run."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def _readme_command(which):
    script = str(ROOT / ".ci" / "readme_command.py")
    out = subprocess.run([sys.executable, script, which], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_ci_runs_the_readme_test_command_in_a_fresh_venv():
    test_cmd = _readme_command("tests")
    assert test_cmd == next(b for b in _commands() if "pytest" in b).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    # the command is read from the README at run time and run inside a venv made by the script
    assert "-m venv .ci-venv" in ci and "source .ci-venv/bin/activate" in ci
    assert "readme_command.py tests" in ci and 'bash -euo pipefail -c "$test_command"' in ci
    assert ci.index("source .ci-venv/bin/activate") < ci.index('-c "$test_command"')


def test_readme_is_short_and_for_users():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file(), link


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
