"""One installed import name: ``mvjax``. The top-level ``train/`` and ``analysis/`` folders are
importable only as ``mvjax.train`` and ``mvjax.analysis`` (symlinks inside ``mvjax/``), so
installing mvjax never shadows a user's own ``analysis`` or ``train`` package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OLD_IMPORT = re.compile(r"^\s*(from|import)\s+(analysis|train)(\s|\.)", re.M)


def test_no_module_imports_the_old_top_level_names():
    files = [REPO / f for f in subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True,
                                              text=True).stdout.split()] or list(REPO.rglob("*.py"))
    bad = [str(f.relative_to(REPO)) for f in files if f.is_file() and OLD_IMPORT.search(f.read_text())]
    assert not bad, f"import mvjax.analysis / mvjax.train instead of the old top-level names in {bad}"


def test_only_mvjax_is_importable_outside_the_checkout(tmp_path):
    """From another folder (as a user's script runs), the installed package exposes mvjax alone."""
    code = ("import importlib.util as u, mvjax.analysis.experiments.common, mvjax.train.loop; "
            "print(u.find_spec('analysis') is None, u.find_spec('train') is None)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True"]


def test_the_package_finder_includes_mvjax_only():
    text = (REPO / "pyproject.toml").read_text()
    assert re.search(r'include = \["mvjax\*"\]', text)
    for name in ("analysis", "train"):
        link = REPO / "mvjax" / name
        assert link.is_symlink() and link.resolve() == (REPO / name).resolve()
