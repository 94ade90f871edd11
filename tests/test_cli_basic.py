"""Model directories (save_model/load_model) and the basic CLI: --help, version, info, demo."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import yaml

import mvjax
from conftest import tiny_config
from mvjax.checkpoint import CONFIG_FILE, PARAMS_DIR, is_model_dir, load_model, save_model
from mvjax.cli import main
from mvjax.config import ModelConfig
from mvjax.model import init_model
from mvjax.tokenizers import ByteTokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny model directory (rope/nope mix, untied head, with a byte tokenizer)."""
    model = init_model(tiny_config(("rope", "nope"), tie_embeddings=False, vocab_size=257), seed=5)
    d = save_model(tmp_path_factory.mktemp("m") / "model", model, ByteTokenizer())
    return d, model


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err, err
    return err


# ----------------------------------------------------------------------------- model dirs
def test_save_load_round_trip_identical_logits(model_dir):
    """load_model rebuilds the same config and parameters: logits are bit-identical."""
    d, model = model_dir
    assert is_model_dir(d) and (d / CONFIG_FILE).is_file() and (d / "byte_tokenizer.json").is_file()
    assert not any(".partial-" in p.name for p in d.parent.iterdir())  # no work dir left beside it
    loaded = load_model(d)
    assert loaded.cfg == model.cfg
    toks = jax.random.randint(jax.random.key(0), (2, 8), 0, 257)
    np.testing.assert_array_equal(loaded(toks).logits, model(toks).logits)


def test_save_overwrites_existing(tmp_path):
    """Saving into an existing model directory replaces it with the new model."""
    a = init_model(tiny_config("alibi"), seed=1)
    b = init_model(tiny_config("alibi", num_layers=1), seed=2)
    save_model(tmp_path / "m", a)
    save_model(tmp_path / "m", b)
    assert load_model(tmp_path / "m").cfg == b.cfg


def test_load_missing_dir(tmp_path):
    """A missing or non-model directory gives a one-line FileNotFoundError naming it."""
    for d in (tmp_path / "absent", tmp_path):
        with pytest.raises(FileNotFoundError) as e:
            load_model(d)
        assert str(d) in str(e.value) and "\n" not in str(e.value)


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_load_corrupt_params(model_dir, tmp_path):
    """Emptied parameter files give a one-line ValueError that names the params dir."""
    d = _copy(model_dir[0], tmp_path / "bad")
    import shutil
    shutil.rmtree(d / PARAMS_DIR)
    (d / PARAMS_DIR).mkdir()
    with pytest.raises(ValueError) as e:
        load_model(d)
    assert PARAMS_DIR in str(e.value) and "\n" not in str(e.value)


def test_load_params_for_other_config(model_dir, tmp_path):
    """Parameters written for another config refuse to load with a one-line ValueError."""
    d = _copy(model_dir[0], tmp_path / "other")
    cfg = ModelConfig.load(d / CONFIG_FILE)
    data = cfg.to_dict()
    data["mlp_hidden"] = 48
    (d / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError) as e:
        load_model(d)
    assert "\n" not in str(e.value) and "mlp.down_proj.kernel is stored with shape" in str(e.value)


def test_load_corrupt_config(model_dir, tmp_path):
    """A garbled config.json is a one-line ValueError, not a parser traceback."""
    d = _copy(model_dir[0], tmp_path / "garbled")
    (d / CONFIG_FILE).write_text('{"hidden_size": 32, "num_heads": [')
    with pytest.raises(ValueError) as e:
        load_model(d)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ CLI
def test_help(capsys):
    """mvjax --help exits 0 and lists the basic commands."""
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("version", "info", "demo"):
        assert cmd in out


def test_no_command_is_usage_error(capsys):
    """mvjax with no command is an argparse usage error (exit 2)."""
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2


# Ctrl-C while the command modules import jax: the import of ``jax`` sends this process SIGINT.
_CTRL_C_IN_IMPORT = """
import importlib.abc, os, signal, sys

class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "jax":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = ["mvjax", "version"]
from mvjax.cli import entry
entry()
"""


# Ctrl-C landing in a garbage-collector callback (as in jax's own, while it imports): Python prints
# "Exception ignored" and the interrupt used to be lost.
_CTRL_C_IN_GC = """
import gc, os, signal, sys

def ctrl_c(phase, info):
    if phase == "start" and not getattr(ctrl_c, "sent", False):
        ctrl_c.sent = True
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(100))  # the handler runs here, inside the callback

sys.argv = ["mvjax", "version"]
from mvjax.cli import entry
gc.callbacks.append(ctrl_c)  # the first collection comes while the commands import jax
entry()
"""


@pytest.mark.parametrize("script", [_CTRL_C_IN_IMPORT, _CTRL_C_IN_GC], ids=["import", "gc"])
def test_ctrl_c_while_starting_is_one_line_and_130(script):
    """Before ``main``'s handler is in place, a Ctrl-C used to print a 50-line traceback (or, in a
    gc callback, "Exception ignored" and the command ran on)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, MVJAX_HOST_MALLOC="default")  # no restart: the hooks stay in place
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [
        "mvjax version: interrupted by SIGINT while starting; nothing was written"], r.stderr


def test_version(capsys):
    """mvjax version prints mvjax, jax and flax versions and the backend."""
    assert main(["version"]) == 0
    out = capsys.readouterr().out
    import flax
    assert f"mvjax {mvjax.__version__}" in out and f"jax {jax.__version__}" in out
    assert f"flax {flax.__version__}" in out and "backend" in out


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_info_config_file(tmp_path, capsys, suffix):
    """mvjax info CONFIG prints the config (YAML by default) and its parameter count."""
    cfg = tiny_config(("rope", "alibi"))
    path = tmp_path / f"c{suffix}"
    cfg.save(path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    body, last = out.rstrip("\n").rsplit("\n", 1)
    assert ModelConfig.from_dict(yaml.safe_load(body)) == cfg
    assert last == f"# parameters: {cfg.num_params():,}"


def test_info_model_dir_json(model_dir, capsys):
    """mvjax info DIR --format json prints the directory's config as JSON."""
    d, model = model_dir
    assert main(["info", str(d), "--format", "json"]) == 0
    out = capsys.readouterr().out
    body, last = out.rstrip("\n").rsplit("\n", 1)
    assert ModelConfig.from_dict(json.loads(body)) == model.cfg
    assert last.startswith("# parameters:")


def test_info_gguf_and_binary_files(tmp_path, capsys):
    """info reads a .gguf's config; a binary file passed as a config is a one-line error naming it."""
    from conftest import write_tokenizer_gguf

    write_tokenizer_gguf(tmp_path / "m.gguf", block_count=2, context_length=64, embedding_length=32,
                         feed_forward_length=48, head_count=4, head_count_kv=2, vocab_size=300)
    assert main(["info", str(tmp_path / "m.gguf"), "--format", "json"]) == 0
    body = capsys.readouterr().out.rstrip("\n").rsplit("\n", 1)[0]
    cfg = ModelConfig.from_dict(json.loads(body))
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_kv_heads, cfg.vocab_size) == (2, 32, 2, 300)
    (tmp_path / "weights.bin").write_bytes(bytes(range(256)) * 4)
    assert main(["info", str(tmp_path / "weights.bin")]) == 2
    err = _one_line_error(capsys)
    assert "weights.bin is not a text config" in err


def test_info_missing_path(tmp_path, capsys):
    """mvjax info on a missing path exits 2 with a one-line message naming the path."""
    assert main(["info", str(tmp_path / "nowhere.yaml")]) == 2
    err = _one_line_error(capsys)
    assert err.startswith("mvjax info: error:") and "nowhere.yaml" in err


def test_info_invalid_config(tmp_path, capsys):
    """mvjax info on an invalid or garbled config exits 2 with a one-line message."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden_size: 32\nnum_heads: 5\n")
    assert main(["info", str(bad)]) == 2
    assert "num_heads=5" in _one_line_error(capsys)
    bad.write_text("hidden_size: [32\n")
    assert main(["info", str(bad)]) == 2
    _one_line_error(capsys)


def test_demo(capsys):
    """mvjax demo runs every registered scheme (the built-in three, and any a test registered);
    cache-vs-full logits agree to 1e-5 for each."""
    from mvjax.positional import SCHEME_REGISTRY

    assert main(["demo"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == set(SCHEME_REGISTRY) >= {"rope", "alibi", "nope"}
    for scheme, r in report.items():
        assert r["cache_vs_full_max_abs_diff"] <= 1e-5, scheme
        assert r["params"] > 0 and isinstance(r["continuation"], str)


def test_convert_owns_its_work_dir_and_checks_output_first(model_dir, tmp_path, capsys, monkeypatch):
    """A user's X.tmp survives `convert M X`; an output that cannot be written is refused in one
    line before the source is read."""
    d, _ = model_dir
    (tmp_path / "x.tmp").mkdir()
    (tmp_path / "x.tmp" / "mine.txt").write_text("keep")
    assert main(["convert", str(d), str(tmp_path / "x")]) == 0
    assert (tmp_path / "x.tmp" / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "x.tmp"]
    import mvjax.convert.cli

    monkeypatch.setattr(mvjax.convert.cli, "load_pretrained", lambda *a, **k: pytest.fail("source read first"))
    assert main(["convert", str(d), "/sys/mvjax-x"]) == 2
    assert "cannot write into" in _one_line_error(capsys)
