"""Faults on the newer commands (issue 22): a full disk, a kill that cut a file, a signal, a
folder of someone's files as --out, bad arguments and bad results files. Each command must leave
the user's files whole and end in one line: the file, the problem and the fix.

The full disk is played by a patched ``open`` whose writes under one folder fail with ENOSPC once
a byte budget is spent (what a small tmpfs does); a kill's cut file is a file the test cuts;
signals are sent to this process while a command runs in it."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import signal
import warnings
from pathlib import Path

import jax
import pytest

from mvjax import atomic
from mvjax.cli import main

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/mvjax-test-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

REPO = Path(__file__).resolve().parents[1]
SAVED_EMERGENCE = REPO / "docs" / "rope-emergence" / "emergence.json"


def one_line(capsys, *needles: str) -> str:
    everything = capsys.readouterr().err
    assert "Traceback" not in everything, everything
    lines = [l for l in everything.splitlines() if l.startswith("mvjax ")]  # not progress bars
    assert len(lines) == 1, everything
    err = lines[0]
    for needle in needles:
        assert needle in err, err
    return err


class _FullFile:
    """A file whose writes fail with ENOSPC once the shared budget is spent (after writing what
    still fits, as a real full disk does)."""

    def __init__(self, f, disk: "FullDisk"):
        self._f, self._disk = f, disk

    def write(self, data):
        room = self._disk.budget
        if len(data) <= room:
            self._disk.budget -= len(data)
            return self._f.write(data)
        self._f.write(data[:room])
        self._disk.budget = 0
        self._f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")  # as a real write: no file named

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)

    def __getattr__(self, name):
        return getattr(self._f, name)


class FullDisk:
    """Patches ``open`` so files opened for writing under ``root`` share ``budget`` bytes."""

    def __init__(self, monkeypatch, root: Path, budget: int = 0):
        self.root, self.budget = str(Path(root).absolute()), budget
        real = builtins.open

        def fake_open(file, mode="r", *args, **kwargs):
            f = real(file, mode, *args, **kwargs)
            writing = any(c in mode for c in "wax+")
            if writing and isinstance(file, (str, os.PathLike)) and \
                    str(Path(file).absolute()).startswith(self.root):
                return _FullFile(f, self)
            return f

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)


def dead_pid() -> int:
    """A pid no process has now."""
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


# ---------------------------------------------------------------- fixtures (tiny, CPU seconds)


def tiny_experiment(steps: int) -> dict:
    """A 2-layer byte model on the packaged text, norm matrices logged every step."""
    return {"model": dict(vocab_size=257, hidden_size=32, num_layers=2, num_heads=4, mlp_hidden=64,
                          max_seq_len=64, bos_id=256, positional={"scheme": "rope"}),
            "data": dict(source="tinyshakespeare", tokenizer="byte", seq_len=32, batch_size=8,
                         eval_rows=8),
            "train": dict(steps=steps, log_every=1, eval_every=0, eval_batches=1,
                          checkpoint_every=2, keep_checkpoints=2, progress=False,
                          concentration_every=1, optim={"lr": 3e-3, "warmup_steps": 1})}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished 2-step training run with norm matrices logged (what emergence reads)."""
    from mvjax.train.config import ExperimentConfig
    from mvjax.train.loop import train

    out = tmp_path_factory.mktemp("faults") / "run"
    train(ExperimentConfig.from_dict(tiny_experiment(2)), out)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny saved byte-level model (for analyze)."""
    from mvjax.checkpoint import save_model
    from mvjax.config import ModelConfig
    from mvjax.model import init_model
    from mvjax.tokenizers import ByteTokenizer

    cfg = ModelConfig(vocab_size=257, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      mlp_hidden=48, max_seq_len=128, init_std=0.2)
    return save_model(tmp_path_factory.mktemp("faults") / "model", init_model(cfg, 0),
                      ByteTokenizer())


def saved_emergence(path: Path, runs: int = 2) -> Path:
    """A small emergence.json made of the committed one's first runs."""
    saved = json.loads(SAVED_EMERGENCE.read_text())
    saved["runs"] = saved["runs"][:runs]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved))
    return path


def cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ---------------------------------------------------------------- 1. in-place update, full disk


def test_emergence_in_place_update_on_full_disk_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "emergence"
    src = saved_emergence(out / "emergence.json")
    before = src.read_bytes()
    FullDisk(monkeypatch, out, budget=16_000)
    code = main(["experiment", "emergence", str(src), "--out", str(out)])
    assert code == 1
    one_line(capsys, "ENOSPC", "free some space", str(out / "emergence.json"))
    assert src.read_bytes() == before  # whole: the only record of those runs
    assert not [p for p in out.iterdir() if atomic.PARTIAL in p.name]


def test_atomic_write_failure_leaves_old_file_and_no_work_file(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text('{"old": true}')
    FullDisk(monkeypatch, tmp_path, budget=3)
    with pytest.raises(OSError) as e:
        atomic.write_json(target, {"new": list(range(100))})
    assert e.value.errno == errno.ENOSPC
    assert target.read_text() == '{"old": true}' and os.listdir(tmp_path) == ["state.json"]


# ---------------------------------------------------------------- 2. compare on disrupt/quantize


@pytest.mark.parametrize("experiment", ["disrupt", "quantize"])
def test_compare_refuses_disrupt_and_quantize_results(tmp_path, capsys, experiment):
    res = tmp_path / "res"
    res.mkdir()
    (res / "results.json").write_text(json.dumps({"experiment": experiment, "claims": {}}))
    assert main(["compare", str(res), "--out", str(tmp_path / "cmp")]) == 2
    one_line(capsys, "results.json", f"is a {experiment} result", "rope-cause")


# ---------------------------------------------------------------- 3. JSON state cut by a kill


def _rope_cause_out(tmp_path: Path) -> Path:
    from mvjax.analysis.experiments.rope_cause.presets import PRESETS
    from mvjax.config import to_plain

    out = tmp_path / "rc"
    out.mkdir()
    (out / "experiment.json").write_text(json.dumps({"preset": to_plain(PRESETS["test"])},
                                                    indent=1))
    return out


def test_rope_cause_resume_names_a_cut_experiment_json(tmp_path, capsys):
    out = _rope_cause_out(tmp_path)
    cut(out / "experiment.json")
    assert main(["experiment", "rope-cause", "--preset", "test", "--out", str(out),
                 "--resume"]) == 2
    one_line(capsys, "experiment.json is not valid JSON (cut by a kill?)", "delete it", "--resume")


def test_rope_cause_resume_names_a_cut_summary_json(tmp_path, capsys):
    out = _rope_cause_out(tmp_path)
    arm = out / "arms" / "rope"
    arm.mkdir(parents=True)
    (arm / "summary.json").write_text(json.dumps({"step": 4, "model_dir": str(arm / "model")}))
    cut(arm / "summary.json")
    assert main(["experiment", "rope-cause", "--preset", "test", "--out", str(out),
                 "--resume"]) == 2
    one_line(capsys, "summary.json is not valid JSON", "checkpoints are kept")


def test_arm_result_names_a_cut_disrupt_json(run_dir, tmp_path):
    import shutil

    from mvjax.analysis.experiments.rope_cause.measure import arm_result

    arm = tmp_path / "arm"
    shutil.copytree(run_dir, arm)
    (arm / "analyze").mkdir()
    (arm / "analyze" / "massive_values.json").write_text('{"sites": {}, "summary"')
    with pytest.raises(ValueError, match=r"massive_values.json is not valid JSON.*delete its folder"):
        arm_result(arm)
    (arm / "analyze" / "massive_values.json").write_text('{"sites": {}, "summary": {}}')
    (arm / "tasks.json").write_text("{}")
    (arm / "disrupt.json").write_text('{"accuracy": {"orig')
    with pytest.raises(ValueError, match=r"disrupt.json is not valid JSON.*--resume"):
        arm_result(arm)


def test_read_json_state_names_a_non_utf8_file(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(ValueError, match="results.json is not valid JSON.*rerun"):
        atomic.read_json_state(bad, "rerun")


# ---------------------------------------------------------------- 4. metrics.jsonl cut last line


def test_read_metrics_drops_a_cut_last_line_with_a_warning(tmp_path):
    from mvjax.train.metrics import read_metrics

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.9}\n{"step": 3, "lo')
    with pytest.warns(UserWarning, match="metrics.jsonl: dropped a cut last line"):
        assert [r["step"] for r in read_metrics(log)] == [1, 2]
    log.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')  # damage inside: refused
    with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not valid JSON"):
        read_metrics(log)


def test_train_resume_after_a_cut_metrics_line(run_dir, tmp_path, capsys):
    import shutil

    from mvjax.train.metrics import read_metrics

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "summary.json").unlink()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "norms": {"q": [[0.5, 0.25, ')  # a kill mid-line
    cfg = tmp_path / "exp.json"
    cfg.write_text(json.dumps(tiny_experiment(2)))
    with pytest.warns(UserWarning, match="dropped a cut last line"):
        assert main(["train", "--config", str(cfg), "--out", str(run), "--resume"]) == 0
    records = read_metrics(run / "metrics.jsonl")  # every line whole again
    assert records[-1]["event"] == "summary" and any(r.get("event") == "resume" for r in records)


def test_emergence_reads_a_run_whose_last_line_is_cut(run_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": ')
    with pytest.warns(UserWarning, match=r"metrics.jsonl: dropped a cut last line"):
        assert main(["experiment", "emergence", str(run), "--out", str(tmp_path / "em")]) == 0
    assert json.loads((tmp_path / "em" / "emergence.json").read_text())["runs"][0]["run"] == "run"


def test_append_line_cuts_back_a_failed_write(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n')
    FullDisk(monkeypatch, tmp_path, budget=5)
    with open(log, "a") as f, pytest.raises(OSError):
        atomic.append_line(f, json.dumps({"step": 2, "loss": 1.0}))
    monkeypatch.undo()
    assert log.read_text() == '{"step": 1}\n'


# ---------------------------------------------------------------- 5 + 8. signals: 130 / 143


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_rope_cause_interrupted_exits_128_plus_signal(tmp_path, monkeypatch, capsys, signum):
    import mvjax.analysis.experiments.rope_cause.run as rc

    monkeypatch.setattr(rc, "train", lambda *a, **k: {"interrupted_by_signal": signum, "step": 1})
    out = tmp_path / "rc"
    assert main(["experiment", "rope-cause", "--preset", "test", "--out", str(out)]) == 128 + signum
    err = one_line(capsys, f"interrupted by {signal.Signals(signum).name}", "--resume")
    assert f"--out {out}" in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_analyze_interrupted_exits_with_one_line(model_dir, tmp_path, monkeypatch, capsys, signum):
    import mvjax.analysis.analyze

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signum)  # a real signal, delivered while the command runs
        raise AssertionError("the signal did not interrupt")

    monkeypatch.setattr(mvjax.analysis.analyze, "collect_stats", interrupted)
    out = tmp_path / "an"
    code = main(["analyze", "--model", str(model_dir), "--tokens", "64", "--seq-len", "32",
                 "--no-figures", "--out", str(out)])
    assert code == 128 + signum
    one_line(capsys, f"interrupted by {signal.Signals(signum).name}", "rerun: mvjax analyze")
    assert not out.exists() and not list(tmp_path.glob(".an.partial-*"))


@pytest.mark.parametrize("experiment", ["disrupt", "quantize"])
def test_disrupt_and_quantize_ctrl_c_exits_130(tmp_path, monkeypatch, capsys, experiment):
    import mvjax.analysis.experiments.common

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mvjax.analysis.experiments.common, "load_pretrained", ctrl_c)
    assert main(["experiment", experiment, "--out", str(tmp_path / "o")]) == 130
    one_line(capsys, "interrupted by SIGINT", f"rerun: mvjax experiment {experiment}")
    assert not (tmp_path / "o").exists()


def test_full_disk_mid_write_names_the_output(tmp_path, monkeypatch):
    target = tmp_path / "emergence.md"
    FullDisk(monkeypatch, tmp_path, budget=0)
    with pytest.raises(OSError) as e:
        atomic.write_atomic(target, "x")
    monkeypatch.undo()
    assert e.value.filename == str(target) and "[ENOSPC]" in atomic.os_error_line(e.value)
    assert os.listdir(tmp_path) == []


def test_rope_cause_ctrl_c_in_the_analysis_stage(tmp_path, monkeypatch, capsys):
    import mvjax.analysis.experiments.rope_cause.run as rc

    monkeypatch.setattr(rc, "train_arms", lambda *a, **k: True)

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(rc, "analyze_arm", ctrl_c)
    out = _rope_cause_out(tmp_path)
    assert main(["experiment", "rope-cause", "--preset", "test", "--out", str(out),
                 "--resume"]) == 130
    err = one_line(capsys, "interrupted by SIGINT", "continue with: mvjax experiment rope-cause")
    assert err.count("--resume") == 1


# ---------------------------------------------------------------- 6. arguments checked first


@pytest.mark.parametrize("temperature", ["nan", "-1", "inf"])
def test_generate_refuses_a_bad_temperature_before_loading(monkeypatch, capsys, temperature):
    import mvjax.commands.generate

    monkeypatch.setattr(mvjax.commands.generate, "load_pretrained", lambda *a, **k: pytest.fail("loaded"))
    assert main(["generate", "--model", "x", "--prompt", "hi", "--temperature", temperature]) == 2
    one_line(capsys, "temperature", "is invalid")


@pytest.mark.parametrize("lam", ["inf", "0", "-2", "nan"])
def test_analyze_refuses_a_bad_lambda_before_loading(tmp_path, monkeypatch, capsys, lam):
    import mvjax.analysis.analyze

    monkeypatch.setattr(mvjax.analysis.analyze, "load_layerwise", lambda *a, **k: pytest.fail("loaded"))
    assert main(["analyze", "--lambda", lam, "--out", str(tmp_path / "an")]) == 2
    one_line(capsys, f"lambda={float(lam)!r} is invalid")


def test_analyze_refuses_tokens_that_cannot_fit_before_loading(tmp_path, monkeypatch, capsys):
    """10^12 tokens (4 TB of token ids) were accepted, to fail or run on what the data held."""
    import mvjax.analysis.analyze

    monkeypatch.setattr(mvjax.analysis.analyze, "load_layerwise", lambda *a, **k: pytest.fail("loaded"))
    assert main(["analyze", "--tokens", str(10**12), "--out", str(tmp_path / "an")]) == 2
    one_line(capsys, "--tokens 1000000000000 needs at least 3.64 TiB", "lower --tokens")


# ---------------------------------------------------------------- 7. full disk: train, analyze


def test_checkpoint_on_full_disk_names_enospc_and_removes_orbax_tmp(tmp_path, monkeypatch):
    import numpy as np

    from mvjax.train.checkpointing import Checkpointer

    ckpt = Checkpointer(tmp_path / "run", keep=2)

    def full(step, args=None, force=False):
        (ckpt.directory / f"{step}.orbax-checkpoint-tmp-1234").mkdir(parents=True)
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "params" ... Failed to write 4096 '
                         "bytes to file 18: No space left on device [os_error_code='28']")

    monkeypatch.setattr(ckpt.manager, "save", full)
    with pytest.raises(OSError) as e:
        ckpt.save(10, {"w": np.zeros(3)}, {"step": 10})
    ckpt.close()
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(ckpt.directory / "10")
    line = atomic.os_error_line(e.value)
    assert "checkpoints/10" in line and "[ENOSPC]" in line and "\n" not in line
    assert not list(ckpt.directory.glob("*.orbax-checkpoint-tmp*"))


def test_analyze_on_full_disk_is_one_line_and_keeps_old_results(model_dir, tmp_path, monkeypatch,
                                                                 capsys):
    out = tmp_path / "an"
    argv = ["analyze", "--model", str(model_dir), "--tokens", "64", "--seq-len", "32",
            "--no-figures", "--out", str(out)]
    assert main(argv) == 0
    before = (out / "massive_values.json").read_bytes()
    capsys.readouterr()
    FullDisk(monkeypatch, tmp_path, budget=100)
    assert main(argv) == 1
    one_line(capsys, "No space left on device", f"({out})", "[ENOSPC]")
    assert (out / "massive_values.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["an"]


# ---------------------------------------------------------------- 9. --out: someone else's folder


def _someones_folder(tmp_path: Path, kind: str) -> Path:
    d = tmp_path / "mine"
    d.mkdir()
    if kind == "model":
        (d / "config.json").write_text("{}")
        (d / "params").mkdir()
    else:
        (d / "thesis.tex").write_text("keep me")
    return d


@pytest.mark.parametrize("kind", ["files", "model"])
@pytest.mark.parametrize("command", ["rope-cause", "compare", "emergence"])
def test_out_of_someone_elses_files_is_refused(tmp_path, monkeypatch, capsys, command, kind):
    import mvjax.analysis.experiments.rope_cause.run as rc

    monkeypatch.setattr(rc, "train_arms", lambda *a, **k: pytest.fail("trained"))
    mine = _someones_folder(tmp_path, kind)
    before = sorted(p.name for p in mine.iterdir())
    res = tmp_path / "res"
    res.mkdir()
    argv = {"rope-cause": ["experiment", "rope-cause", "--preset", "test"],
            "compare": ["compare", str(res)],
            "emergence": ["experiment", "emergence", str(saved_emergence(tmp_path / "e.json"))]}
    assert main([*argv[command], "--out", str(mine)]) == 2
    one_line(capsys, str(mine), "is a model directory" if kind == "model" else "thesis.tex")
    assert sorted(p.name for p in mine.iterdir()) == before


# ---------------------------------------------------------------- 10. bad results and task files


@pytest.mark.parametrize("results, key", [
    ({"experiment": "rope-cause"}, "'arms'"),
    ({"experiment": "rope-cause", "arms": {"rope": {"final": {"k_rot": {"layers": "x"}}}}},
     "'final.k_rot.layers' is a str, not a list"),
    ({"experiment": "rope-cause", "arms": {"rope": {"final": {"k_rot": {"layers": [{}]}}}}},
     "'n_massive'"),
])
def test_compare_names_the_file_and_the_key(tmp_path, capsys, results, key):
    res = tmp_path / "res"
    res.mkdir()
    (res / "results.json").write_text(json.dumps(results))
    assert main(["compare", str(res), "--out", str(tmp_path / "cmp")]) == 2
    one_line(capsys, "results.json", key)


def test_compare_names_a_cut_massive_values_json(tmp_path, capsys):
    res = tmp_path / "an"
    res.mkdir()
    (res / "massive_values.json").write_text('{"model": {"name": "x", "conf')
    assert main(["compare", str(res), "--out", str(tmp_path / "cmp")]) == 2
    one_line(capsys, "massive_values.json is not valid JSON", "rerun `mvjax analyze`")


@pytest.mark.parametrize("damage, key", [
    (lambda r: r.pop("curves"), "'curves'"),
    (lambda r: r.update(head_dim="64"), "'head_dim' is a str"),
    (lambda r: r["curves"]["sites"].pop("k_rot"), "'curves.sites.k_rot'"),
    (lambda r: r["curves"].update(tokens=["a"]), "wrong shape or type"),
])
def test_emergence_names_the_file_and_the_key(tmp_path, capsys, damage, key):
    src = saved_emergence(tmp_path / "e.json", runs=1)
    saved = json.loads(src.read_text())
    damage(saved["runs"][0])
    src.write_text(json.dumps(saved))
    assert main(["experiment", "emergence", str(src), "--out", str(tmp_path / "em")]) == 2
    one_line(capsys, str(src), key)


def test_emergence_names_a_cut_emergence_json(tmp_path, capsys):
    src = saved_emergence(tmp_path / "e.json", runs=1)
    cut(src)
    assert main(["experiment", "emergence", str(src), "--out", str(tmp_path / "em")]) == 2
    one_line(capsys, "e.json is not valid JSON (cut by a kill?)")


def test_non_utf8_task_file_is_named(tmp_path, capsys):
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(json.dumps({"prompt": "caf\u00e9", "target": "x"}).encode("utf-8")
                    .replace(b"\\u00e9", b"\xe9") + b"\n")
    assert main(["experiment", "disrupt", "--model", "x", "--tasks", str(bad),
                 "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "latin.jsonl is not UTF-8", "save it as UTF-8")


def test_lone_surrogate_in_a_task_file_is_named(tmp_path, capsys):
    """A ``\\ud800`` escape is valid JSON but not text: the file, line and field are named before
    the model loads, instead of a codec error from the tokenizer naming neither."""
    bad = tmp_path / "sur.jsonl"
    bad.write_text('{"prompt": "ok", "target": "z"}\n{"prompt": "x \\ud800 y", "target": "z"}\n')
    assert main(["experiment", "disrupt", "--model", "x", "--tasks", str(bad),
                 "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "sur.jsonl:2", "'prompt'", "lone surrogate", "character 3")


# ---------------------------------------------------------------- 11. a long target is named


def test_a_long_target_is_named_with_its_length():
    from mvjax.analysis.evaluate import check_fits
    from mvjax.data.tasks.base import Item, Task
    from mvjax.tokenizers import ByteTokenizer

    task = Task("long", "user", (Item("short", target="ok"), Item("Q: ", target="x" * 5000)))
    with pytest.raises(ValueError) as e:
        check_fits(ByteTokenizer(), task, 2048)
    msg = str(e.value)
    assert "item 2" in msg and "target 'xxxx" in msg and "5000 characters" in msg
    assert "5000 tokens" in msg and "2048" in msg
    check_fits(ByteTokenizer(), Task("ok", "user", (Item("short", target="ok"),)), 2048)


# ---------------------------------------------------------------- 12. emergence of no runs


def test_emergence_of_an_empty_run_list_fails(tmp_path, capsys):
    src = tmp_path / "e.json"
    src.write_text(json.dumps({"command": "x", "runs": [], "totals": {}}))
    assert main(["experiment", "emergence", str(src), "--out", str(tmp_path / "em")]) == 2
    one_line(capsys, "no runs to draw")
    assert not (tmp_path / "em" / "emergence.md").exists()


# ---------------------------------------------------------------- 13. one run per --out


def test_rope_cause_on_a_locked_out_is_refused(tmp_path, monkeypatch, capsys):
    import mvjax.analysis.experiments.rope_cause.run as rc

    monkeypatch.setattr(rc, "train_arms", lambda *a, **k: pytest.fail("trained"))
    out = _rope_cause_out(tmp_path)
    with atomic.lock_dir(out):  # another run holds OUT
        assert main(["experiment", "rope-cause", "--preset", "test", "--out", str(out),
                     "--resume"]) == 2
    one_line(capsys, "in use by another mvjax run", f"lock {out / atomic.LOCK_FILE}",
             f"pid {os.getpid()}")


def test_train_on_a_locked_out_is_refused(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = (run / "metrics.jsonl").read_bytes()
    cfg = tmp_path / "exp.json"
    cfg.write_text(json.dumps(tiny_experiment(4)))
    with atomic.lock_dir(run):
        assert main(["train", "--config", str(cfg), "--out", str(run), "--resume"]) == 2
    one_line(capsys, "in use by another mvjax run", f"pid {os.getpid()}")
    assert (run / "metrics.jsonl").read_bytes() == before


# ---------------------------------------------------------------- 14. --reference checked first


def test_rope_cause_refuses_a_missing_reference_before_training(tmp_path, monkeypatch, capsys):
    import mvjax.analysis.experiments.rope_cause.run as rc

    monkeypatch.setattr(rc, "train_arms", lambda *a, **k: pytest.fail("trained"))
    assert main(["experiment", "rope-cause", "--preset", "test", "--out", str(tmp_path / "rc"),
                 "--reference", "/nonexistent"]) == 2
    one_line(capsys, "cannot load model '/nonexistent'")
    assert not (tmp_path / "rc").exists()


# ---------------------------------------------------------------- 15. leftover work dirs


def test_leftover_partials_of_dead_writers_are_removed(tmp_path):
    dead, alive = dead_pid(), os.getpid()
    for name in (f".an.partial-{dead}-x1", ".an.partial-oldstyle", f".an.partial-{alive}-x2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "big.bin").write_bytes(b"0" * 1000)
    (tmp_path / "keep.partial-1").mkdir()  # not a work dir of ours: no leading dot
    atomic.check_results_dir(tmp_path / "an", "massive_values.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".an.partial-{alive}-x2",
                                                          "keep.partial-1"]


def test_rope_cause_start_removes_leftover_partials(tmp_path, monkeypatch):
    import mvjax.analysis.experiments.rope_cause.run as rc

    monkeypatch.setattr(rc, "train_arms", lambda *a, **k: False)  # stop right after the start
    out = _rope_cause_out(tmp_path)
    left = [out / "arms" / "rope" / f".analyze.partial-{dead_pid()}-abc",
            out / "arms" / "nope" / f".model.partial-{dead_pid()}-def"]
    for d in left:
        d.mkdir(parents=True)
    assert main(["experiment", "rope-cause", "--preset", "test", "--out", str(out),
                 "--resume"]) == 0
    assert not any(d.exists() for d in left)
    assert (out / "arms" / "rope").is_dir()


def test_atomic_directory_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic.atomic_directory(tmp_path / "res") as work:
        (work / "half.json").write_text("{")
        raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []


def test_repair_jsonl_drops_only_a_cut_tail(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2, "lo')
    with pytest.warns(UserWarning, match="metrics.jsonl: dropped a cut last line"):
        atomic.repair_jsonl(log)
    assert log.read_text() == '{"step": 1}\n'
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atomic.repair_jsonl(log)  # whole lines: nothing to repair, no warning
        atomic.repair_jsonl(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------- a model too large for memory


@pytest.mark.parametrize("overrides, lower", [
    (["model.hidden_size=4000000", "model.mlp_hidden=4000000"],
     "model.hidden_size (now 4000000) or model.mlp_hidden (now 4000000)"),
    (["model.vocab_size=100000000000"], "model.vocab_size (now 100000000000)")])
def test_train_refuses_a_model_that_cannot_fit_memory(tmp_path, capsys, overrides, lower):
    """Used to build the model and end in a RESOURCE_EXHAUSTED traceback after half a minute."""
    import yaml

    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny_experiment(2)))
    argv = ["train", "--config", str(config), "--out", str(tmp_path / "run")]
    for o in overrides:
        argv += ["--override", o]
    assert main(argv) == 2
    err = one_line(capsys, "training needs at least", "more than", lower, "--override")
    assert "TiB" in err or "PiB" in err or "EiB" in err, err
    assert not (tmp_path / "run").exists()  # refused before anything was created


def test_memory_estimate_refuses_only_what_cannot_fit(monkeypatch):
    """The bound is weights + AdamW state: a model just under the memory passes, just over fails."""
    from conftest import tiny_config
    from mvjax import memory_budget

    cfg = tiny_config()
    need = cfg.num_params() * memory_budget.TRAIN_BYTES_PER_PARAM
    monkeypatch.setattr(memory_budget, "available_memory", lambda: (need, "test memory"))
    memory_budget.check_training_fits(cfg)
    monkeypatch.setattr(memory_budget, "available_memory", lambda: (need - 1, "test memory"))
    with pytest.raises(ValueError, match="more than test memory"):
        memory_budget.check_training_fits(cfg)


# ---------------------------------------------------------------- results folders honour the umask


def test_atomic_directory_honours_the_umask(tmp_path):
    """mkdtemp's 0700 must not leak into a results folder: others could not read the results."""
    old = os.umask(0o022)
    try:
        with atomic.atomic_directory(tmp_path / "res") as work:
            (work / "r.json").write_text("{}")
        assert (tmp_path / "res").stat().st_mode & 0o777 == 0o755
        os.chmod(tmp_path / "res", 0o750)  # a replaced set keeps the mode its owner gave it
        with atomic.atomic_directory(tmp_path / "res") as work:
            (work / "r.json").write_text("{}")
        assert (tmp_path / "res").stat().st_mode & 0o777 == 0o750
    finally:
        os.umask(old)
