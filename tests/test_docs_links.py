"""Every relative link and image in README.md and in each tracked docs/**/*.md resolves to a file
tracked by git (or a folder holding tracked files).

Why: results that exist only on the machine that made them (an ignore rule swallowed them, or they
were never added) read as committed in the README and are missing from every clone. The check needs
git: it is skipped where the tree is not a git checkout (CI's tar copy keeps .git, so it runs there).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def tracked_files() -> set[str]:
    """Paths git tracks in this checkout, relative to its root; skips the test outside a checkout."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot tell which files are tracked")
    top = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--show-toplevel"],
                         capture_output=True, text=True)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != ROOT:
        pytest.skip(f"{ROOT} is not the root of a git checkout: cannot tell which files are tracked")
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True,
                         check=True).stdout
    return set(filter(None, out.split("\0")))


def links(markdown: str) -> list[str]:
    """Link and image targets of ``markdown``, outside code blocks and code spans."""
    text = CODE.sub("", FENCE.sub("", markdown))
    return LINK.findall(text)


def is_relative(target: str) -> bool:
    return not (re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")))


def resolve(doc: str, target: str) -> str:
    """``target`` as a path from the repository root, as a link in ``doc`` (root-relative) points."""
    path = target.split("#", 1)[0].split("?", 1)[0]
    parts: list[str] = []
    for part in (PurePosixPath(doc).parent / path).parts:
        if part == "..":
            if not parts:
                return "../" + path  # outside the repository: never tracked
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def test_link_parser_finds_links_and_images_outside_code():
    """The parser sees what a renderer links (so the test below can fail), not code examples."""
    md = ("[a](docs/x.md) ![b](fig.png \"t\") [c](https://e.org) [d](#sec) `[e](code.md)`\n"
          "```bash\n[f](fenced.md)\n```\n[g](<docs/y.md>)\n")
    assert [t for t in links(md) if is_relative(t)] == ["docs/x.md", "fig.png", "docs/y.md"]
    assert resolve("docs/a/report.md", "figures/p.png#x") == "docs/a/figures/p.png"
    assert resolve("docs/a/report.md", "../b/") == "docs/b"


def test_every_relative_link_in_the_docs_points_to_a_tracked_file():
    """README.md and each tracked docs/**/*.md: every relative link target is tracked by git."""
    tracked = tracked_files()
    folders = {"/".join(f.split("/")[:i]) for f in tracked for i in range(1, f.count("/") + 1)}
    docs = ["README.md"] + sorted(f for f in tracked if f.startswith("docs/") and f.endswith(".md"))
    assert "README.md" in tracked
    broken = []
    for doc in docs:
        for target in links((ROOT / doc).read_text(encoding="utf-8")):
            if not is_relative(target):
                continue
            path = resolve(doc, target)
            if path not in tracked and path.rstrip("/") not in folders:
                broken.append(f"{doc}: {target}")
    assert not broken, "links to files git does not track:\n" + "\n".join(broken)


def test_results_under_docs_are_not_ignored_but_top_level_runs_are():
    """The ignore rules keep the top-level run folders out of git but never a committed result
    folder under docs/ (a bare ``results/`` rule once swallowed docs/*/results/)."""
    tracked_files()  # skips outside a checkout
    paths = ["docs/rope-band/results/band.md", "docs/x/runs/report.md", "results/smollm2/report.md",
             "runs/scale/metrics.jsonl"]
    out = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", *paths],
                         capture_output=True, text=True).stdout.split()
    assert out == ["results/smollm2/report.md", "runs/scale/metrics.jsonl"]
