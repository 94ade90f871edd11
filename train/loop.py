"""The training loop: data → sharded jitted step → metrics, evals and checkpoints, with exact resume.

Run directory layout::

    OUT/config.yaml        the ExperimentConfig this run trains
    OUT/metrics.jsonl      one record per log interval, eval, concentration probe, plus a summary
    OUT/checkpoints/<step>/{state,meta}   orbax, newest ``train.keep_checkpoints`` kept
    OUT/model/             the final model as a plain model dir (``mvjax.checkpoint.load_model``)

Faults: a non-finite loss or gradient stops the run (the step is not applied, nothing is saved, the
last good checkpoint stays on disk); SIGTERM/SIGINT save a checkpoint at the next step boundary and
return; a crash loses at most the steps since the last checkpoint.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from mvjax import sharding as shd
from mvjax.checkpoint import save_model
from mvjax.model import init_model
from train.checkpointing import Checkpointer, abstract_like
from train.config import ExperimentConfig
from train.metrics import MetricsLog, flops_per_token, make_concentration_fn
from train.optim import build_optimizer
from train.step import make_eval_fn, make_train_step


class TrainingDiverged(FloatingPointError):
    """A step produced a non-finite loss or gradient norm."""


def check_out_dir(out: Path) -> None:
    """Fail early, in one line, when the output directory cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"cannot write to output directory {out} ({e.strerror}): choose a "
                              "writable --out") from None


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


def train(exp: ExperimentConfig, out: str | Path, *, resume: bool = False,
          stop_at: int | None = None) -> dict[str, Any]:
    """Train ``exp`` into ``out``; returns the summary. ``stop_at`` ends this invocation after that
    step (checkpointed) without changing the schedule, so a later ``resume`` continues exactly."""
    from mvjax.data import build_data

    tc = exp.train
    out = Path(out).absolute()
    check_out_dir(out)
    shd.initialize_distributed(tc.distributed)
    ckpt = Checkpointer(out, tc.keep_checkpoints)
    try:
        if ckpt.steps() and not resume:
            raise FileExistsError(f"{out} already holds checkpoints {ckpt.steps()}: pass --resume to "
                                  "continue that run, or choose another --out")
        return _train(exp, out, ckpt, resume, stop_at, build_data)
    finally:
        ckpt.close()


def _train(exp: ExperimentConfig, out: Path, ckpt: Checkpointer, resume: bool,
           stop_at: int | None, build_data: Any) -> dict[str, Any]:
    tc, mc = exp.train, exp.model
    stream, eval_tokens, tokenizer = build_data(exp.data)
    if tokenizer.vocab_size > mc.vocab_size:
        raise ValueError(f"model.vocab_size={mc.vocab_size} is smaller than the tokenizer's "
                         f"{tokenizer.vocab_size}: set model.vocab_size >= {tokenizer.vocab_size}")
    mesh = shd.make_mesh(tc.mesh_data, tc.mesh_fsdp)
    shd.check_batch(exp.data.batch_size, mesh)

    model = init_model(mc, tc.seed)
    graphdef, params_state = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params_state)
    del model, params_state
    tx, schedule = build_optimizer(tc.optim, tc.steps, params)
    state_sharding = shd.tree_shardings({"params": params, "opt": jax.eval_shape(tx.init, params)}, mesh)
    batch_sharding = shd.batch_sharding(mesh)
    params = jax.device_put(params, state_sharding["params"])
    state = {"params": params, "opt": jax.jit(tx.init, out_shardings=state_sharding["opt"])(params)}

    start = 0
    if resume:
        restored = ckpt.restore_latest(abstract_like(state), mc)
        if restored is not None:
            start, state, meta = restored
            stream.restore(meta["data_state"])
    if start == 0 and jax.process_index() == 0:
        (out / "config.yaml").write_text(exp.to_yaml())

    step_fn = make_train_step(graphdef, mc, tx, tc.grad_accum, tc.loss_chunk, state_sharding,
                              batch_sharding)
    eval_fn = make_eval_fn(graphdef, mc, tc.loss_chunk)
    conc_fn = make_concentration_fn(graphdef) if tc.concentration_every else None
    eval_batches = _eval_batches(eval_tokens, exp.data.batch_size, tc.eval_batches, mesh)

    seq_len = exp.data.seq_len
    tokens_per_step = exp.data.batch_size * seq_len
    fpt = flops_per_token(mc, seq_len)
    peak = tc.peak_flops * jax.device_count()
    stop = min(tc.steps, stop_at) if stop_at is not None else tc.steps
    base_key = jax.random.key(tc.seed)

    def save(step: int) -> None:
        meta = {"step": step, "data_state": stream.state(), "config": exp.to_dict(),
                "rng": np.asarray(jax.random.key_data(jax.random.fold_in(base_key, step))).tolist()}
        ckpt.save(step, state, meta)

    log = MetricsLog(out / "metrics.jsonl", stop, start, tc.progress and jax.process_index() == 0)
    pending: list[tuple[int, dict]] = []
    last_saved = ckpt.steps()[-1] if ckpt.steps() else None
    step, t_last, first_interval = start, time.perf_counter(), True
    last_loss, last_eval, best_tps = float("nan"), None, 0.0
    total_tokens, t_start = 0, time.perf_counter()

    def flush() -> None:
        nonlocal t_last, first_interval, last_loss, best_tps, total_tokens
        if not pending:
            return
        fetched = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, fetched):
            if not bool(m["ok"]):
                log.write({"step": s, "event": "diverged", "loss": float(m["loss"]),
                           "grad_norm": float(m["grad_norm"])})
                raise TrainingDiverged(
                    f"step {s}: loss={float(m['loss'])} grad_norm={float(m['grad_norm'])} is not finite;"
                    f" stopped without applying it (last good checkpoint: step {last_saved} in "
                    f"{ckpt.directory}): lower train.optim.lr or raise warmup_steps, then --resume")
        now = time.perf_counter()
        n = len(pending)
        tps = n * tokens_per_step / max(now - t_last, 1e-9)
        total_tokens += n * tokens_per_step
        last_loss = float(np.mean([float(m["loss"]) for m in fetched]))
        rec = {"step": pending[-1][0], "loss": last_loss,
               "grad_norm": float(fetched[-1]["grad_norm"]),
               "lr": float(schedule(pending[-1][0] - 1)), "tokens_per_s": tps,
               "mfu": fpt * tps / peak, "includes_compile": first_interval}
        if not first_interval:
            best_tps = max(best_tps, tps)
        log.write(rec)
        log.advance(n, loss=last_loss, tok_s=tps)
        pending.clear()
        t_last, first_interval = time.perf_counter(), False

    try:
        with _StopRequest() as stop_request:
            while step < stop and stop_request.signal is None:
                batch = _put_batch(stream.next_batch(), batch_sharding)
                state, metrics = step_fn(state, batch)
                step += 1
                pending.append((step, metrics))
                do_eval = bool(tc.eval_every) and (step % tc.eval_every == 0 or step == tc.steps)
                do_conc = bool(tc.concentration_every) and step % tc.concentration_every == 0
                do_ckpt = bool(tc.checkpoint_every) and step % tc.checkpoint_every == 0
                if step % tc.log_every == 0 or step == stop or do_eval or do_conc or do_ckpt:
                    flush()
                if do_eval and eval_batches:
                    last_eval = _evaluate(eval_fn, state["params"], eval_batches)
                    log.write({"step": step, "eval_loss": last_eval})
                if do_conc and eval_batches:
                    conc = conc_fn(state["params"], eval_batches[0][:, :-1])
                    log.write({"step": step, **jax.device_get(conc)})
                if do_ckpt:
                    save(step)
                    last_saved = step
                t_last = time.perf_counter() if (do_eval or do_conc or do_ckpt) else t_last
            flush()
            if last_saved != step:
                save(step)
                last_saved = step
            interrupted = stop_request.signal
    finally:
        log.close()

    wall = time.perf_counter() - t_start
    summary = {"event": "summary", "step": step, "final_loss": last_loss, "eval_loss": last_eval,
               "tokens_per_s": best_tps, "mfu": fpt * best_tps / peak, "wall_s": wall,
               "tokens": total_tokens, "interrupted_by_signal": interrupted,
               "checkpoint_step": last_saved}
    if step >= tc.steps and interrupted is None:
        model = nnx.merge(graphdef, jax.device_get(state["params"]))
        save_model(out / "model", model, tokenizer)
        summary["model_dir"] = str(out / "model")
    if jax.process_index() == 0:
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(summary) + "\n")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
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
    return [jax.device_put(rows[i * bs:(i + 1) * bs], sharding) for i in range(n)]


def _evaluate(eval_fn: Any, params: dict, batches: list[jax.Array]) -> float:
    totals = [eval_fn(params, b) for b in batches]
    total = sum(float(t) for t, _ in totals)
    count = sum(float(c) for _, c in totals)
    return total / count
