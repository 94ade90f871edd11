"""``mvjax experiment band RUN_DIR... --out DIR``: its flags, reading the runs (training
directories or a band.json written earlier), writing band.json, band.png and band.md; ``BAND`` is
its registry entry."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from mvjax.analysis.experiments.band.claims import slope_law, verdict
from mvjax.analysis.experiments.band.report import draw, reference_rows, table
from mvjax.analysis.experiments.band.results import BAND_JSON_FIX, Band, band_from_dict
from mvjax.analysis.experiments.band.run import reference_band, run_band
from mvjax.analysis.experiments.spec import Command
from mvjax.atomic import atomic_directory, check_results_dir, read_json_state


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="`mvjax train` directories (RoPE, "
                   "concentration logged), or a band.json written earlier (its bands kept as recorded)")
    p.add_argument("--reference", action="append", default=[], metavar="MODEL[:CONTEXT]",
                   help="a pretrained model measured the same way (e.g. smollm2:2048); repeatable")
    p.add_argument("--out", required=True, help="where band.json, band.png and band.md go")


def _read_band_json(src: str) -> tuple[list[Band], list[Band]]:
    saved = read_json_state(src, "write it again with `mvjax experiment band RUN_DIR... --out DIR`")
    if not isinstance(saved, dict) or "runs" not in saved:
        raise ValueError(f"{src} is not a band.json (no 'runs'): pass one written by "
                         "`mvjax experiment band`, or a training run directory")
    out = []
    for key in ("runs", "references"):
        records = saved.get(key, [])
        if not isinstance(records, list):
            raise ValueError(f"{src}: {key!r} is a {type(records).__name__}, not a list of band "
                             f"records: {BAND_JSON_FIX}")
        out.append([band_from_dict(b, f"{src} {key}[{i}]") for i, b in enumerate(records)])
    return out[0], out[1]


def _load(sources: Sequence[str]) -> tuple[list[Band], list[Band]]:
    """The runs (and earlier references) of ``sources``; a run given twice (the same directory,
    or one a band.json already holds) is refused, since it would be listed and compared twice."""
    runs, refs, origin = [], [], {}
    for src in sources:
        if Path(src).is_file() and src.endswith(".json"):
            got, saved_refs = _read_band_json(src)
            refs += saved_refs
        else:
            got = [run_band(src)]
        for b in got:
            if b.name in origin:
                raise ValueError(f"run {b.name!r} is given twice ({origin[b.name]} and {src}): give "
                                 "each run once (band tells runs apart by their directory name)")
            origin[b.name] = src
        runs += got
    return runs, refs


def run_from_args(args: argparse.Namespace) -> int:
    check_results_dir(args.out, "band.json")
    runs, refs = _load(args.runs)
    for spec in args.reference:
        name, _, ctx = spec.partition(":")
        refs = [r for r in refs if r.name != name] + [reference_band(name, int(ctx) if ctx else None)]
    first, slope = verdict(runs), slope_law(runs)
    command = "mvjax experiment band " + " ".join(args.runs) + "".join(
        f" --reference {r}" for r in args.reference) + f" --out {args.out}"
    with atomic_directory(args.out) as tmp:  # a band.json read above may live in --out
        (tmp / "band.json").write_text(json.dumps(
            {"command": command, **first.to_json(), "slope": slope.to_json(), "runs": [asdict(b) for b in runs],
             "references": [asdict(b) for b in refs],
             "reference_rows": [row for b in refs for row in reference_rows(b)]}, indent=1))
        draw(runs, refs, tmp / "band.png", slope)
        text = table(runs, refs, first, slope)
        (tmp / "band.md").write_text(text)
    print(text)
    return 0


BAND = Command(
    name="band",
    help="where the strongest K dims sit (RoPE wavelength) against the training context, across a "
    "context × θ sweep; the fixed band-vs-context rule",
    add_flags=add_flags, run=run_from_args)
