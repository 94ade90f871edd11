"""What the named experiments share: the frame that runs one (``run_experiment(spec,
experiment)``: load, plan, score through the checkpoint, record, claims, report), the model and
tokenizer, the task set (quick or full), the held-out perplexity rows and the run record (git
SHA). Their flags are typed in ``analysis.experiments.spec``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mvjax.analysis.claims import claims_json
from mvjax.analysis.evaluate import check_fits, fit_to_context
from mvjax.analysis.experiments import helper
from mvjax.analysis.experiments.spec import FULL, PRESETS, Experiment, RunSpec, legacy_vars, plan_flags
from mvjax.analysis.experiments.spec import QUICK as QUICK
from mvjax.analysis.experiments.spec import add_mesh_arg as add_mesh_arg
from mvjax.analysis.experiments.spec import preset_name
from mvjax.analysis.records import ScoredRun
from mvjax.analysis.resume import Checkpoint, fingerprint, resume_dir
from mvjax.atomic import atomic_directory, check_results_dir, read_json_state, require
from mvjax.data.packing import bos_windows
from mvjax.data.sources import load_texts
from mvjax.data.tasks import builtin_tasks, load_task_file
from mvjax.data.tasks.lengths import confound_tasks
from mvjax.load import load_pretrained
from mvjax.mesh import parse_mesh, place_model
from mvjax.model import with_compute_dtype
from mvjax.provenance import provenance
from mvjax.sharding import initialize_distributed

MAX_N = 10_000  # items per generated task: 100x the full preset, already days of scoring per condition
MAX_BATCH = 1024  # prompts per batch: every batch is allocated at this size (padded), so more never fits


def preset(args: RunSpec | argparse.Namespace) -> dict[str, Any]:
    initialize_distributed(getattr(args, "distributed", False))  # before any other jax call
    parse_mesh(getattr(args, "mesh", None))  # a bad --mesh fails before the model loads
    p = dict(PRESETS[preset_name(args)])
    if args.n is not None:
        if args.n < 1:
            raise ValueError(f"--n {args.n} is invalid: use a positive integer")
        if args.n > MAX_N:
            raise ValueError(f"--n {args.n} is too large: use at most {MAX_N} items per generated "
                             f"task (the full preset has {FULL['n']})")
        p["n"] = args.n
    bins = getattr(args, "bins", None)
    if bins is not None:
        if "bins" not in p:
            raise ValueError("--bins is for the length-binned task set: add --preset confounds")
        try:
            p["bins"] = tuple(int(x) for x in bins.split(","))
        except ValueError:
            raise ValueError(f"--bins {bins!r} is invalid: give increasing integers, e.g. 32,128,256") from None
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} is invalid: use a positive integer")
    if args.batch_size > MAX_BATCH:
        raise ValueError(f"--batch-size {args.batch_size} is too large: use at most {MAX_BATCH} "
                         "(every batch is allocated at full size; the default is 8)")
    return p


def load_model_and_tasks(args: RunSpec | argparse.Namespace):
    """(model, tokenizer, tasks, preset) — task files are read first so a bad one fails fast."""
    p = preset(args)
    user = [load_task_file(f) for f in args.tasks]
    names = [t.name for t in user]
    if len(set(names)) != len(names):
        raise ValueError(f"task files share a name ({names}): rename one (tasks are named after files)")
    model, tok = load_pretrained(args.model)
    if tok is None:
        raise ValueError(f"model {args.model} has no tokenizer: save one into the model directory")
    model = with_compute_dtype(model, getattr(args, "dtype", None))
    place_model(model, getattr(args, "mesh", None))
    L = model.cfg.max_seq_len
    for task in user:  # a too-long item is named before any scoring
        check_fits(tok, task, L)
    count = lambda s: len(tok.encode(s))  # noqa: E731
    if "bins" in p:  # the length-matched families (confounds preset)
        tasks = confound_tasks(count, p["n"], args.seed, p["bins"], L)
    else:
        tasks = builtin_tasks(count, p["n"], args.seed, p["passkeys"], L, p["facts_every"])
    clash = set(names) & {t.name for t in tasks}
    if clash:
        raise ValueError(f"task file name(s) {sorted(clash)} clash with built-in tasks: rename the file")
    tasks, left_out = fit_to_context(tok, tasks, user, L)
    if left_out:  # the built-in tasks are fitted to the model's context, and say so
        p["tasks_left_out"] = left_out
        print(f"mvjax experiment: left out built-in task(s) {', '.join(left_out)}: their prompts "
              f"do not fit the model's max_seq_len {L}", file=sys.stderr)
    if not tasks and not user:
        raise ValueError(f"no built-in task fits the model's max_seq_len {L}: pass task files "
                         "with shorter prompts (--tasks)")
    if p["ppl_len"] > L:  # the held-out perplexity rows, too
        print(f"mvjax experiment: perplexity rows shortened from {p['ppl_len']} to the model's "
              f"max_seq_len {L} tokens", file=sys.stderr)
        p["ppl_len"] = L
    return model, tok, tasks + user, p


def ppl_rows(tok, n_rows: int, length: int) -> np.ndarray:
    """Held-out rows: the end of the packaged tinyshakespeare (never among the scored prompts),
    BOS first."""
    text = "\n\n".join(load_texts("tinyshakespeare"))
    rows = bos_windows(tok.encode(text[-200_000:]), length, tok.bos_id, n_rows, from_end=True)
    if len(rows) < n_rows:
        raise ValueError(f"not enough held-out text for {n_rows}×{length} tokens")
    return rows


def run_record(args: RunSpec | argparse.Namespace, model, preset_: dict) -> dict[str, Any]:
    record = provenance(getattr(args, "command_line", None), args.model)
    return {"git_sha": record["git_sha"] or "unknown", "provenance": record,
            "model": {"name": str(args.model), "config": model.cfg.to_dict()},
            "run": {"quick": bool(args.quick), "preset_name": preset_name(args), "preset": {k: list(v) if isinstance(v, tuple) else v
                                                           for k, v in preset_.items()},
                    "task_files": list(args.tasks), "seed": args.seed}}


def run_plan(name: str, spec: RunSpec, model, tasks, rows: np.ndarray) -> dict[str, Any]:
    """Everything that decides a run's numbers, keyed as a user would name it (``--method``,
    ``model config``, ``tasks``): two runs resume each other's pieces exactly when these match.
    The flags are the spec's planned fields (``spec.plan_flags``; parsed arguments become a spec
    with ``RunSpec.from_args``)."""
    plan: dict[str, Any] = {"experiment": name} | plan_flags(spec)
    spelled = Path(str(spec.model))
    plan["--model"] = str(spelled.resolve()) if spelled.exists() else str(spec.model)
    plan["model config"] = model.cfg.to_dict()
    plan["tasks"] = {t.name: fingerprint(t.kind, t.items) for t in tasks}
    plan["held-out rows"] = fingerprint(rows.tolist())
    return plan


def _comparable(record: ScoredRun, config) -> dict[str, Any]:
    """What of a results header (experiment, model, run) and config decides the numbers: task
    files by their names (not path spelling), the config without its batch size."""
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    run = dict(record.run or {})
    if isinstance(run.get("task_files"), list):
        run["task_files"] = [Path(str(f)).stem for f in run["task_files"]]
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != "batch_size"}
    return json.loads(json.dumps({"experiment": record.experiment, "model": record.model,
                                  "run": run, "config": config}, default=repr))


def read_seed(path: str) -> ScoredRun:
    """``--seed-from``'s results.json, checked before the model loads."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--seed-from {path} does not exist: give the results.json of an "
                                "earlier run with these settings")
    results = read_json_state(path, "give --seed-from the results.json an earlier run wrote")
    if not isinstance(results, dict):
        raise ValueError(f"--seed-from {path} is not a results.json (not a JSON object)")
    require(results, "conditions", dict, path)
    return ScoredRun.from_json(results)


def check_seed(path: str, seeded: ScoredRun, header: ScoredRun, config) -> None:
    """Refuse a results file made with other settings, naming the first field that differs
    (a ``--top-k 2`` run's numbers must never stand in for a ``--top-k 1`` run's)."""
    there, here = _comparable(seeded, seeded.config), _comparable(header, config)
    for key in here:
        a, b = there[key], here[key]
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            sub = next(k for k in [*b, *a] if a.get(k) != b.get(k))
            key, a, b = f"{key}.{sub}", a.get(sub), b.get(sub)
        raise ValueError(f"--seed-from {path} was made with other settings: {key} is {a!r} there, "
                         f"{b!r} here; give a results.json of a run with this run's flags")


def write_results(out, run: ScoredRun, claims, notes, write) -> list:
    """Apply ``claims`` and ``notes`` to ``run`` and write results.json, figures and report.md
    as one set into ``out`` (the whole set replaces any earlier one, or nothing does)."""
    checked = claims(run)
    run = run.with_claims(claims_json(checked), None if notes is None else notes(run))
    with atomic_directory(out) as tmp:
        (tmp / "results.json").write_text(json.dumps(run.to_json(), indent=1))
        write(run, tmp)
    return checked


def write_partial(args: RunSpec | argparse.Namespace, claims, write, notes) -> int:
    """``--partial-to DIR``: the results set of the conditions a run at ``--out`` (running or
    killed) has finished so far, with its claims; of a finished run, its results redrawn (claims,
    figures, report) by the code of today. Nothing is scored."""
    where, final = resume_dir(args.out), Path(args.out) / "results.json"
    if (where / "partial.json").is_file():
        run = ScoredRun.from_json(json.loads((where / "header.json").read_text())
                                  | json.loads((where / "partial.json").read_text()))
        run = run.recorded(partial=f"{len(run.conditions)} condition(s) finished when this set was "
                           "written; the run goes on or resumes")
    elif final.is_file():  # a finished run: its numbers, with today's claims, figures and report
        run = ScoredRun.from_json({k: v for k, v in json.loads(final.read_text()).items()
                                   if k not in ("claims", "notes")})
    else:
        raise FileNotFoundError(f"no finished condition of a run at {args.out} ({where} has none): "
                                "start the run first, or wait for its first condition")
    out = check_results_dir(args.partial_to, "results.json")
    write_results(out, run, claims, notes, write)
    print(json.dumps({"out": str(out), "partial": run.partial or "no: a finished run, redrawn"}))
    return 0


def run_experiment(spec: RunSpec, experiment: Experiment) -> int:
    """The shared frame: build ``experiment.config(spec)`` (checked before anything loads), load,
    check its ``top_k`` against the model, ``experiment.compute(model, tok, tasks, config, rows,
    checkpoint=ck) -> dict``, add the run record, apply ``experiment.report(spec)`` (claims,
    notes), write results.json, figures and report.md; print a JSON summary. Finished pieces are
    kept beside ``--out`` until the results are written (``analysis.resume``): the same command
    run again after a kill resumes; ``--seed-from`` starts from an earlier results.json of the
    same settings (the config as results.json holds it)."""
    config = experiment.config(spec)
    report, write = experiment.report(spec), experiment.titled(spec)
    if spec.partial_to:
        return write_partial(spec, report.claims, write, report.notes)
    t0 = time.time()
    out = check_results_dir(spec.out, "results.json")  # before loading anything
    helper.refuse_seeding(spec)
    seed = spec.seed_from
    seeded = None if seed is None else read_seed(seed)
    model, tok, tasks, p = load_model_and_tasks(spec)
    if not 1 <= config.top_k <= model.cfg.head_dim:
        raise ValueError(f"--top-k {config.top_k} is invalid: use 1..head_dim={model.cfg.head_dim}")
    rows = ppl_rows(tok, p["ppl_rows"], p["ppl_len"])
    legacy = fingerprint(spec.experiment, legacy_vars(spec), model.cfg.to_dict(),
                         [(t.name, t.kind, t.items) for t in tasks], rows.tolist())
    names = helper.helper_conditions(spec)
    header = {"experiment": spec.experiment, **run_record(spec, model, p)}
    if seeded is not None:
        check_seed(seed, seeded, ScoredRun.from_json(header), config)
    with Checkpoint(resume_dir(out), run_plan(spec.experiment, spec, model, tasks, rows), names, legacy) as ck:
        if ck.done():
            print(f"resuming: {ck.done()} finished piece(s) in {ck.directory}", flush=True)
        if seeded is not None:
            new = [name for name, c in seeded.conditions.items() if ck.seed(name, c.to_json())]
            print(f"seeded from {seed}: {', '.join(new) or 'nothing (all present)'}", flush=True)
        ck.note("header.json", header)
        run = ScoredRun.from_json(header | experiment.compute(model, tok, tasks, config, rows, checkpoint=ck))
        if jax.process_index() != 0:  # every process scored its rows; process 0 writes
            return 0
        if ck.helper:  # the main run writes the results
            return helper.helper_done(run.conditions, ck.directory, t0)
        run = run.recorded(seconds=round(time.time() - t0, 1))
        checked = write_results(out, run, report.claims, report.notes, write)
        ck.remove()
    print(json.dumps({"out": str(out), "seconds": run.seconds, "claims": [c.sentence() for c in checked]},
                     indent=1))
    return 0


def run_from_args(args: argparse.Namespace, experiment: Experiment) -> int:
    """``mvjax experiment NAME``: the parsed arguments as a spec, run."""
    return run_experiment(RunSpec.from_args(args, experiment), experiment)
