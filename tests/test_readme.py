"""README.md is a landing page: at most 250 lines, and it still holds the two commands CI runs.

Why: the experiments' narratives live in docs/*/README.md; a README that grows back into a lab
notebook buries the set-up. And `.ci/run` reads the main job and the test command out of README.md
(the first ```bash block after a line starting ``Main job`` / ``Tests``), so losing either heading or
block breaks CI in a way no other test notices.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 250


def ci_block(text: str, start: str) -> str:
    """The first ```bash block after the first line matching ``start``, as `.ci/run`'s awk reads it."""
    lines = text.split("\n")
    after = next((i for i, line in enumerate(lines) if re.search(start, line)), None)
    if after is None:
        return ""
    block: list[str] = []
    inside = False
    for line in lines[after:]:
        if not inside and line.startswith("```bash"):
            inside = True
        elif inside and line.startswith("```"):
            break
        elif inside:
            block.append(line)
    return "\n".join(block)


def test_readme_is_at_most_250_lines():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines (at most {MAX_LINES}): move narrative to docs/"


def test_readme_holds_the_main_job_and_test_blocks_ci_reads():
    text = README.read_text(encoding="utf-8")
    main_job, tests = ci_block(text, r"^Main job"), ci_block(text, r"^Tests")
    assert "pip install -e ." in main_job and "mvjax analyze --model smollm2 --out results/smollm2" in main_job
    assert "pip install -e \".[test]\"" in tests and "python -m pytest" in tests


@pytest.mark.skipif(shutil.which("awk") is None, reason="awk is not installed")
def test_ci_run_reads_the_same_blocks():
    """The awk program in `.ci/run` itself extracts the same two blocks from README.md."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    m = re.search(r"awk -v start=\"\$1\" '([^']*)' README\.md", ci)
    assert m, ".ci/run no longer reads README.md with the awk program this test knows"
    text = README.read_text(encoding="utf-8")
    for start in (r"^Main job", r"^Tests"):
        out = subprocess.run(["awk", "-v", f"start={start}", m.group(1), str(README)],
                             capture_output=True, text=True, check=True).stdout
        assert out.strip(), f"`.ci/run` finds no ```bash block after {start!r}"
        assert out.rstrip("\n") == ci_block(text, start)
