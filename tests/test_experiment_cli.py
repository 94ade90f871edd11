"""``mvjax experiment disrupt|quantize``: bad inputs fail in one line before any model loads; the
whole command runs end to end on a tiny saved model (slow)."""

from __future__ import annotations

import json

import pytest

from mvjax.cli import main


def _one_line_error(capsys, argv, msg):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "\n" not in err


@pytest.mark.parametrize("experiment", ["disrupt", "quantize"])
def test_bad_task_files(tmp_path, capsys, experiment):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "choices": [" a", " b"], "answer": " c"}) + "\n")
    base = ["experiment", experiment, "--model", "does-not-matter", "--out", str(tmp_path / "o")]
    _one_line_error(capsys, base + ["--tasks", str(empty)], "is empty")
    _one_line_error(capsys, base + ["--tasks", str(bad)], "not among the choices")
    _one_line_error(capsys, base + ["--tasks", str(tmp_path / "missing.jsonl")], "does not exist")


@pytest.mark.parametrize("experiment", ["disrupt", "quantize"])
def test_output_checked_before_loading(tmp_path, capsys, experiment, monkeypatch):
    """A folder of someone's files is refused as --out before the model is loaded."""
    import mvjax.analysis.experiments.common

    monkeypatch.setattr(mvjax.analysis.experiments.common, "load_pretrained",
                        lambda *a, **k: pytest.fail("model loaded"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["experiment", experiment, "--out", str(mine)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a results set" in err


def test_bad_disrupt_options(tmp_path, capsys):
    base = ["experiment", "disrupt", "--model", "x", "--out", str(tmp_path)]
    _one_line_error(capsys, base + ["--sites", "v,k"], "site 'v' is invalid")
    _one_line_error(capsys, base + ["--sites", "q_rot,k"], "same side of RoPE")
    _one_line_error(capsys, base + ["--seeds", "a"], "--seeds")


@pytest.mark.slow
def test_disrupt_and_quantize_end_to_end(tmp_path):
    from mvjax.checkpoint import save_model
    from mvjax.config import ModelConfig
    from mvjax.model import init_model
    from mvjax.tokenizers import ByteTokenizer

    cfg = ModelConfig(vocab_size=257, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      mlp_hidden=48, head_dim=8, max_seq_len=2048, init_std=0.2)
    model_dir = save_model(tmp_path / "m", init_model(cfg, 0), ByteTokenizer())
    user = tmp_path / "mine.jsonl"
    user.write_text(json.dumps({"prompt": "ab", "choices": [" a", " b"], "answer": " b"}) + "\n"
                    + json.dumps({"prompt": "xy", "target": "z"}) + "\n")
    for exp in ("disrupt", "quantize"):
        out = tmp_path / exp
        assert main(["experiment", exp, "--model", str(model_dir), "--out", str(out), "--quick",
                     "--n", "2", "--tasks", str(user)]) == 0
        r = json.loads((out / "results.json").read_text())
        assert r["experiment"] == exp and r["git_sha"]
        assert r["provenance"]["command"].startswith(f"mvjax experiment {exp} --model")
        assert r["provenance"]["command"] in (out / "report.md").read_text()
        assert "mine" in r["tasks"] and r["tasks"]["mine"]["n_items"] == 2
        assert (out / "report.md").is_file() and (out / "accuracy_by_condition.png").is_file()
        for cond in r["conditions"].values():
            assert set(cond["tasks"]) == set(r["tasks"]) and cond["perplexity"] > 1
        if exp == "disrupt":
            assert {"original", "massive", "first_token_kept", "q_only", "k_only", "lowest_norm",
                    "random_s0", "random_s1", "random_s2", "energy_matched_s0"} <= set(r["conditions"])
            assert r["dims"]["massive_dims"]["k_rot"]
            assert "| task (metric" in (out / "report.md").read_text()
        else:  # every kept twin read twice, and drawn
            assert {"keep_act_int4_token_post", "keep_act_int4_token_post_exact"} <= {c["name"] for c in r["claims"]}
            assert (out / "keeping_massive.png").is_file()


# ---------------------------------------------------------------- the built-in tasks fit the model


def _byte_model(where, max_seq_len: int):
    """A tiny byte model whose context is ``max_seq_len`` tokens."""
    from mvjax.checkpoint import save_model
    from mvjax.config import ModelConfig
    from mvjax.model import init_model
    from mvjax.tokenizers import ByteTokenizer

    cfg = ModelConfig(vocab_size=257, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      mlp_hidden=48, head_dim=8, max_seq_len=max_seq_len, init_std=0.2, bos_id=256)
    return save_model(where, init_model(cfg, 0), ByteTokenizer())


@pytest.fixture(scope="module")
def ctx256_model(tmp_path_factory):
    """The shipped tiny configs' context: max_seq_len 256."""
    return _byte_model(tmp_path_factory.mktemp("ctx256") / "m", 256)


def _args(model_dir, *tasks, quick=True):
    import argparse

    return argparse.Namespace(model=str(model_dir), quick=quick, tasks=[str(t) for t in tasks],
                              n=None, seed=0, batch_size=8)


@pytest.mark.parametrize("quick", [True, False])
def test_builtin_tasks_are_fitted_to_the_context(ctx256_model, capsys, quick):
    """A built-in task the model's context cannot hold used to stop the run ("a prompt of 256
    tokens … shorten the task"): it is left out, said on stderr and recorded in the preset."""
    from mvjax.analysis.evaluate import _cont_pad, bucket, encode_task
    from mvjax.analysis.experiments.common import load_model_and_tasks

    model, tok, tasks, p = load_model_and_tasks(_args(ctx256_model, quick=quick))
    encoded = [e for t in tasks for e in encode_task(tok, t)]
    pad = _cont_pad(max(len(c) for e in encoded for c in e.conts))
    assert all(bucket(len(e.prompt)) + pad <= 256 for e in encoded)  # what Scorer checks
    assert tasks and "passkey_128" in p["tasks_left_out"]
    assert not {t.name for t in tasks} & set(p["tasks_left_out"])
    err = capsys.readouterr().err
    assert "left out built-in task(s) passkey_128" in err and "max_seq_len 256" in err
    assert p["ppl_len"] <= 256


def test_task_file_that_cannot_fit_is_named(tmp_path):
    """A task file is never cut: an item that fits only with its own short continuation, not
    with another file's long one (every continuation is padded alike), is named."""
    from mvjax.analysis.experiments.common import load_model_and_tasks

    near = tmp_path / "near.jsonl"  # 101 tokens: bucket 128, + 4 fits 200, + 128 does not
    near.write_text(json.dumps({"prompt": "ab" * 50, "choices": [" a", " b"], "answer": " a"})
                    + "\n")
    wide = tmp_path / "wide.jsonl"  # bucket 32 + a 100-token target padded to 128 fits 200
    wide.write_text(json.dumps({"prompt": "q", "target": "x" * 100}) + "\n")
    model = _byte_model(tmp_path / "m", 200)
    with pytest.raises(ValueError) as e:
        load_model_and_tasks(_args(model, near, wide))
    msg = str(e.value)
    assert "task near item 1" in msg and "in task wide" in msg and "max_seq_len 200" in msg


@pytest.mark.slow
def test_disrupt_quick_runs_on_a_256_token_model(ctx256_model, tmp_path):
    """The shipped tiny configs (and rope-cause's arms) can be disrupted: the quick preset leaves
    out what does not fit, and results.json records it."""
    out = tmp_path / "d"
    assert main(["experiment", "disrupt", "--model", str(ctx256_model), "--out", str(out),
                 "--quick", "--n", "2", "--conditions", "table"]) == 0
    r = json.loads((out / "results.json").read_text())
    left = r["run"]["preset"]["tasks_left_out"]
    assert "passkey_128" in left and not set(left) & set(r["tasks"]) and r["tasks"]


@pytest.mark.parametrize("flags, msg", [
    (["--quick", "--n", "1000000000"], "--n 1000000000 is too large"),
    (["--batch-size", "1000000000"], "--batch-size 1000000000 is too large"),
    (["--seeds", "-1"], "--seeds '-1' is invalid"),
    (["--seeds", "0,-2"], "--seeds '0,-2' is invalid"),
])
def test_out_of_range_disrupt_flags_are_refused_before_loading(tmp_path, capsys, monkeypatch, flags, msg):
    """A huge --n (ran until killed), a huge --batch-size (a 954 GiB numpy allocation) and a
    negative seed (refused only after the 20 s unmodified pass, naming no flag) fail in one line
    naming the flag, before the model loads."""
    import mvjax.analysis.experiments.common

    monkeypatch.setattr(mvjax.analysis.experiments.common, "load_pretrained",
                        lambda *a, **k: pytest.fail("model loaded"))
    _one_line_error(capsys, ["experiment", "disrupt", "--out", str(tmp_path / "o"), *flags], msg)
    assert not (tmp_path / "o").exists()
