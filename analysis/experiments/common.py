"""What the named experiments share: the model and tokenizer, the task set (quick or full), the
held-out perplexity rows, the run record (git SHA), and the CLI arguments for all of them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mvjax.analysis.claims import claims_json
from mvjax.analysis.records import ScoredRun
from mvjax.analysis.resume import Checkpoint, fingerprint, resume_dir
from mvjax.atomic import atomic_directory, check_results_dir, read_json_state, require
from mvjax.data.tasks import PASSKEYS

QUICK = {"n": 8, "passkeys": ((128, 5), (256, 5)), "facts_every": 8, "ppl_rows": 1, "ppl_len": 256}
FULL = {"n": 100, "passkeys": PASSKEYS, "facts_every": 1, "ppl_rows": 8, "ppl_len": 512}
MAX_N = 10_000  # items per generated task: 100x the full preset, already days of scoring per condition
MAX_BATCH = 1024  # prompts per batch: every batch is allocated at this size (padded), so more never fits
# length-matched families in prompt-length bins (mvjax.data.tasks.lengths); n per family and bin
# sized in docs/disrupt-smollm2-confounds/RULES.md (benchmarks/confound_cost.py)
CONFOUNDS = {"n": 40, "bins": (32, 128, 256, 512, 1024), "ppl_rows": 8, "ppl_len": 512}
PRESETS = {"quick": QUICK, "full": FULL, "confounds": CONFOUNDS}


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2",
                   help="model name known to mvjax.load (e.g. smollm2), mvjax / HF model dir or .gguf")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quick", action="store_true",
                   help=f"small task set ({QUICK['n']} items per generated task, passkey up to "
                   f"{max(L for L, _ in QUICK['passkeys'])} tokens, every {QUICK['facts_every']}th "
                   "parametric item); task files run whole. In either preset, built-in tasks that the "
                   "model's context cannot hold are left out and named")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="task set: quick (= --quick), full (default) or confounds (facts, world, "
                   "arithmetic, key→value recall and passkey in prompt-length bins ≤32/128/256/512/"
                   "1,024 tokens, passkey key depth recorded; disrupt scores every main condition "
                   "with position 0 edited and kept, 10 random-control seeds)")
    p.add_argument("--bins", default=None, metavar="EDGES",
                   help="confounds preset: comma-separated prompt-length bin edges in tokens "
                   "(default 32,128,256,512,1024; a tokenizer with longer questions needs a larger "
                   "first edge)")
    p.add_argument("--tasks", action="append", default=[], metavar="FILE",
                   help="extra JSONL task file (repeatable; named after the file)")
    p.add_argument("--n", type=int, default=None, help="items per generated task (overrides the preset)")
    p.add_argument("--seed", type=int, default=0, help="seed of the task generators")
    p.add_argument("--batch-size", type=int, default=8)
    add_mesh_arg(p)
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="compute dtype: auto = bfloat16 on an accelerator, float32 on CPU; "
                   "statistics are accumulated in float32 either way")
    p.add_argument("--partial-to", default=None, metavar="DIR",
                   help="write the results set of the conditions the run at --out has finished so "
                   "far (it may still be running) into DIR, and exit; for a finished run, redraw its "
                   "claims, figures and report from its results.json into DIR")
    p.add_argument("--seed-from", default=None, metavar="RESULTS",
                   help="start from the conditions of an earlier run's results.json (e.g. a committed "
                   "one, on a new machine): each is saved as a finished piece and not scored again; "
                   "refused unless its experiment, model, run and config are this run's (the "
                   "unmodified pass is recomputed: compare its tasks and dims with the file's)")
    p.add_argument("--distributed", action="store_true",
                   help="join a multi-process run through jax.distributed (run the same command in "
                   "every process, with JAX_COORDINATOR_ADDRESS=host:port of process 0, "
                   "JAX_NUM_PROCESSES and JAX_PROCESS_ID set, or on a TPU/SLURM cluster); each "
                   "process scores its rows of every condition, process 0 writes the results")
    p.add_argument("--only", default=None, metavar="NAMES",
                   help="a helper on a second core: with the arguments of a run under way at --out, "
                   "score just these comma-separated conditions into its resume directory and exit "
                   "(the run finds them finished); a condition another process is scoring is left to it")


def add_mesh_arg(p: argparse.ArgumentParser) -> None:
    """``--mesh``, shared by every command that runs the whole model (``mvjax.mesh``)."""
    p.add_argument("--mesh", default=None, metavar="data=N,model=M",
                   help="devices to run on: items split over data, the model's heads and MLP "
                   "columns over model (for a model larger than one device); default one device "
                   "(every device, over data, in a multi-process run). Results equal one "
                   "device's (statistics to float rounding)")


def preset_name(args: argparse.Namespace) -> str:
    """The preset a run asked for (``--preset``, else quick / full by ``--quick``)."""
    name = getattr(args, "preset", None)
    if name is not None and args.quick and name != "quick":
        raise ValueError(f"--quick and --preset {name} disagree: give one of them")
    return name or ("quick" if args.quick else "full")


def preset(args: argparse.Namespace) -> dict[str, Any]:
    from mvjax.mesh import parse_mesh
    from mvjax.sharding import initialize_distributed

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


def load_model_and_tasks(args: argparse.Namespace):
    """(model, tokenizer, tasks, preset) — task files are read first so a bad one fails fast."""
    from mvjax.data.tasks import builtin_tasks, load_task_file

    p = preset(args)
    user = [load_task_file(f) for f in args.tasks]
    names = [t.name for t in user]
    if len(set(names)) != len(names):
        raise ValueError(f"task files share a name ({names}): rename one (tasks are named after files)")
    from mvjax.load import load_pretrained

    model, tok = load_pretrained(args.model)
    if tok is None:
        raise ValueError(f"model {args.model} has no tokenizer: save one into the model directory")
    from mvjax.mesh import place_model, with_compute_dtype

    model = with_compute_dtype(model, getattr(args, "dtype", None))
    place_model(model, getattr(args, "mesh", None))
    from mvjax.analysis.evaluate import check_fits, fit_to_context

    L = model.cfg.max_seq_len
    for task in user:  # a too-long item is named before any scoring
        check_fits(tok, task, L)
    count = lambda s: len(tok.encode(s))  # noqa: E731
    if "bins" in p:  # the length-matched families (confounds preset)
        from mvjax.data.tasks.lengths import confound_tasks

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
    from mvjax.data.packing import bos_windows
    from mvjax.data.sources import load_texts

    text = "\n\n".join(load_texts("tinyshakespeare"))
    rows = bos_windows(tok.encode(text[-200_000:]), length, tok.bos_id, n_rows, from_end=True)
    if len(rows) < n_rows:
        raise ValueError(f"not enough held-out text for {n_rows}×{length} tokens")
    return rows


def run_record(args: argparse.Namespace, model, preset_: dict) -> dict[str, Any]:
    from mvjax.provenance import provenance

    record = provenance(getattr(args, "command_line", None), args.model)
    return {"git_sha": record["git_sha"] or "unknown", "provenance": record,
            "model": {"name": str(args.model), "config": model.cfg.to_dict()},
            "run": {"quick": bool(args.quick), "preset_name": preset_name(args), "preset": {k: list(v) if isinstance(v, tuple) else v
                                                           for k, v in preset_.items()},
                    "task_files": list(args.tasks), "seed": args.seed}}


def vars_of(args: argparse.Namespace) -> dict:
    """The arguments an older mvjax hashed into a run's resume key (not where it is written, how
    it is called or which of its conditions are scored: each condition's numbers are the same in
    any subset). Kept to resume a run that older code started."""
    return {k: v for k, v in vars(args).items()
            if k not in ("out", "func", "command_line", "partial_to", "conditions", "only", "seed_from",
                         "mesh", "distributed")
            and not callable(v) and not (k in ("preset", "bins") and v is None)}  # runs before --preset resume


# flags that cannot change a number: where and how a run is written or shared, the batch size
# (rows are scored independently), the task files' paths (their names and contents are planned)
NOT_PLANNED = ("batch_size", "tasks", "model", "seed_from")
FLAGS = {"lam": "--lambda"}  # argparse dests spelled otherwise on the command line


def run_plan(name: str, args: argparse.Namespace, model, tasks, rows: np.ndarray) -> dict[str, Any]:
    """Everything that decides a run's numbers, keyed as a user would name it (``--method``,
    ``model config``, ``tasks``): two runs resume each other's pieces exactly when these match."""
    plan: dict[str, Any] = {"experiment": name}
    plan |= {FLAGS.get(k, "--" + k.replace("_", "-")): v for k, v in sorted(vars_of(args).items())
             if k not in NOT_PLANNED}
    spelled = Path(str(args.model))
    plan["--model"] = str(spelled.resolve()) if spelled.exists() else str(args.model)
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


def write_partial(args: argparse.Namespace, claims, write, notes) -> int:
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


def run_experiment(args: argparse.Namespace, name: str, top_k: int, compute, claims, write,
                   notes=None, config=None) -> int:
    """The shared frame: load, check ``top_k`` against the model, ``compute(model, tok, tasks,
    ppl_rows, checkpoint) -> dict``, add the run record, ``claims(result)`` (a list of applied
    ``analysis.claims.Claim``) and ``notes(result)`` (sentences), write results.json, then
    ``write(result, out)`` (figures and report.md); print a JSON summary. Finished pieces are
    kept beside ``--out`` until the results are written (``analysis.resume``): the same command
    run again after a kill resumes; ``--seed-from`` starts from an earlier results.json of the
    same settings (``config``: the experiment's config dataclass, as results.json holds it)."""
    if getattr(args, "partial_to", None):
        return write_partial(args, claims, write, notes)
    t0 = time.time()
    out = check_results_dir(args.out, "results.json")  # before loading anything
    seed = getattr(args, "seed_from", None)
    if seed is not None and getattr(args, "only", None) is not None:
        raise ValueError("--seed-from seeds the main run: drop --only (a helper finds the seeded "
                         "conditions finished)")
    seeded = None if seed is None else read_seed(seed)
    model, tok, tasks, p = load_model_and_tasks(args)
    if not 1 <= top_k <= model.cfg.head_dim:
        raise ValueError(f"--top-k {top_k} is invalid: use 1..head_dim={model.cfg.head_dim}")
    rows = ppl_rows(tok, p["ppl_rows"], p["ppl_len"])
    legacy = fingerprint(name, vars_of(args), model.cfg.to_dict(), [(t.name, t.kind, t.items) for t in tasks],
                         rows.tolist())
    only = getattr(args, "only", None)
    if only is not None and not only.strip(","):
        raise ValueError("--only is empty: name the conditions this helper scores, e.g. --only q_only,k_only")
    names = None if only is None else [s.strip() for s in only.split(",") if s.strip()]
    header = {"experiment": name, **run_record(args, model, p)}
    if seeded is not None:
        check_seed(seed, seeded, ScoredRun.from_json(header), config)
    with Checkpoint(resume_dir(out), run_plan(name, args, model, tasks, rows), names, legacy) as ck:
        if ck.done():
            print(f"resuming: {ck.done()} finished piece(s) in {ck.directory}", flush=True)
        if seeded is not None:
            new = [name for name, c in seeded.conditions.items() if ck.seed(name, c.to_json())]
            print(f"seeded from {seed}: {', '.join(new) or 'nothing (all present)'}", flush=True)
        ck.note("header.json", header)
        run = ScoredRun.from_json(header | compute(model, tok, tasks, rows, ck))
        import jax  # here, not at the top: the CLI builds its parsers from this module without jax

        if jax.process_index() != 0:  # every process scored its rows; process 0 writes
            return 0
        if ck.helper:  # the main run writes the results
            print(json.dumps({"scored": sorted(run.conditions), "into": str(ck.directory),
                              "seconds": round(time.time() - t0, 1)}))
            return 0
        run = run.recorded(seconds=round(time.time() - t0, 1))
        checked = write_results(out, run, claims, notes, write)
        ck.remove()
    print(json.dumps({"out": str(out), "seconds": run.seconds, "claims": [c.sentence() for c in checked]},
                     indent=1))
    return 0
