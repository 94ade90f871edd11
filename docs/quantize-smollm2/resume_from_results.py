"""Continue a full run on a new machine from the conditions a committed results.json already holds.

A run's pieces (``analysis.resume``) live beside its output and are lost with the machine; the
committed results.json keeps every finished condition. Start the run with the same arguments, wait
until its resume directory holds ``fingerprint`` (seconds), then

    python docs/quantize-smollm2/resume_from_results.py RUNS/.quantize-full.resume \\
        docs/quantize-smollm2/full/results.json

saves each committed condition as a finished piece; the run (and any ``--only`` helper) then scores
only the rest. The unmodified pass is recomputed, not taken from the file (its per-prompt statistics
are not in results.json): compare its ``tasks`` and ``dims`` with the committed ones to check that
the new machine reproduces the old one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from analysis.resume import Checkpoint


def seed(resume_dir: str | Path, results_json: str | Path) -> list[str]:
    """Save every condition of ``results_json`` as a piece of the run under way in ``resume_dir``;
    the names newly saved."""
    stamp = Path(resume_dir) / "fingerprint"
    if not stamp.is_file():
        raise SystemExit(f"{resume_dir} holds no run: start the run first, then seed it")
    results = json.loads(Path(results_json).read_text())
    header = json.loads((Path(resume_dir) / "header.json").read_text())
    differ = [k for k in ("experiment", "model", "run") if results.get(k) != header.get(k)]
    if differ:  # another preset's or model's conditions would be silently wrong here
        raise SystemExit(f"{results_json} is not from the run in {resume_dir} (differing: {', '.join(differ)}): "
                         "start the run with the arguments that made that results.json")
    ck = Checkpoint(resume_dir, stamp.read_text())
    saved = []
    for name, condition in results["conditions"].items():
        ck.get(name, lambda c=condition: saved.append(name) or c)
    return saved


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print("seeded:", ", ".join(seed(sys.argv[1], sys.argv[2])) or "nothing (all present)")
