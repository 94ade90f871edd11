"""Training: exact resume, crash during save, sharded vs single-device losses, loss falls on real
text for every tiny config, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from mvjax.checkpoint import load_model
from mvjax.cli import main as cli_main
from mvjax.train.config import ExperimentConfig
from mvjax.train.loop import train
from mvjax.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# Every train() compiles the same tiny step; XLA's persistent cache makes the repeats cheap.
JAX_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/mvjax-test-jax-cache")
jax.config.update("jax_compilation_cache_dir", JAX_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
SUBPROCESS_ENV = dict(os.environ, JAX_COMPILATION_CACHE_DIR=JAX_CACHE,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def tiny_experiment(**train_overrides) -> dict:
    train_cfg = dict(steps=6, log_every=1, eval_every=3, eval_batches=1, checkpoint_every=2,
                     keep_checkpoints=5, progress=False, concentration_every=3,
                     optim={"lr": 3e-3, "warmup_steps": 2})
    train_cfg.update(train_overrides)
    return {
        "model": dict(vocab_size=257, hidden_size=32, num_layers=2, num_heads=4, mlp_hidden=64,
                      max_seq_len=64, bos_id=256, positional={"scheme": "rope"}),
        "data": dict(source="tinyshakespeare", tokenizer="byte", seq_len=32, batch_size=8,
                     eval_rows=8),
        "train": train_cfg,
    }


def step_losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r
            and "event" not in r}


def final_params(run: Path) -> list[np.ndarray]:
    from flax import nnx
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(load_model(run / "model"), nnx.Param))]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full")
    summary = train(ExperimentConfig.from_dict(tiny_experiment()), out)
    assert summary["step"] == 6 and (out / "model").is_dir()
    return out


def test_exact_resume_is_bit_identical(full_run, tmp_path):
    exp = ExperimentConfig.from_dict(tiny_experiment())
    first = train(exp, tmp_path, stop_at=3)
    assert first["step"] == 3 and not (tmp_path / "model").exists()
    second = train(exp, tmp_path, resume=True)
    assert second["step"] == 6
    full, split = step_losses(full_run), step_losses(tmp_path)
    assert sorted(split) == list(range(1, 7))
    assert [full[s] for s in range(1, 7)] == [split[s] for s in range(1, 7)]
    for a, b in zip(final_params(full_run), final_params(tmp_path)):
        np.testing.assert_array_equal(a, b)


def test_records_concentration_and_eval(full_run):
    records = read_metrics(full_run / "metrics.jsonl")
    conc = [r["concentration"] for r in records if "concentration" in r]
    assert conc and set(conc[0]) == {"q_rot", "k_rot", "v"}
    assert all(len(v) == 2 and all(x >= 1.0 for x in v) for v in conc[0].values())
    massive = [r["massive"] for r in records if "massive" in r]
    assert massive and set(massive[0]) == {"q_rot", "k_rot", "v"}
    assert all(len(v) == 2 and all(isinstance(n, int) and n >= 0 for n in v) for v in massive[0].values())
    assert any(np.isfinite(r.get("eval_loss", np.nan)) for r in records)
    summary = records[-1]
    assert summary["event"] == "summary" and summary["tokens_per_s"] > 0 and 0 < summary["mfu"] < 1


KILL_MID_SAVE = """
import json, os, signal, sys, threading, time
import mvjax.train.checkpointing as C
from mvjax.train.config import ExperimentConfig
from mvjax.train.loop import train
orig = C.Checkpointer.save
def save(self, step, state, meta):
    if step == 4:
        threading.Thread(target=orig, args=(self, step, state, meta), daemon=True).start()
        for _ in range(200000):
            if any("tmp" in p.name for p in self.directory.iterdir()):
                print("KILLED-MID-SAVE", flush=True)
                break
            time.sleep(0.0002)
        os.kill(os.getpid(), signal.SIGKILL)
    return orig(self, step, state, meta)
C.Checkpointer.save = save
train(ExperimentConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2])
"""


def test_sigkill_mid_save_resumes_from_previous_checkpoint(full_run, tmp_path):
    exp = tiny_experiment()
    proc = subprocess.run([PYTHON, "-c", KILL_MID_SAVE, json.dumps(exp), str(tmp_path)], cwd=REPO,
                          env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert "KILLED-MID-SAVE" in proc.stdout
    summary = train(ExperimentConfig.from_dict(exp), tmp_path, resume=True)
    assert summary["step"] == 6
    full, resumed = step_losses(full_run), step_losses(tmp_path)
    # steps 3..6 were trained again after restoring step 2, and match the uninterrupted run
    assert [full[s] for s in range(3, 7)] == [resumed[s] for s in range(3, 7)]


def test_truncated_newest_checkpoint_falls_back_with_warning(full_run, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    newest = run / "checkpoints" / "6" / "state"
    for f in sorted(newest.rglob("*")):
        if f.is_file() and f.stat().st_size > 0 and "zarr" not in f.name:
            f.write_bytes(b"")  # truncate data files of the newest checkpoint
    with pytest.warns(UserWarning, match="falling back"):
        summary = train(ExperimentConfig.from_dict(tiny_experiment(steps=6)), run, resume=True)
    assert summary["step"] == 6
    assert step_losses(run)[6] == step_losses(full_run)[6]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-rope", "tiny-alibi", "tiny-nope", "tiny-rope-partial"])
def test_tiny_config_loss_falls(tmp_path, name):
    """Each tiny config (same sizes, only the positional scheme differs), shortened to 100 steps
    with a matching warmup, loses >= 30% of its initial loss on tinyshakespeare bytes."""
    overrides = ["train.steps=100", "train.optim.warmup_steps=10", "train.log_every=1",
                 "train.eval_every=0", "train.concentration_every=0", "train.checkpoint_every=0",
                 "train.progress=false", "data.seq_len=64"]
    exp = ExperimentConfig.load(REPO / "configs" / f"{name}.yaml", overrides)
    train(exp, tmp_path)
    losses = step_losses(tmp_path)
    first = np.mean([losses[s] for s in range(1, 4)])
    last = np.mean([losses[s] for s in range(98, 101)])
    assert last <= 0.7 * first, (first, last)


# ------------------------------------------------------------------------------------ bad input
def _cli_error(capsys, argv: list[str]) -> str:
    rc = cli_main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def _write_config(tmp_path: Path, exp: dict) -> str:
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(exp))
    return str(path)


def test_missing_data_file(tmp_path, capsys):
    exp = tiny_experiment()
    exp["data"]["source"] = str(tmp_path / "nope.txt")
    err = _cli_error(capsys, ["train", "--config", _write_config(tmp_path, exp), "--out",
                              str(tmp_path / "run")])
    assert "does not exist" in err
    assert not (tmp_path / "run").exists()  # data is checked before anything is created


def test_empty_dataset(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    exp = tiny_experiment()
    exp["data"]["source"] = str(tmp_path / "empty.txt")
    err = _cli_error(capsys, ["train", "--config", _write_config(tmp_path, exp), "--out",
                              str(tmp_path / "run")])
    assert "empty" in err.lower() or "no text" in err.lower() or "no documents" in err.lower()


def test_seq_len_longer_than_data(tmp_path, capsys):
    (tmp_path / "short.txt").write_text("To be or not to be.\n\nThat is the question.\n")
    exp = tiny_experiment()
    exp["data"].update(source=str(tmp_path / "short.txt"), seq_len=60)
    err = _cli_error(capsys, ["train", "--config", _write_config(tmp_path, exp), "--out",
                              str(tmp_path / "run")])
    assert "seq_len" in err


def test_unknown_optimizer_field(tmp_path, capsys):
    err = _cli_error(capsys, ["train", "--config", _write_config(tmp_path, tiny_experiment()),
                              "--override", "train.optim.momentum=0.9", "--out", str(tmp_path / "r")])
    assert "momentum" in err and "known fields" in err


def test_bad_override_key(tmp_path, capsys):
    err = _cli_error(capsys, ["train", "--config", _write_config(tmp_path, tiny_experiment()),
                              "--override", "trian.steps=3", "--out", str(tmp_path / "r")])
    assert "trian" in err


def test_resume_with_changed_model_config(full_run, tmp_path, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    exp = tiny_experiment()
    exp["model"]["positional"] = {"scheme": "alibi"}
    err = _cli_error(capsys, ["train", "--config", _write_config(tmp_path, exp), "--out", str(run),
                              "--resume"])
    assert "different model" in err and "positional" in err


def test_existing_run_without_resume(full_run, tmp_path, capsys):
    err = _cli_error(capsys, ["train", "--config", _write_config(tmp_path, tiny_experiment()),
                              "--out", str(full_run)])
    assert "--resume" in err


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    err = _cli_error(capsys, ["train", "--config", _write_config(tmp_path, tiny_experiment()),
                              "--out", str(blocker / "run")])
    assert "cannot write into" in err and "choose an output directory" in err


def _corrupt_all_checkpoints(run: Path) -> None:
    for f in (run / "checkpoints").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")


def test_resume_edge_cases(full_run, tmp_path, capsys):
    """Resuming a finished run changes nothing; a run whose checkpoints are all unreadable is refused
    (naming them) unless asked to start over; a resume with no checkpoint says it starts fresh; a
    folder of someone else's files is never trained into; a bad --stop-at is refused."""
    import shutil

    exp = ExperimentConfig.from_dict(tiny_experiment())
    done = tmp_path / "done"
    shutil.copytree(full_run, done)
    before = (done / "summary.json").read_text()
    assert train(exp, done, resume=True) == json.loads(before)
    assert (done / "summary.json").read_text() == before and np.isfinite(json.loads(before)["final_loss"])

    broken = tmp_path / "broken"
    shutil.copytree(full_run, broken)
    _corrupt_all_checkpoints(broken)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"every checkpoint .* unreadable"
                                                   r" \(steps \[2, 4, 6\].*--start-over"):
        train(exp, broken, resume=True)
    with pytest.raises(ValueError, match="--start-over"):  # still refused on a second try
        train(exp, broken, resume=True)
    short = ExperimentConfig.from_dict(tiny_experiment(steps=2, eval_every=0, concentration_every=0))
    assert train(short, broken, resume=True, start_over=True)["step"] == 2
    assert [r["step"] for r in read_metrics(broken / "metrics.jsonl") if "loss" in r] == [1, 2]

    capsys.readouterr()
    assert train(short, tmp_path / "empty", resume=True)["step"] == 2
    assert "no checkpoint" in capsys.readouterr().err

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a training run"):
        train(short, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    err = _cli_error(capsys, ["train", "--config", _write_config(tmp_path, tiny_experiment()),
                              "--out", str(tmp_path / "r"), "--stop-at", "-1"])
    assert "stop_at=-1" in err


def test_resume_marks_metrics_and_supersedes_lost_steps(tmp_path):
    """Steps logged after the checkpoint a run resumes from are trained again; the log says so with
    a resume marker and read_metrics keeps one record per step."""
    import shutil

    exp = ExperimentConfig.from_dict(tiny_experiment(steps=4, eval_every=0, concentration_every=0))
    run = tmp_path / "run"
    train(exp, run, stop_at=3)  # checkpoints 2 and 3; losing 3 leaves step 3 logged but unsaved
    shutil.rmtree(run / "checkpoints" / "3")
    train(exp, run, resume=True)
    raw = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"event": "resume", "step": 2} in raw
    assert [r["step"] for r in raw if "loss" in r and "event" not in r] == [1, 2, 3, 3, 4]
    assert sorted(step_losses(run)) == [1, 2, 3, 4]
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")
            if "loss" in r and "event" not in r] == [1, 2, 3, 4]


def test_finite_divergence_is_caught():
    """A loss far above where the run started stops it like a NaN, and says when nothing was saved."""
    from mvjax.train.loop import TrainingDiverged, _DivergenceGuard

    class Log:
        records: list = []

        def write(self, record):
            self.records.append(record)

    guard, log = _DivergenceGuard(2.0, 257, Path("/run/checkpoints")), Log()
    guard.check([(1, {"loss": 6.0, "grad_norm": 1.0, "ok": True}),
                 (2, {"loss": 11.0, "grad_norm": 1.0, "ok": True})], None, log)  # 11 < 2 × 6
    with pytest.raises(TrainingDiverged, match=r"step 3: loss=7744 exceeds 2 × max\(first loss 6, "
                                               r"uniform ln V 5.549\).*no checkpoint was saved"):
        guard.check([(3, {"loss": 7744.0, "grad_norm": 3.0, "ok": True})], None, log)
    assert log.records[-1] == {"step": 3, "event": "diverged", "loss": 7744.0, "grad_norm": 3.0}
    with pytest.raises(TrainingDiverged, match="not finite.*last good checkpoint: step 4"):
        guard.check([(5, {"loss": float("nan"), "grad_norm": 1.0, "ok": False})], 4, log)
    _DivergenceGuard(0.0, 257, Path("/x")).check([(1, {"loss": 1.0, "grad_norm": 1.0, "ok": True}),
                                                  (2, {"loss": 1e6, "grad_norm": 1.0, "ok": True})],
                                                 None, log)  # 0 disables the finite check


def test_large_learning_rate_stops_before_saving_a_model(tmp_path):
    from mvjax.train.loop import TrainingDiverged
    exp = ExperimentConfig.from_dict(tiny_experiment(steps=8, eval_every=0, concentration_every=0,
                                                     checkpoint_every=0,
                                                     optim={"lr": 10.0, "warmup_steps": 0}))
    with pytest.raises(TrainingDiverged):
        train(exp, tmp_path)
    assert not (tmp_path / "model").exists()


def test_nan_stops_with_last_good_checkpoint(tmp_path):
    from mvjax.train.loop import TrainingDiverged
    exp = ExperimentConfig.from_dict(tiny_experiment(steps=4, eval_every=0, concentration_every=0,
                                                     optim={"lr": 1e30, "warmup_steps": 0,
                                                            "grad_clip": 0.0}))
    with pytest.raises(TrainingDiverged, match="not finite"):
        train(exp, tmp_path)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert all(s < 4 for s in steps)


# ------------------------------------------------------------------------------ step pieces
def _step_setup(accum: int, dtype: str = "float32", chunk: int = 0):
    from flax import nnx

    from mvjax.config import ModelConfig
    from mvjax.model import init_model
    from mvjax.train.config import OptimConfig
    from mvjax.train.optim import build_optimizer
    from mvjax.train.step import make_train_step

    cfg = ModelConfig(vocab_size=61, hidden_size=32, num_layers=2, num_heads=4, mlp_hidden=64,
                      max_seq_len=32, dtype=dtype, tie_embeddings=False)
    graphdef, params = nnx.split(init_model(cfg, 0), nnx.Param)
    params = nnx.to_pure_dict(params)
    tx, _ = build_optimizer(OptimConfig(lr=1e-2, warmup_steps=0), 10, params)
    step = make_train_step(graphdef, cfg, tx, accum, chunk)
    tokens = jax.random.randint(jax.random.key(1), (4, 17), 0, 61)
    return step, {"params": params, "opt": tx.init(params)}, tokens


def test_grad_accumulation_and_chunked_loss_match_plain_step():
    results = []
    for accum, chunk in ((1, 0), (2, 0), (1, 5)):
        step, state, tokens = _step_setup(accum, chunk=chunk)
        losses = []
        for _ in range(2):
            state, m = step(state, tokens)
            losses.append(float(m["loss"]))
        results.append((losses, jax.tree.leaves(state["params"])))
    for losses, leaves in results[1:]:
        np.testing.assert_allclose(losses, results[0][0], rtol=1e-5)
        for a, b in zip(leaves, results[0][1]):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_bfloat16_compute_keeps_float32_master_params():
    step, state, tokens = _step_setup(1, dtype="bfloat16")
    state, m = step(state, tokens)
    assert bool(m["ok"]) and np.isfinite(float(m["loss"]))
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(state["params"]))


def test_weight_decay_mask_skips_norms_and_embeddings():
    from mvjax.train.config import OptimConfig
    from mvjax.train.optim import decay_mask
    params = {"embed": {"embedding": 0}, "norm": {"weight": 0},
              "layers": {0: {"input_norm": {"weight": 0}, "attn": {"q_proj": {"kernel": 0}}}}}
    mask = decay_mask(params, OptimConfig())
    assert mask["layers"][0]["attn"]["q_proj"]["kernel"] is True
    assert mask["embed"]["embedding"] is False and mask["norm"]["weight"] is False
    assert mask["layers"][0]["input_norm"]["weight"] is False
    assert decay_mask(params, OptimConfig(decay_embeddings=True))["embed"]["embedding"] is True


def test_overrides_parse_values_and_keep_sections():
    from mvjax.train.config import apply_overrides
    data = {"train": {"optim": {"lr": 1.0}}, "model": {"dtype": "float32"}}
    out = apply_overrides(data, ["train.optim.lr=3e-4", "model.dtype=bfloat16", "train.steps=7",
                                 "train.progress=false"])
    assert out["train"]["optim"]["lr"] == 3e-4 and out["train"]["steps"] == 7
    assert out["model"]["dtype"] == "bfloat16" and out["train"]["progress"] is False
    assert data["train"]["optim"]["lr"] == 1.0  # input untouched


def test_sigterm_saves_checkpoint_and_exits(tmp_path):
    import signal
    import time
    exp = tiny_experiment(steps=100000, checkpoint_every=0, eval_every=0, concentration_every=0)
    cfg = tmp_path / "exp.json"
    cfg.write_text(json.dumps(exp))
    out = tmp_path / "run"
    proc = subprocess.Popen([PYTHON, "-m", "mvjax.cli", "train", "--config", str(cfg), "--out",
                             str(out)], cwd=REPO, env=SUBPROCESS_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]  # one line saying how to resume, no traceback
    assert "interrupted by SIGTERM" in last and "--resume" in last and "Traceback" not in stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["interrupted_by_signal"] == signal.SIGTERM
    steps = [int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()]
    assert steps == [summary["step"]] and summary["step"] >= 1


@pytest.mark.parametrize("tied", [True, False])
def test_flops_per_token_counts_each_matmul_once(tied):
    """6 FLOPs per matmul weight (the head once, tied or not; never the lookup) + causal attention."""
    from mvjax.config import ModelConfig
    from mvjax.train.metrics import flops_per_token

    cfg = ModelConfig(vocab_size=1000, hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2,
                      mlp_hidden=96, max_seq_len=32, tie_embeddings=tied)
    d, kv_d = 64, 2 * 16
    per_layer = d * d * 2 + d * kv_d * 2 + 3 * d * 96  # q, o, k, v, gate/up/down
    expected = 6 * (3 * per_layer + 1000 * d) + 6 * 3 * 32 * 4 * 16
    assert flops_per_token(cfg, 32) == expected


def test_wsd_schedule_is_the_constant_run_then_a_linear_decay():
    from mvjax.train.config import OptimConfig
    from mvjax.train.optim import learning_rate

    const = learning_rate(OptimConfig(lr=1e-3, warmup_steps=10, schedule="constant"), 100)
    wsd = learning_rate(OptimConfig(lr=1e-3, warmup_steps=10, schedule="wsd", decay_steps=20,
                                    min_lr_ratio=0.1), 100)
    assert all(float(wsd(i)) == float(const(i)) for i in range(0, 80))  # the same run up to step 80
    assert float(wsd(90)) == pytest.approx(0.55e-3) and float(wsd(100)) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="decay_steps"):
        OptimConfig(schedule="wsd", decay_steps=-1)
