"""The training loop: data → sharded jitted step → metrics, evals and checkpoints, with exact resume.

Run directory layout::

    OUT/config.yaml        the ExperimentConfig this run trains
    OUT/metrics.jsonl      one record per log interval, eval, concentration probe, plus a summary
    OUT/checkpoints/<step>/{state,meta}   orbax, newest ``train.keep_checkpoints`` kept
    OUT/model/             the final model as a plain model dir (``mvjax.checkpoint.load_model``)

Faults: a non-finite loss or gradient stops the run (the step is not applied, nothing is saved, the
last good checkpoint stays on disk), and so does a finite loss far above where the run started
(``train.max_loss_factor``); SIGTERM/SIGINT save a checkpoint at the next step boundary and return;
a crash loses at most the steps since the last checkpoint. A resume appends a ``resume`` marker to
``metrics.jsonl``; ``train.metrics.read_metrics`` drops the records it supersedes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from mvjax import sharding as shd
from mvjax.atomic import (LOCK_FILE, append_line, check_own_dir, check_writable, clean_partials,
                          lock_dir, read_json_state, repair_jsonl, write_atomic, write_json)
from mvjax.checkpoint import save_model
from mvjax.data import build_data
from mvjax.memory_budget import check_training_fits
from mvjax.model import init_model
from mvjax.train.checkpointing import CHECKPOINT_DIR, CORRUPT_DIR, Checkpointer, abstract_like, corrupt_steps
from mvjax.train.config import ExperimentConfig
from mvjax.train.metrics import MetricsLog, flops_per_token, last_logged, make_concentration_fn
from mvjax.train.optim import build_optimizer
from mvjax.train.step import make_eval_fn, make_train_step


class TrainingDiverged(FloatingPointError):
    """A step produced a non-finite loss or gradient norm."""


class _StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps (then saves and returns)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay with the caller
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _put_batch(tokens: np.ndarray, sharding: jax.sharding.NamedSharding) -> jax.Array:
    """The global batch as one sharded array; with several processes each feeds its own rows."""
    if jax.process_count() == 1:
        return jax.device_put(tokens, sharding)
    rows = tokens.shape[0] // jax.process_count()
    local = tokens[jax.process_index() * rows:(jax.process_index() + 1) * rows]
    return jax.make_array_from_process_local_data(sharding, local, tokens.shape)


# What a run directory may hold besides checkpoints: a fresh start into a directory holding anything
# else is refused rather than overwriting or appending to someone's files.
RUN_FILES = frozenset({"config.yaml", "metrics.jsonl", "summary.json", "model", CHECKPOINT_DIR,
                       CORRUPT_DIR, LOCK_FILE})


def train(exp: ExperimentConfig, out: str | Path, *, resume: bool = False,
          stop_at: int | None = None, start_over: bool = False,
          probe: Callable[[Any, Any], Callable[[dict, int], dict]] | None = None) -> dict[str, Any]:
    """Train ``exp`` into ``out``; returns the summary. ``stop_at`` ends this invocation after that
    step (checkpointed) without changing the schedule, so a later ``resume`` continues exactly.
    ``start_over`` lets a resume whose checkpoints are all unreadable train again from step 0.
    ``probe(graphdef, tokenizer)`` returns ``f(params, step) -> dict``, logged as ``{"step", "probe"}``
    at every eval step (e.g. held-out retrieval, ``analysis.retrieval_curve``)."""
    if stop_at is not None and (not isinstance(stop_at, int) or stop_at < 1):
        raise ValueError(f"stop_at={stop_at!r} is invalid: give a step >= 1")
    data = build_data(exp.data)  # bad data is reported before anything is created on disk
    if data[2].vocab_size > exp.model.vocab_size:
        raise ValueError(f"model.vocab_size={exp.model.vocab_size} is smaller than the tokenizer's "
                         f"{data[2].vocab_size}: set model.vocab_size >= {data[2].vocab_size}")
    shd.initialize_distributed(exp.train.distributed)  # before any other jax call
    check_training_fits(exp.model)  # a model too large for memory, before anything is created
    out = Path(out).absolute()
    check_writable(out, inside=True)
    saved = out / CHECKPOINT_DIR
    has_steps = lambda: saved.is_dir() and any(p.name.isdigit() for p in saved.iterdir())  # noqa: E731
    if not has_steps():
        check_own_dir(out, RUN_FILES, "a training run")  # before the lock file is made in it
    with lock_dir(out) if jax.process_index() == 0 else contextlib.nullcontext():
        clean_partials(out)  # a final model's work dir left by a kill
        if not has_steps():
            _check_fresh_start(out, resume, start_over)  # before the checkpointer creates its folder
        ckpt = Checkpointer(out, exp.train.keep_checkpoints)
        try:
            if ckpt.steps() and not resume:
                raise FileExistsError(f"{out} already holds checkpoints {ckpt.steps()}: pass --resume "
                                      "to continue that run, or choose another --out")
            run = _set_up(exp, out, ckpt, data, resume, start_over)
            if run.start >= exp.train.steps and (out / "summary.json").is_file():
                print(f"mvjax train: {out} finished at step {run.start}; nothing to do",
                      file=sys.stderr)
                return read_json_state(out / "summary.json", "delete it and rerun with --resume "
                                       "(the checkpoints are kept)")
            return _run(run, stop_at, probe(run.graphdef, run.tokenizer) if probe else None)
        finally:
            ckpt.close()


def _check_fresh_start(out: Path, resume: bool, start_over: bool) -> None:
    """A run with no checkpoint starts from step 0 only into a directory of its own, and says so."""
    check_own_dir(out, RUN_FILES, "a training run")
    lost = corrupt_steps(out)
    if lost and not start_over:
        raise ValueError(f"every checkpoint of {out} is unreadable (steps {lost}, moved to "
                         f"{CORRUPT_DIR}/): pass --start-over to train again from step 0")
    if resume and jax.process_index() == 0:
        print(f"mvjax train: no checkpoint in {out}: starting from step 0", file=sys.stderr)


@dataclasses.dataclass
class _Setup:
    """A run ready to step: its compiled functions, state, data and where it starts."""

    exp: ExperimentConfig
    out: Path
    ckpt: Checkpointer
    stream: Any
    tokenizer: Any
    graphdef: nnx.GraphDef
    state: dict
    schedule: Any
    step_fn: Any
    eval_fn: Any
    conc_fn: Any
    eval_batches: list
    batch_sharding: Any
    start: int


def _set_up(exp: ExperimentConfig, out: Path, ckpt: Checkpointer, data: tuple, resume: bool,
            start_over: bool) -> _Setup:
    tc, mc = exp.train, exp.model
    stream, eval_tokens, tokenizer = data
    mesh = shd.make_mesh(tc.mesh_data, tc.mesh_fsdp)
    shd.check_batch(exp.data.batch_size, mesh)
    model = init_model(mc, tc.seed)
    graphdef, params_state = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params_state)
    del model, params_state
    tx, schedule = build_optimizer(tc.optim, tc.steps, params)
    state_sharding = shd.tree_shardings({"params": params, "opt": jax.eval_shape(tx.init, params)}, mesh)
    batch_sharding = shd.batch_sharding(mesh)
    params = shd.put_global(params, state_sharding["params"])
    state = {"params": params, "opt": jax.jit(tx.init, out_shardings=state_sharding["opt"])(params)}

    start = 0
    if resume and ckpt.steps():
        restored = ckpt.restore_latest(abstract_like(state), mc)
        if restored is None:  # every checkpoint was unreadable and has been moved aside
            _check_fresh_start(out, resume, start_over)
        else:
            start, state, meta = restored
            stream.restore(meta["data_state"])
    if jax.process_index() == 0:
        if start == 0:
            write_atomic(out / "config.yaml", exp.to_yaml())
            (out / "metrics.jsonl").unlink(missing_ok=True)  # records of a run that never saved
        else:  # records after the checkpoint are superseded; read_metrics drops them
            repair_jsonl(out / "metrics.jsonl")  # a line cut by the kill would join the marker
            with (out / "metrics.jsonl").open("a") as f:
                append_line(f, json.dumps({"event": "resume", "step": start}))
    return _Setup(exp, out, ckpt, stream, tokenizer, graphdef, state, schedule,
                  make_train_step(graphdef, mc, tx, tc.grad_accum, tc.loss_chunk, state_sharding,
                                  batch_sharding),
                  make_eval_fn(graphdef, mc, tc.loss_chunk),
                  make_concentration_fn(graphdef) if tc.concentration_every else None,
                  _eval_batches(eval_tokens, exp.data.batch_size, tc.eval_batches, mesh),
                  batch_sharding, start)


class _Throughput:
    """Per-step device metrics gathered between log points and fetched in one transfer, turned into
    one log record (mean loss, tokens/s, MFU) per interval; the first interval includes compiling."""

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak_flops: float,
                 last_loss: float = float("nan")):
        self.tokens_per_step, self.fpt, self.peak = tokens_per_step, flops_per_token, peak_flops
        self.last_loss = last_loss
        self.pending: list[tuple[int, Any]] = []
        self.t_last = time.perf_counter()
        self.first = True
        self.best_tps, self.total_tokens = 0.0, 0

    def add(self, step: int, metrics: Any) -> None:
        self.pending.append((step, metrics))

    def restart_clock(self) -> None:
        """Evals, probes and saves are not training time."""
        self.t_last = time.perf_counter()

    def flush(self) -> tuple[list[tuple[int, dict]], dict | None]:
        """(per-step host metrics, the interval's record) — ([], None) when nothing is pending."""
        if not self.pending:
            return [], None
        steps = [s for s, _ in self.pending]
        fetched = jax.device_get([m for _, m in self.pending])
        tps = len(steps) * self.tokens_per_step / max(time.perf_counter() - self.t_last, 1e-9)
        self.total_tokens += len(steps) * self.tokens_per_step
        if not self.first:
            self.best_tps = max(self.best_tps, tps)
        record = {"step": steps[-1], "loss": float(np.mean([float(m["loss"]) for m in fetched])),
                  "grad_norm": float(fetched[-1]["grad_norm"]), "tokens_per_s": tps,
                  "mfu": self.fpt * tps / self.peak, "includes_compile": self.first}
        self.pending.clear()
        self.t_last, self.first, self.last_loss = time.perf_counter(), False, record["loss"]
        return list(zip(steps, fetched)), record


class _DivergenceGuard:
    """Stops the run at a non-finite step (never applied) or a loss far above where it started."""

    def __init__(self, factor: float, vocab_size: int, ckpt_dir: Path):
        self.factor, self.uniform, self.ckpt_dir = factor, float(np.log(vocab_size)), ckpt_dir
        self.initial: float | None = None

    def check(self, steps: list[tuple[int, dict]], last_saved: int | None, log: MetricsLog) -> None:
        saved = (f"last good checkpoint: step {last_saved} in {self.ckpt_dir}" if last_saved
                 is not None else "no checkpoint was saved")
        for s, m in steps:
            loss, grad_norm = float(m["loss"]), float(m["grad_norm"])
            if self.initial is None and np.isfinite(loss):
                self.initial = loss
            limit = self.factor * max(self.initial or loss, self.uniform)
            if bool(m["ok"]) and (not self.factor or loss <= limit):
                continue
            log.write({"step": s, "event": "diverged", "loss": loss, "grad_norm": grad_norm})
            what = (f"loss={loss} grad_norm={grad_norm} is not finite; stopped without applying it"
                    if not bool(m["ok"]) else
                    f"loss={loss:.4g} exceeds {self.factor:g} × max(first loss {self.initial:.4g}, "
                    f"uniform ln V {self.uniform:.4g}); stopped")
            raise TrainingDiverged(f"step {s}: {what} ({saved}): lower train.optim.lr or raise "
                                   "warmup_steps, then --resume")


def _run(run: _Setup, stop_at: int | None, probe: Callable[[dict, int], dict] | None = None
         ) -> dict[str, Any]:
    """The step loop: train, log, evaluate, probe and checkpoint until the stop step or a signal,
    then save the final model (when the schedule is done) and write the summary."""
    exp, tc = run.exp, run.exp.train
    stop = min(tc.steps, stop_at) if stop_at is not None else tc.steps
    seq_len = exp.data.seq_len
    fpt, peak = flops_per_token(exp.model, seq_len), tc.peak_flops * jax.device_count()
    meter = _Throughput(exp.data.batch_size * seq_len, fpt, peak,
                        last_logged(run.out / "metrics.jsonl", "loss"))
    guard = _DivergenceGuard(tc.max_loss_factor, exp.model.vocab_size, run.ckpt.directory)
    base_key = jax.random.key(tc.seed)
    lead = jax.process_index() == 0  # one process writes the log
    log = MetricsLog(run.out / "metrics.jsonl" if lead else Path(os.devnull), stop, run.start,
                     tc.progress and lead)
    last_saved = run.ckpt.steps()[-1] if run.ckpt.steps() else None
    step, last_eval = run.start, None
    t_start = time.perf_counter()

    def save(step: int) -> int:
        meta = {"step": step, "data_state": run.stream.state(), "config": exp.to_dict(),
                "rng": np.asarray(jax.random.key_data(jax.random.fold_in(base_key, step))).tolist()}
        run.ckpt.save(step, run.state, meta)
        return step

    def flush() -> None:
        steps, record = meter.flush()
        guard.check(steps, last_saved, log)
        if record is not None:
            log.write({**record, "lr": float(run.schedule(record["step"] - 1))})
            log.advance(len(steps), loss=record["loss"], tok_s=record["tokens_per_s"])

    try:
        with _StopRequest() as stop_request:
            while step < stop and stop_request.signal is None:
                batch = _put_batch(run.stream.next_batch(), run.batch_sharding)
                run.state, metrics = run.step_fn(run.state, batch)
                step += 1
                meter.add(step, metrics)
                do_eval, do_conc, do_ckpt = _due(tc, step)
                if step % tc.log_every == 0 or step == stop or do_eval or do_conc or do_ckpt:
                    flush()
                last_eval = _observe(run, step, do_eval, do_conc, log, last_eval, probe)
                if do_ckpt:
                    last_saved = save(step)
                if do_eval or do_conc or do_ckpt:
                    meter.restart_clock()
            flush()
            if last_saved != step:
                last_saved = save(step)
            interrupted = stop_request.signal
    finally:
        log.close()

    return _finish(run, {
        "event": "summary", "step": step, "final_loss": meter.last_loss, "eval_loss": last_eval,
        "tokens_per_s": meter.best_tps, "mfu": fpt * meter.best_tps / peak,
        "wall_s": time.perf_counter() - t_start, "tokens": meter.total_tokens,
        "interrupted_by_signal": interrupted, "checkpoint_step": last_saved})


def _due(tc, step: int) -> tuple[bool, bool, bool]:
    """(evaluate, log the concentration probe, checkpoint) at ``step``, by the every-N settings."""
    return (bool(tc.eval_every) and (step % tc.eval_every == 0 or step == tc.steps),
            bool(tc.concentration_every) and step % tc.concentration_every == 0,
            bool(tc.checkpoint_every) and step % tc.checkpoint_every == 0)


def _observe(run: _Setup, step: int, do_eval: bool, do_conc: bool, log: MetricsLog,
             last_eval: float | None, probe: Callable[[dict, int], dict] | None = None) -> float | None:
    """Evaluate (and run the caller's ``probe``) and/or log the concentration probe at ``step``;
    returns the latest eval loss."""
    if do_eval and run.eval_batches:
        last_eval = _evaluate(run.eval_fn, run.state["params"], run.eval_batches)
        log.write({"step": step, "eval_loss": last_eval})
    if do_eval and probe is not None:
        log.write({"step": step, "probe": probe(run.state["params"], step)})
    if do_conc and run.eval_batches:
        conc = run.conc_fn(run.state["params"], run.eval_batches[0][:, :-1])
        log.write({"step": step, **jax.device_get(conc)})
    return last_eval


def _finish(run: _Setup, summary: dict[str, Any]) -> dict[str, Any]:
    """Save the final model when the schedule ran to its end without a signal, then append the
    summary to metrics.jsonl and write summary.json."""
    if summary["step"] >= run.exp.train.steps and summary["interrupted_by_signal"] is None:
        params = shd.fetch_global(run.state["params"])  # every process joins the gather
        if jax.process_index() == 0:
            save_model(run.out / "model", nnx.merge(run.graphdef, params), run.tokenizer)
        summary["model_dir"] = str(run.out / "model")
    if jax.process_index() == 0:
        with (run.out / "metrics.jsonl").open("a") as f:
            append_line(f, json.dumps(summary))
        write_json(run.out / "summary.json", summary, indent=2)
    return summary


def _eval_batches(eval_tokens: np.ndarray, batch_size: int, max_batches: int,
                  mesh: jax.sharding.Mesh) -> list[jax.Array]:
    rows = np.asarray(eval_tokens)
    if rows.ndim != 2 or rows.shape[0] == 0:
        return []
    bs = batch_size if rows.shape[0] >= batch_size else rows.shape[0]
    n = min(max_batches, rows.shape[0] // bs)
    sharding = (shd.batch_sharding(mesh) if bs % mesh.size == 0
                else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    return [shd.put_global(rows[i * bs:(i + 1) * bs], sharding) for i in range(n)]


def _evaluate(eval_fn: Any, params: dict, batches: list[jax.Array]) -> float:
    totals = [eval_fn(params, b) for b in batches]
    total = sum(float(t) for t, _ in totals)
    count = sum(float(c) for _, c in totals)
    return total / count
