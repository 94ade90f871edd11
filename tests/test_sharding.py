"""The mesh and partition rules, and the property that matters: training on 8 (fake) devices, data
parallel or FSDP, gives the losses of 1 device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mvjax import sharding as shd

REPO = Path(__file__).resolve().parents[1]
JAX_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/mvjax-test-jax-cache")


def test_mesh_uses_all_devices_and_rejects_bad_shapes():
    mesh = shd.make_mesh()
    assert mesh.axis_names == shd.AXES and mesh.size == jax.device_count()
    with pytest.raises(ValueError, match="does not cover"):
        shd.make_mesh(data=jax.device_count() + 1, fsdp=1)


class _FakeMesh:
    shape = {"data": 2, "fsdp": 4}


def test_rules_shard_kernels_and_replicate_uneven_dims():
    mesh = _FakeMesh()
    assert shd.spec_for("layers.0.attn.q_proj.kernel", (32, 32), mesh) == P("fsdp", None)
    assert shd.spec_for("opt.1.0.mu.layers.3.mlp.down_proj.kernel", (64, 32), mesh) == P("fsdp", None)
    assert shd.spec_for("embed.embedding", (257, 32), mesh) == P(None, "fsdp")
    assert shd.spec_for("embed.embedding", (257, 30), mesh) == P(None, None)  # 30 % 4 != 0
    assert shd.spec_for("layers.0.input_norm.weight", (32,), mesh) == P(None)
    assert shd.spec_for("opt.1.0.count", (), mesh) == P()
    with pytest.raises(ValueError, match="no partition rule"):
        shd.spec_for("layers.0.attn.mystery", (4, 4), mesh)


def test_batch_must_divide_devices():
    mesh = shd.make_mesh()
    shd.check_batch(8 * mesh.size, mesh)
    if mesh.size > 1:
        with pytest.raises(ValueError, match="multiple"):
            shd.check_batch(mesh.size + 1, mesh)


SCRIPT = """
import json, sys
import jax
from mvjax.train.config import ExperimentConfig
from mvjax.train.loop import train
from mvjax.train.metrics import read_metrics
out = {"runs": []}
for i, exp in enumerate(json.loads(sys.argv[1])):
    run = f"{sys.argv[2]}/{i}"
    train(ExperimentConfig.from_dict(exp), run)  # first: a multi-process run joins before jax starts
    out["runs"].append([r["loss"] for r in read_metrics(run + "/metrics.jsonl")
                        if "loss" in r and "event" not in r])
out["devices"] = jax.device_count()
print(json.dumps(out))
"""


def _experiment(mesh_data: int, mesh_fsdp: int) -> dict:
    return {
        "model": dict(vocab_size=257, hidden_size=32, num_layers=2, num_heads=4, mlp_hidden=64,
                      max_seq_len=64, bos_id=256),
        "data": dict(source="tinyshakespeare", tokenizer="byte", seq_len=32, batch_size=8, eval_rows=8),
        "train": dict(steps=5, log_every=1, eval_every=0, checkpoint_every=0, progress=False,
                      mesh_data=mesh_data, mesh_fsdp=mesh_fsdp, optim={"lr": 3e-3, "warmup_steps": 2}),
    }


def _run(devices: int, exps: list[dict], out: Path) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=JAX_CACHE,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(exps), str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_eight_devices_match_one_device(tmp_path):
    one = _run(1, [_experiment(-1, 1)], tmp_path / "one")
    eight = _run(8, [_experiment(8, 1), _experiment(2, 4)], tmp_path / "eight")
    assert one["devices"] == 1 and eight["devices"] == 8
    reference = one["runs"][0]
    assert len(reference) == 5 and reference[-1] < reference[0]
    for losses in eight["runs"]:  # data parallel 8x1, then FSDP 2x4
        np.testing.assert_allclose(losses, reference, rtol=0, atol=1e-5)


def test_two_processes_match_one_process(tmp_path):
    """A real multi-process run: 2 processes × 4 CPU devices joined by jax.distributed over gloo
    (train.distributed=true, coordinator from the environment) train the same losses as one process,
    and process 0 alone writes the log and the final model."""
    import socket

    reference = _run(1, [_experiment(-1, 1)], tmp_path / "one")["runs"][0]
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    exp = _experiment(-1, 1)
    exp["train"]["distributed"] = True
    procs = []
    for i in range(2):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
                   JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                   JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i), JAX_COMPILATION_CACHE_DIR=JAX_CACHE)
        procs.append(subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps([exp]),
                                       str(tmp_path / "two")], cwd=REPO, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
    lead = json.loads(results[0][0].strip().splitlines()[-1])
    assert lead["devices"] == 8
    np.testing.assert_allclose(lead["runs"][0], reference, rtol=0, atol=1e-5)
    assert (tmp_path / "two" / "0" / "model" / "config.json").is_file()
