"""What a run of ``mvjax experiment disrupt|quantize`` is, typed: its flags (``RunSpec``, built
once from the parsed arguments) and what an experiment of the shared frame is (``Experiment``: its
flags, config, engine and report). What every entry of ``analysis.experiments.registry`` is, the
shared frame's or not: a ``Command`` (name, help, flags, run).

Every field of the spec declares whether it decides the numbers (``planned``) or not
(``unplanned``, with the reason beside it). The resume plan — two runs share finished pieces
exactly when their plans match (``analysis.resume``) — is derived from these declarations:
``plan_flags`` keys each planned field by its flag (``--top-k``, ``--lambda``), as plan.json
has always keyed them, so resume folders written before the spec still resume.

Why: the plan used to be every argparse attribute less a hand-kept list of excluded names; a new
flag was silently planned (or, added to the list, silently not), and nothing said why.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from mvjax.analysis.claims import Claim
from mvjax.analysis.experiments.helper import add_only_arg
from mvjax.analysis.records import ScoredRun
from mvjax.data.tasks import PASSKEYS

QUICK = {"n": 8, "passkeys": ((128, 5), (256, 5)), "facts_every": 8, "ppl_rows": 1, "ppl_len": 256}
FULL = {"n": 100, "passkeys": PASSKEYS, "facts_every": 1, "ppl_rows": 8, "ppl_len": 512}
# length-matched families in prompt-length bins (mvjax.data.tasks.lengths); n per family and bin
# sized in docs/disrupt-smollm2-confounds/RULES.md (benchmarks/confound_cost.py)
CONFOUNDS = {"n": 40, "bins": (32, 128, 256, 512, 1024), "ppl_rows": 8, "ppl_len": 512}
PRESETS = {"quick": QUICK, "full": FULL, "confounds": CONFOUNDS}

PLANNED = "planned"  # field metadata: True where the field decides the numbers
FLAG = "flag"  # its flag where argparse's dest is spelled otherwise (lam: --lambda)
OMIT_NONE = "omit_none"  # left out of the plan while None (flags added after runs that resume)
HASHED = "hashed_before_plans"  # not planned, but in the key an older mvjax hashed (``legacy_vars``)


def planned(default: Any, *, flag: str | None = None, omit_none: bool = False) -> Any:
    """A field that decides the numbers: in the plan as its flag (``flag``, else ``--dest``)."""
    return dataclasses.field(default=default, metadata={PLANNED: True, FLAG: flag, OMIT_NONE: omit_none})


def unplanned(default: Any, *, hashed_before_plans: bool = False) -> Any:
    """A field that cannot change a number (where or how the run is written, split or shared);
    ``hashed_before_plans``: the resume key of an older mvjax hashed it anyway."""
    return dataclasses.field(default=default, metadata={PLANNED: False, HASHED: hashed_before_plans})


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
    add_only_arg(p)


def add_mesh_arg(p: argparse.ArgumentParser) -> None:
    """``--mesh``, shared by every command that runs the whole model (``mvjax.mesh``)."""
    p.add_argument("--mesh", default=None, metavar="data=N,model=M",
                   help="devices to run on: items split over data, the model's heads and MLP "
                   "columns over model (for a model larger than one device); default one device "
                   "(every device, over data, in a multi-process run). Results equal one "
                   "device's (statistics to float rounding)")


def preset_name(args: Any) -> str:
    """The preset a run asked for (``--preset``, else quick / full by ``--quick``)."""
    name = getattr(args, "preset", None)
    if name is not None and args.quick and name != "quick":
        raise ValueError(f"--quick and --preset {name} disagree: give one of them")
    return name or ("quick" if args.quick else "full")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """The flags of one run, typed (field names are argparse's dests); ``options`` holds the
    experiment's own flags (its ``Experiment.flags`` dataclass)."""

    options: Any
    out: str | None = unplanned(None)  # where the results are written (required on the command line)
    # argparse's subcommand dests: plans have keyed them as flags (--command, --experiment) since
    # plans began, and the experiment decides every number
    command: str = planned("experiment")
    experiment: str | None = planned(None)
    # the plan records the model resolved (a path by its absolute spelling) and its config
    model: str = unplanned("smollm2", hashed_before_plans=True)
    quick: bool = planned(False)
    preset: str | None = planned(None, omit_none=True)  # runs from before --preset resume
    bins: str | None = planned(None, omit_none=True)  # runs from before --bins resume
    # the plan records the task files by their names and contents, not how their paths are spelled
    tasks: tuple[str, ...] = unplanned((), hashed_before_plans=True)
    n: int | None = planned(None)
    seed: int = planned(0)
    batch_size: int = unplanned(8, hashed_before_plans=True)  # rows are scored independently
    mesh: str | None = unplanned(None)  # results equal one device's (statistics to float rounding)
    dtype: str = planned("auto")  # bfloat16 and float32 scores differ
    partial_to: str | None = unplanned(None)  # writes the results so far elsewhere; scores nothing
    seed_from: str | None = unplanned(None)  # its conditions are refused unless of this plan
    distributed: bool = unplanned(False)  # each process scores its rows of every condition
    only: str | None = unplanned(None)  # a helper scores a subset: each condition's numbers are the same
    command_line: str | None = unplanned(None)  # recorded in the results (provenance)

    @classmethod
    def from_args(cls, args: argparse.Namespace, experiment: "Experiment") -> "RunSpec":
        """The spec of parsed arguments (a dest the namespace lacks keeps the field's default)."""
        def given(kind) -> dict[str, Any]:
            values = {f.name: getattr(args, f.name) for f in dataclasses.fields(kind)
                      if f.name != "options" and hasattr(args, f.name)}
            return values | ({"tasks": tuple(values["tasks"])} if "tasks" in values else {})
        return cls(options=experiment.flags(**given(experiment.flags)),
                   **(given(cls) | {"experiment": experiment.name}))

    @property
    def preset_name(self) -> str:
        return preset_name(self)


def _fields(spec: RunSpec) -> list[tuple[dataclasses.Field, Any]]:
    """(field, value) of the spec and its options, sorted by dest (as plans have listed them)."""
    pairs = [(f, getattr(obj, f.name)) for obj in (spec, spec.options) for f in dataclasses.fields(obj)
             if f.name != "options"]
    return sorted(pairs, key=lambda p: p[0].name)


def _kept(f: dataclasses.Field, value: Any) -> bool:
    return not (f.metadata.get(OMIT_NONE) and value is None)


def plan_flags(spec: RunSpec) -> dict[str, Any]:
    """The planned fields, keyed by flag (``--top-k``), sorted by dest."""
    return {f.metadata.get(FLAG) or "--" + f.name.replace("_", "-"): value for f, value in _fields(spec)
            if f.metadata.get(PLANNED) and _kept(f, value)}


def legacy_vars(spec: RunSpec) -> dict[str, Any]:
    """The arguments an older mvjax hashed into a run's resume key, by dest: the planned ones and
    those it hashed though they change no number. Kept to resume a run that older code started."""
    return {f.name: list(value) if isinstance(value, tuple) else value for f, value in _fields(spec)
            if (f.metadata.get(PLANNED) or f.metadata.get(HASHED)) and _kept(f, value)}


C = TypeVar("C")  # an experiment's config (analysis.experiments.disrupt.run.DisruptConfig, ...): it has a top_k


@dataclasses.dataclass(frozen=True)
class Report:
    """What a scored run becomes: ``claims(run)`` (applied ``analysis.claims.Claim``s),
    ``notes(run)`` (sentences) and ``write(run, out, title)`` (figures and report.md)."""

    claims: Callable[[ScoredRun], list["Claim"]]
    write: Callable[[ScoredRun, "Path", str], None]
    notes: Callable[[ScoredRun], list[str]] | None = None


@dataclasses.dataclass(frozen=True)
class Experiment(Generic[C]):
    """One experiment of the shared frame (``analysis.experiments.common.run_experiment``):
    its subcommand (``name``, ``help``), its own flags (``add_flags`` on the parser, ``flags``
    the dataclass they become in ``RunSpec.options``), ``config(spec)`` (checked before the
    model loads), the engine ``compute(model, tok, tasks, config, rows, checkpoint=ck)`` → the
    results dict, and ``report(spec)`` → its claims, notes and files, titled ``title`` (with
    ``{model}``)."""

    name: str
    help: str
    flags: type
    add_flags: Callable[[argparse.ArgumentParser], None]
    config: Callable[[RunSpec], C]
    compute: Callable[..., dict[str, Any]]
    report: Callable[[RunSpec], Report]
    title: str

    def titled(self, spec: RunSpec) -> Callable[[ScoredRun, "Path"], None]:
        """``report(spec).write`` with this run's title."""
        write, title = self.report(spec).write, self.title.format(model=spec.model)
        return lambda run, out: write(run, out, title)


@dataclasses.dataclass(frozen=True)
class Command:
    """One ``mvjax experiment NAME`` subcommand, as ``analysis.experiments.registry`` lists it:
    ``name`` and ``help``, ``add_flags(parser)`` (every flag of the subcommand) and
    ``run(args) -> exit code`` (the parsed arguments in, typed there). The shared frame's
    experiments become one in the registry (``registry.framed``); the others build theirs in
    their package's ``cli``."""

    name: str
    help: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
