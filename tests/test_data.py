"""The data pipeline: sources, tokenizers, packing, deterministic resumable streams, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mvjax.data import (DataConfig, TokenStream, build_data, build_tokenizer, load_texts, pack_rows,
                        resolve_source, split_documents, tokenize_documents, train_bpe)
from mvjax.data import sources
from mvjax.tokenizers import ByteTokenizer, HFTokenizer, check_vocab, load_tokenizer



@pytest.fixture(scope="module")
def shakespeare() -> str:
    """The real corpus, shipped inside the package."""
    return resolve_source("tinyshakespeare")


def _docs(n: int) -> list[str]:
    """Documents whose every 12-character piece names its document (``<007> <007> ...``)."""
    return [f"<{i:03d}> " * (i % 7 + 3) for i in range(n)]


def _jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.write_text("\n".join(json.dumps({field: t, "id": i}) for i, t in enumerate(texts)))
    return path


# ----------------------------------------------------------------------------- sources
def test_txt_jsonl_parquet_and_directory_load(tmp_path):
    import datasets

    (tmp_path / "a.txt").write_text("first doc\nline two\n\nsecond doc\n\n\n\n  \n\nthird")
    assert load_texts(str(tmp_path / "a.txt")) == ["first doc\nline two", "second doc", "third"]
    assert load_texts(str(tmp_path / "a.txt"), doc_separator="\n") == [
        "first doc", "line two", "second doc", "third"]
    _jsonl(tmp_path / "b.jsonl", ["j0", "j1", ""], field="body")
    assert load_texts(str(tmp_path / "b.jsonl"), text_field="body") == ["j0", "j1"]
    datasets.Dataset.from_dict({"text": ["p0", "p1", "p2"]}).to_parquet(str(tmp_path / "c.parquet"))
    assert load_texts(str(tmp_path / "c.parquet")) == ["p0", "p1", "p2"]
    sub = tmp_path / "dir"
    sub.mkdir()
    (sub / "2.txt").write_text("later")
    _jsonl(sub / "1.jsonl", ["earlier"])
    (sub / "notes.md").write_text("ignored")
    assert load_texts(str(sub)) == ["earlier", "later"]


def test_named_corpus_resolves_and_env_overrides(tmp_path, monkeypatch, shakespeare):
    assert Path(shakespeare).parent == sources.PACKAGED_CORPORA  # ships with the package
    texts = load_texts("tinyshakespeare")
    assert len(texts) > 1000 and texts[0].startswith("First Citizen")
    (tmp_path / "tinyshakespeare.txt").write_text("mine\n\nours")
    monkeypatch.setenv("MVJAX_DATA", str(tmp_path))
    assert load_texts("tinyshakespeare") == ["mine", "ours"]
    monkeypatch.setattr(sources, "_named_dirs", lambda: [tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match="MVJAX_DATA"):
        resolve_source("tinyshakespeare")


def test_hub_name_goes_to_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake(name, *config, split):
        calls.append((name, *config, split))
        if name == "nobody/missing":
            raise ConnectionError("Couldn't reach the hub\nmore detail")
        return datasets.Dataset.from_dict({"content": ["hub doc a", "hub doc b"]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert load_texts("someone/corpus", text_field="content", split="validation") == [
        "hub doc a", "hub doc b"]
    assert load_texts("someone/corpus:small", text_field="content") == ["hub doc a", "hub doc b"]
    assert calls == [("someone/corpus", "validation"), ("someone/corpus", "small", "train")]
    with pytest.raises(FileNotFoundError, match="neither a local path nor a loadable hub dataset"):
        load_texts("nobody/missing")


def test_bad_sources_fail_with_clear_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_texts(str(tmp_path / "absent.txt"))
    (tmp_path / "a.txt").write_text("some text")
    (tmp_path / "empty.txt").write_text("\n\n   \n\n")
    with pytest.raises(ValueError, match="no non-blank documents"):
        load_texts(str(tmp_path / "empty.txt"))
    _jsonl(tmp_path / "d.jsonl", ["x"], field="body")
    with pytest.raises(ValueError, match=r"no field 'text'.*'body'"):
        load_texts(str(tmp_path / "d.jsonl"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        load_texts(str(tmp_path / "latin1.txt"))
    (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\n{"text": oops\n')
    with pytest.raises(ValueError, match="could not read .*broken.jsonl as json"):
        load_texts(str(tmp_path / "broken.jsonl"))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        load_texts(str(tmp_path / "emptydir"))
    with pytest.raises(ValueError, match="doc_separator"):
        load_texts(str(tmp_path / "a.txt"), doc_separator="")


# ------------------------------------------------------------------------------ config
def test_data_config_round_trip_and_validation():
    cfg = DataConfig(source="x.jsonl", seq_len=32, packing="concat")
    assert DataConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert DataConfig().source == "tinyshakespeare"
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['seqlen'\]"):
        DataConfig.from_dict({"seqlen": 32})
    with pytest.raises(ValueError, match="data.packing"):
        DataConfig(packing="random")
    with pytest.raises(ValueError, match="data.holdout_fraction"):
        DataConfig(holdout_fraction=1.0)
    with pytest.raises(ValueError, match="data.seq_len"):
        DataConfig(seq_len=0)


# ---------------------------------------------------------------------------- packing
def _stream(seed=0, packing="bos_first", n_tokens=1001, seq_len=10, batch_size=3):
    tokens = np.random.default_rng(99).integers(0, 256, n_tokens).astype(np.int32)
    tokens[0] = 256
    return TokenStream(tokens, seq_len=seq_len, batch_size=batch_size, seed=seed, packing=packing,
                       bos_id=256)


def test_one_epoch_covers_every_window_once():
    s = _stream(packing="concat", batch_size=4)  # 100 windows, 25 batches
    rows = np.concatenate([s.next_batch() for _ in range(25)])
    assert s.epoch == 1 and s.state()["position"] == 0
    expected = pack_rows(s.tokens, np.arange(100), 10, "concat", None)
    key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_array_equal(key(rows), key(expected))
    # consecutive windows overlap by one token, so every token after the first is a target once
    np.testing.assert_array_equal(expected[:, 1:].ravel(), s.tokens[1:1001])


def test_bos_first_is_concat_with_a_sink_at_position_zero():
    a, b = _stream(packing="bos_first"), _stream(packing="concat")
    for _ in range(5):
        ra, rb = a.next_batch(), b.next_batch()
        assert (ra[:, 0] == 256).all() and not (rb[:, 0] == 256).all()
        np.testing.assert_array_equal(ra[:, 1:], rb[:, 1:])


def test_exact_resume_across_epoch_boundary():
    s = _stream(batch_size=7)  # 100 windows: batch 15 straddles the first epoch boundary
    for _ in range(12):
        s.next_batch()
    state = json.loads(json.dumps(s.state()))
    expected = [s.next_batch() for _ in range(20)]
    assert s.epoch >= 2
    r = _stream(batch_size=7)
    r.restore(state)
    for want in expected:
        np.testing.assert_array_equal(r.next_batch(), want)
    assert r.state() == s.state()


def test_restore_refuses_foreign_or_malformed_state():
    with pytest.raises(ValueError, match="fingerprint .* does not match"):
        _stream(seed=0).restore(_stream(seed=1).state())
    with pytest.raises(ValueError, match="fingerprint .* does not match"):
        _stream().restore(_stream(n_tokens=1002).state())
    with pytest.raises(ValueError, match="expected a mapping"):
        _stream().restore({"epoch": 0})
    good = _stream().state()
    with pytest.raises(ValueError, match="out of range"):
        _stream().restore({**good, "position": 100})


def test_stream_needs_enough_tokens_and_a_bos():
    with pytest.raises(ValueError, match="seq_len=10 is larger than the train split"):
        _stream(n_tokens=10)
    with pytest.raises(ValueError, match="needs a bos_id"):
        TokenStream(np.arange(50), seq_len=4, batch_size=1, packing="bos_first")
    with pytest.raises(ValueError, match="no BOS id"):
        tokenize_documents(ByteTokenizer(special_tokens=False), ["abc"])


# ------------------------------------------------------------------------- build_data
def test_build_data_deterministic_and_seeded(shakespeare):
    cfg = DataConfig(seq_len=64, batch_size=4)
    s1, e1, tok = build_data(cfg)
    s2, e2, _ = build_data(cfg)
    s3, e3, _ = build_data(DataConfig(seq_len=64, batch_size=4, seed=1))
    b1, b2, b3 = ([s.next_batch() for _ in range(3)] for s in (s1, s2, s3))
    for x, y in zip(b1, b2):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(b1, b3))
    assert b1[0].dtype == np.int32 and b1[0].shape == (4, 65)
    np.testing.assert_array_equal(e1, e3)  # the eval split does not move with the seed
    assert e1.dtype == np.int32 and e1.shape == (64, 65) and (e1[:, 0] == tok.bos_id).all()
    assert all((b[:, 0] == tok.bos_id).all() for b in b1)


def test_build_data_resume_is_exact(shakespeare):
    cfg = DataConfig(seq_len=32, batch_size=5, seed=3)
    s, _, _ = build_data(cfg)
    for _ in range(4):
        s.next_batch()
    state = s.state()
    want = [s.next_batch() for _ in range(3)]
    r, _, _ = build_data(cfg)
    r.restore(state)
    for w in want:
        np.testing.assert_array_equal(r.next_batch(), w)
    other, _, _ = build_data(DataConfig(seq_len=16, batch_size=5, seed=3))
    with pytest.raises(ValueError, match="different dataset"):
        other.restore(state)


def test_held_out_documents_never_reach_training(tmp_path):
    texts = _docs(200)
    train, held = split_documents(texts, 0.1)
    assert len(held) == 20 and sorted(train + held) == sorted(texts) and not set(train) & set(held)
    path = _jsonl(tmp_path / "docs.jsonl", texts)
    stream, evals, tok = build_data(DataConfig(source=str(path), seq_len=24, batch_size=2,
                                               holdout_fraction=0.1, eval_rows=8))
    bos = tok.bos_id
    segments = np.split(stream.tokens, np.flatnonzero(stream.tokens == bos))
    seen = {tok.decode(seg[1:]) for seg in segments if len(seg)}
    assert seen == set(train)
    assert 0 < evals.shape[0] <= 8
    for row in evals:
        for piece in np.split(row[1:], np.flatnonzero(row[1:] == bos)):
            text = tok.decode(piece[piece != bos])
            if len(text) > 12:  # long enough to identify its document
                assert any(text in h for h in held) and not any(text in t for t in train)


def test_single_document_is_split_by_position(tmp_path):
    text = "".join(f"line {i}\n" for i in range(400))
    train, held = split_documents([text], 0.25)
    assert train[0] + held[0] == text and len(held[0]) == pytest.approx(len(text) / 4, abs=1)
    (tmp_path / "one.txt").write_text(text)
    stream, evals, _ = build_data(DataConfig(source=str(tmp_path / "one.txt"), seq_len=16,
                                             holdout_fraction=0.25))
    assert stream.tokens.size == len(train[0]) + 1 and evals.shape[1] == 17
    _, none, _ = build_data(DataConfig(source=str(tmp_path / "one.txt"), seq_len=16,
                                       holdout_fraction=0.0))
    assert none.shape == (0, 17)


def test_seq_len_larger_than_data(tmp_path):
    path = _jsonl(tmp_path / "small.jsonl", _docs(20))
    with pytest.raises(ValueError, match="seq_len=100000 is larger than the train split"):
        build_data(DataConfig(source=str(path), seq_len=100000))
    with pytest.raises(ValueError, match="larger than the held-out split.*raise holdout_fraction"):
        build_data(DataConfig(source=str(path), seq_len=200, holdout_fraction=0.05))


# ---------------------------------------------------------------------------- tokenizers
@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory, shakespeare):
    from mvjax.cli import main

    out = tmp_path_factory.mktemp("bpe")
    assert main(["tokenizer", "train", "--data", "tinyshakespeare", "--vocab-size", "512",
                 "--out", str(out), "--force"]) == 0
    return out


def test_bpe_trained_by_cli_round_trips_and_compresses(bpe_dir):
    tok = load_tokenizer(bpe_dir)
    assert isinstance(tok, HFTokenizer) and tok.vocab_size <= 512 and tok.bos_id == 0
    english = "\n\n".join(load_texts("tinyshakespeare")[-50:])
    assert len(tok.encode(english)) < 0.7 * len(english.encode())  # merges learned: fewer ids
    sample = english[-200:] + "\n\n  naïve — ünïcödé ✓ 12345\ttab\r\n"
    ids = tok.encode(sample)
    assert tok.decode(ids) == sample and tok.bos_id not in ids
    with pytest.raises(ValueError, match="tokenizer vocab 5\\d\\d > model vocab_size 257"):
        check_vocab(tok, 257)
    with pytest.raises(ValueError, match="tokenizer vocab 257 > model vocab_size 256"):
        check_vocab(ByteTokenizer(), 256)


def test_build_data_with_trained_tokenizer(bpe_dir):
    stream, evals, tok = build_data(DataConfig(tokenizer=str(bpe_dir), seq_len=48, batch_size=2))
    batch = stream.next_batch()
    assert (batch[:, 0] == 0).all() and (evals[:, 0] == 0).all()
    assert batch.max() < tok.vocab_size and evals.max() < tok.vocab_size
    again = build_tokenizer(str(bpe_dir / "tokenizer.json"))
    assert again.encode("To be, or not") == tok.encode("To be, or not")


def test_build_tokenizer_specs_and_errors(tmp_path):
    assert isinstance(build_tokenizer("byte"), ByteTokenizer)
    tok = build_tokenizer("bpe:300", _docs(50))
    assert tok.vocab_size <= 300 and tok.decode(tok.encode("<007> <042>\n")) == "<007> <042>\n"
    assert build_tokenizer("bpe:300", _docs(50)).tok.to_str() == tok.tok.to_str()  # resumable
    tok.tok.save(str(tmp_path / "bare.json"))  # no tokenizer_meta.json beside it
    assert build_tokenizer(str(tmp_path / "bare.json")).bos_id == tok.bos_id
    with pytest.raises(FileNotFoundError, match="not found"):
        build_tokenizer(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="bpe:N with an integer"):
        build_tokenizer("bpe:lots", _docs(3))
    with pytest.raises(ValueError, match="needs texts"):
        build_tokenizer("bpe:300")
    with pytest.raises(ValueError, match="at least 257"):
        train_bpe(_docs(3), 100)


def test_cli_stats_and_errors(tmp_path, capsys, bpe_dir, shakespeare):
    from mvjax.cli import main

    assert main(["data", "stats", "--seq-len", "32", "--packing", "concat"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["vocab_size"] == 257 and report["eval_rows"] == 64
    assert report["train_rows_per_epoch"] > 1000
    assert main(["data", "stats", "--data", str(tmp_path / "nope.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--vocab-size", "512", "--out", str(bpe_dir)]) == 2
    assert "--force" in capsys.readouterr().err


def test_bos_windows_read_every_token_once_behind_a_bos():
    """Analysis/evaluation windows: BOS + the next seq_len−1 stream tokens, consecutive, capped at
    max_rows; from_end takes the last ones; without BOS the whole window is stream."""
    from mvjax.data.packing import bos_windows

    ids = list(range(10, 30))  # 20 tokens
    rows = bos_windows(ids, 5, 99, max_rows=10)
    assert rows.shape == (5, 5) and rows.dtype == np.int32 and (rows[:, 0] == 99).all()
    assert rows[:, 1:].ravel().tolist() == ids[:20]
    assert bos_windows(ids, 5, 99, max_rows=2)[:, 1:].ravel().tolist() == ids[:8]
    assert bos_windows(ids, 5, 99, max_rows=2, from_end=True)[:, 1:].ravel().tolist() == ids[-8:]
    assert bos_windows(ids, 6, None, max_rows=9).ravel().tolist() == ids[:18]
    assert bos_windows(ids, 40, 99, max_rows=3).shape == (0, 40)
