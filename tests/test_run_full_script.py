"""``docs/disrupt-smollm2/run_full.sh`` starts the quantize helper once the main run has its first
piece; a main run that exits before that (a bad flag, a refused --out) must end the wait, not
leave the script polling forever."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "disrupt-smollm2" / "run_full.sh"


def _first_piece() -> str:
    """The script's ``first_piece`` function alone (sourcing the script would start the runs)."""
    text = SCRIPT.read_text()
    found = re.search(r"^first_piece\(\) \{(?:[^\n]*\}$|.*?^\})", text, re.M | re.S)
    assert found, "run_full.sh has no first_piece function"
    return found.group(0)


def _wait(tmp_path: Path, main: str) -> subprocess.CompletedProcess:
    script = (f"{_first_piece()}\nRUNS={tmp_path}; POLL_S=0.1\n{main} > /dev/null 2>&1 & pid=$!\n"
              "first_piece quantize-full $pid; echo \"rc=$?\"; kill $pid 2> /dev/null")
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=20)


def test_the_wait_ends_when_the_main_run_exits_before_its_first_piece(tmp_path):
    done = _wait(tmp_path, "sleep 0.3")  # the main run: gone, no piece
    assert "rc=1" in done.stdout and "quantize-full" in done.stdout + done.stderr


def test_the_wait_ends_at_the_first_piece(tmp_path):
    pieces = tmp_path / ".quantize-full.resume"
    done = _wait(tmp_path, f"(sleep 0.3; mkdir -p {pieces}; touch {pieces}/a.pkl; sleep 30)")
    assert "rc=0" in done.stdout


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
