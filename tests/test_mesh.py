"""``--mesh data=N,model=M`` for the experiments and generation: the flag's checks, the partition
rules, and the property that matters — on 8 (fake) CPU devices every mesh shape gives one device's
results.json numbers and greedy tokens, and a model too large for one device runs sharded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mvjax import mesh as mesh_lib

REPO = Path(__file__).resolve().parents[1]
JAX_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/mvjax-test-jax-cache")
MESHES = ("data=1,model=1", "data=8,model=1", "data=2,model=4", "data=1,model=8")


def test_parse_mesh():
    assert mesh_lib.parse_mesh(None) == mesh_lib.MeshShape(1, 1)
    assert mesh_lib.parse_mesh("data=2,model=4") == mesh_lib.MeshShape(2, 4)
    assert mesh_lib.parse_mesh("model=8") == mesh_lib.MeshShape(1, 8)
    for bad in ("data=0", "data=2,fsdp=4", "2x4", "model=-1", "data=two"):
        with pytest.raises(ValueError, match="--mesh .* is invalid"):
            mesh_lib.parse_mesh(bad)


def test_too_many_devices_is_refused():
    with pytest.raises(ValueError, match="asks for 4096 devices"):
        mesh_lib.build_mesh(mesh_lib.MeshShape(64, 64))


class _Fake:
    shape = {"data": 2, "model": 4}


class _Cfg:
    num_heads, num_kv_heads = 8, 2


def test_rules_split_heads_and_mlp_columns():
    mesh, cfg = _Fake(), _Cfg()
    assert mesh_lib.param_spec("layers.0.attn.q_proj.kernel.value", (32, 64), mesh, cfg) == P(None, "model")
    assert mesh_lib.param_spec("layers.0.attn.o_proj.kernel", (64, 32), mesh, cfg) == P("model", None)
    assert mesh_lib.param_spec("layers.1.mlp.up_proj.kernel", (32, 64), mesh, cfg) == P(None, "model")
    assert mesh_lib.param_spec("layers.1.mlp.down_proj.kernel", (64, 32), mesh, cfg) == P("model", None)
    # 2 KV heads cannot be split 4 ways: k/v stay whole rather than cut a head
    assert mesh_lib.param_spec("layers.0.attn.k_proj.kernel", (32, 16), mesh, cfg) == P(None, None)
    assert mesh_lib.param_spec("lm_head.kernel", (32, 257), mesh, cfg) == P(None, None)  # 257 % 4
    assert mesh_lib.param_spec("layers.0.input_norm.weight", (32,), mesh, cfg) == P(None)


def test_device_memory_cap_parses(monkeypatch):
    assert mesh_lib.parse_bytes("2GiB") == 2 * 2**30 and mesh_lib.parse_bytes("100KiB") == 102400
    monkeypatch.setenv("MVJAX_DEVICE_MEMORY", "lots")
    with pytest.raises(ValueError, match="MVJAX_DEVICE_MEMORY='lots' is invalid"):
        mesh_lib.device_memory()


def test_padded_rows_change_no_score(make_config):
    """A batch rounded up to the data axis adds masked rows: scores, perplexity and statistics are
    those of the unpadded batch (one device, so only the padding differs)."""
    from mvjax.analysis.dims import PromptEnergy, add_energy
    from mvjax.analysis.evaluate import Encoded, Scorer, perplexity
    from mvjax.model import init_model

    model = init_model(make_config(vocab_size=32), 0)
    rng = np.random.default_rng(0)
    items = [Encoded(tuple(int(t) for t in rng.integers(1, 32, 5 + i)), ((3, 4), (5,)), 2, 0, None)
             for i in range(3)]
    rows = rng.integers(1, 32, (3, 16))
    got = []
    for B in (3, 8):
        energy = {}
        ll, hits = Scorer(model, B).run(items, PromptEnergy(frozenset({"q_rot"})),
                                        lambda r, v, energy=energy: energy.update(add_energy(energy or None, r)))
        got.append((ll, hits, energy["q_rot"][0], perplexity(model, rows, batch_size=B)[0]))
    (ll3, h3, e3, p3), (ll8, h8, e8, p8) = got
    assert h3 == h8 and e3.count == e8.count
    np.testing.assert_allclose(np.concatenate(ll3), np.concatenate(ll8), rtol=1e-6)
    np.testing.assert_allclose(e3.sumsq, e8.sumsq, rtol=1e-6)
    assert p3 == pytest.approx(p8, rel=1e-6)


def test_compute_dtype_keeps_statistics_float32(make_config):
    """bfloat16 compute (the accelerator default) on the same float32 parameters; the statistics
    reach the host as float32 sums, and ``auto`` is float32 on CPU."""
    import jax

    from mvjax.analysis.dims import PromptEnergy
    from mvjax.analysis.evaluate import Encoded, Scorer
    from mvjax import model as model_lib
    from mvjax.model import init_model

    assert jax.default_backend() != "cpu" or model_lib.compute_dtype("auto") == "float32"
    with pytest.raises(ValueError, match="--dtype 'float16' is invalid"):
        model_lib.compute_dtype("float16")
    model = init_model(make_config(vocab_size=32), 0)
    half = model_lib.with_compute_dtype(model, "bfloat16")
    assert half.cfg.dtype == "bfloat16" and half.layers[0].attn.q_proj.kernel[...].dtype == np.float32
    seen = []
    item = Encoded((1, 5, 7, 9), ((3, 4),), 1, 0, None)
    Scorer(half, 2).run([item], PromptEnergy(frozenset({"q_rot"})), lambda r, v: seen.append(r))
    assert seen[0]["q_rot"][0].sumsq.dtype == np.float32
    full = Scorer(model, 2).run([item])[0][0][0]
    assert abs(Scorer(half, 2).run([item])[0][0][0] - full) < 0.5  # same model, coarser arithmetic


SCRIPT = r"""
import contextlib, io, json, os, sys
from pathlib import Path
import jax
from mvjax.checkpoint import save_model
from mvjax.cli import main
from mvjax.config import ModelConfig
from mvjax.model import init_model
from mvjax.tokenizers import ByteTokenizer

tmp, meshes = Path(sys.argv[1]), sys.argv[2].split(";")
cfg = ModelConfig(vocab_size=257, hidden_size=32, num_layers=2, num_heads=8, num_kv_heads=8,
                  mlp_hidden=64, head_dim=4, max_seq_len=128, init_std=0.2)
md = tmp / "m"
save_model(md, init_model(cfg, 0), ByteTokenizer())
out = {"devices": jax.device_count(), "results": {}, "generated": {}}

def run(argv):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = main(argv)
    return rc, o.getvalue(), e.getvalue()

for mesh in meshes:
    for exp, extra in (("disrupt", ["--conditions", "table", "--seeds", "0"]), ("quantize", [])):
        where = tmp / f"{exp}-{mesh}"
        rc, _, err = run(["experiment", exp, "--model", str(md), "--out", str(where), "--quick",
                          "--n", "2", "--mesh", mesh, "--batch-size", "3", *extra])
        assert rc == 0, err[-2000:]
        out["results"].setdefault(exp, {})[mesh] = json.loads((where / "results.json").read_text())
    rc, text, err = run(["generate", "--model", str(md), "--prompt", "hello wor",
                         "--max-new-tokens", "12", "--mesh", mesh])
    assert rc == 0, err[-2000:]
    out["generated"][mesh] = text

# a parameter and cache sharding seen from inside: 1/8 of the heads per device on model=8
from flax import nnx
from mvjax import mesh as mesh_lib
from mvjax.load import load_pretrained
from mvjax.model import KVCache
model, _ = load_pretrained(md)
m = mesh_lib.place_model(model, "data=1,model=8")
with mesh_lib.active(m):
    cache = jax.jit(lambda: KVCache.empty(cfg, 2, 16))()
out["q_shard"] = list(model.layers[0].attn.q_proj.kernel[...].sharding.shard_shape((32, 32)))
out["cache_shard"] = list(cache.k[0].sharding.shard_shape(cache.k[0].shape))

# a cap below the whole model but above a 1/8 share: refused unsharded, runs sharded
os.environ["MVJAX_DEVICE_MEMORY"] = "100KiB"
gen = ["generate", "--model", str(md), "--prompt", "hello wor", "--max-new-tokens", "12"]
out["capped_whole"] = run(gen)[0::2]
rc, text, err = run(gen + ["--mesh", "data=1,model=8"])
out["capped_sharded"] = [rc, text]
print(json.dumps(out))
"""

SKIP = {"seconds", "provenance", "git_sha"}


def _differences(a, b, path: str = "", tol: float = 1e-5) -> list:
    """Where two results.json differ: floats beyond ``tol`` (relative above 1), anything else at
    all (accuracies, counts, hit strings, chosen dims)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) - SKIP != set(b) - SKIP:
            return [(path, "keys", sorted(set(a) ^ set(b)))]
        return [d for k in a if k not in SKIP for d in _differences(a[k], b[k], f"{path}.{k}", tol)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(path, "length")]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]", tol)]
    if isinstance(a, float) and isinstance(b, float):
        return [] if abs(a - b) <= tol * max(1.0, abs(a)) else [(path, a, b)]
    return [] if a == b else [(path, a, b)]


def test_differences_catch_a_changed_accuracy():
    a = {"conditions": {"massive": {"acc": 0.5, "hits": "101", "ppl": 250.0}}, "seconds": 1.0}
    b = json.loads(json.dumps(a)) | {"seconds": 9.0}
    assert _differences(a, b) == []
    b["conditions"]["massive"]["ppl"] = 250.0 * (1 + 2e-6)
    assert _differences(a, b) == []
    b["conditions"]["massive"]["hits"] = "100"
    assert _differences(a, b) == [(".conditions.massive.hits", "101", "100")]


@pytest.mark.slow
def test_every_mesh_gives_one_devices_results(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=JAX_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env.pop("MVJAX_DEVICE_MEMORY", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), ";".join(MESHES)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    for exp, by_mesh in out["results"].items():
        ref = by_mesh[MESHES[0]]
        assert len(ref["conditions"]) >= 4
        for mesh in MESHES[1:]:
            assert _differences(ref, by_mesh[mesh]) == [], (exp, mesh)
    tokens = set(out["generated"].values())
    assert len(tokens) == 1 and len(next(iter(tokens))) > len("hello wor")
    assert out["q_shard"] == [32, 4] and out["cache_shard"] == [2, 16, 1, 4]
    rc, err = out["capped_whole"]
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "--mesh data=1,model=" in err and "MVJAX_DEVICE_MEMORY" in err
    assert out["capped_sharded"][0] == 0 and out["capped_sharded"][1] == out["generated"][MESHES[0]]


def _model_dir(tmp_path: Path) -> Path:
    from mvjax.checkpoint import save_model
    from mvjax.config import ModelConfig
    from mvjax.model import init_model
    from mvjax.tokenizers import ByteTokenizer

    cfg = ModelConfig(vocab_size=257, hidden_size=32, num_layers=2, num_heads=8, num_kv_heads=8,
                      mlp_hidden=64, head_dim=4, max_seq_len=128, init_std=0.2)
    return save_model(tmp_path / "m", init_model(cfg, 0), ByteTokenizer())


def _disrupt_argv(model_dir: Path, out: Path) -> list[str]:
    return ["-m", "mvjax.cli", "experiment", "disrupt", "--model", str(model_dir), "--out", str(out),
            "--quick", "--n", "2", "--conditions", "table", "--seeds", "0", "--batch-size", "3"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start_two(argv: list[str], port: int) -> list[subprocess.Popen]:
    procs = []
    for i in range(2):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
                   JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                   JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i), JAX_COMPILATION_CACHE_DIR=JAX_CACHE)
        procs.append(subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


@pytest.mark.slow
def test_two_processes_match_one_and_resume_after_a_death(tmp_path):
    """2 processes × 2 CPU devices (jax.distributed over gloo, --mesh data=2,model=2: items split
    across the processes, heads within each) give one process's results.json. Process 1 is
    killed once the first piece is saved (process 0 then waits on it and is stopped too); the
    same command started again resumes from process 0's pieces and finishes with the same numbers."""
    import time

    from mvjax.analysis.resume import resume_dir

    model_dir = _model_dir(tmp_path)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=JAX_CACHE)
    one = subprocess.run([sys.executable, *_disrupt_argv(model_dir, tmp_path / "one")], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    reference = json.loads((tmp_path / "one" / "results.json").read_text())

    out = tmp_path / "two"
    argv = _disrupt_argv(model_dir, out) + ["--distributed", "--mesh", "data=2,model=2"]
    procs = _start_two(argv, _free_port())
    deadline = time.time() + 600
    while not list(resume_dir(out).glob("*.pkl")) and time.time() < deadline:
        if procs[0].poll() is not None or procs[1].poll() is not None:
            for p in procs:
                p.kill()
            pytest.fail("\n---\n".join(p.communicate()[1][-1500:] for p in procs))
        time.sleep(0.2)
    procs[1].kill()
    procs[0].kill()
    for p in procs:
        p.communicate()
    assert not (out / "results.json").exists()

    procs = _start_two(argv, _free_port())
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
    assert "resuming:" in results[0][0]  # process 0 found the pieces saved before the kill
    assert _differences(reference, json.loads((out / "results.json").read_text())) == []
    assert not resume_dir(out).exists()


def _script_json(script: str, tmp_path: Path, devices: int) -> dict:
    """Run ``script`` (argv[1] = tmp_path) on ``devices`` fake CPU devices; its last stdout line."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=JAX_CACHE)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


ROPE_CAUSE_SCRIPT = r"""
import dataclasses, json, shutil, sys
from pathlib import Path
from mvjax.analysis.experiments.rope_cause.presets import PRESETS
from mvjax.analysis.experiments.rope_cause.run import analyze_arm, train_arms
out = Path(sys.argv[1])
preset = dataclasses.replace(PRESETS["test"], arms=("rope",), gap_every=0)
assert train_arms(preset, out / "a", resume=False)
shutil.copytree(out / "a", out / "b")
analyze_arm(preset, out / "a" / "arms" / "rope")
analyze_arm(preset, out / "b" / "arms" / "rope", mesh="data=2,model=2")
print(json.dumps({k: [json.loads((out / d / "arms" / "rope" / f"{k}.json").read_text()) for d in "ab"]
                  for k in ("tasks", "disrupt")}))
"""


@pytest.mark.slow
def test_rope_cause_scoring_on_a_mesh_gives_one_devices_numbers(tmp_path):
    """rope-cause --mesh: the held-out task scores and claim (5)'s disruption of an arm's final
    model, placed on a 2×2 mesh of 4 CPU devices, equal the one-device numbers."""
    out = _script_json(ROPE_CAUSE_SCRIPT, tmp_path, devices=4)
    for name, (one, meshed) in out.items():
        assert _differences(one, meshed) == [], name
    assert out["disrupt"][0]["accuracy"]["massive"]["contextual"]["n"] > 0


ANALYZE_SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
from mvjax.analysis.analyze import AnalyzeConfig, analyze_to_dir
from mvjax.checkpoint import save_model
from mvjax.config import ModelConfig
from mvjax.model import init_model
from mvjax.tokenizers import ByteTokenizer
out = Path(sys.argv[1])
cfg = ModelConfig(vocab_size=257, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  mlp_hidden=64, max_seq_len=64, bos_id=256, init_std=0.2)
model = save_model(out / "m", init_model(cfg, 0), ByteTokenizer())
res = {}
for mesh in (None, "data=4", "data=3"):
    r = analyze_to_dir(AnalyzeConfig(model=str(model), out=out / str(mesh), tokens=7 * 48, seq_len=48,
                                     batch_size=2, figures=False, mesh=mesh), progress=False)
    res[str(mesh)] = r.to_json()
print(json.dumps(res))
"""


@pytest.mark.slow
def test_analyze_on_a_data_mesh_gives_one_devices_statistics(tmp_path):
    """analyze --mesh data=N: windows split over N of 8 CPU devices (the batch of 2 rounded up to
    4 and 3, padded rows masked) give one device's statistics, verdicts and first-token mass."""
    out = _script_json(ANALYZE_SCRIPT, tmp_path, devices=8)
    one = out["None"]
    assert one["data"]["n_sequences"] == 7 and len(one["first_token_mass"]) == 2
    for mesh in ("data=4", "data=3"):
        assert _differences(one, out[mesh]) == [], mesh


def test_analyze_refuses_a_model_axis():
    from mvjax.analysis.analyze import AnalyzeConfig

    with pytest.raises(ValueError, match="--mesh data=N"):
        AnalyzeConfig(mesh="data=2,model=2")
