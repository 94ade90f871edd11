"""The training mixture: facts repeat, contextual answers occur only in their own prompt,
determinism and exact resume by seed, ratios; the episode scorer's answer masks."""

from __future__ import annotations

import numpy as np
import pytest

from mvjax.analysis.task_accuracy import episode_rows, score
from mvjax.data import DataConfig, TokenStream, build_data
from mvjax.data.mixture import (MixtureConfig, MixtureStream, eval_episodes, fact_table,
                                kv_episode, passkey_episode)
from mvjax.tokenizers import ByteTokenizer

TOK = ByteTokenizer()


def _stream(cfg: MixtureConfig, batch_size: int = 8, seq_len: int = 96) -> MixtureStream:
    text = np.frombuffer(b"To be, or not to be, that is the question. " * 200, np.uint8).astype(np.int32)
    base = TokenStream(text, seq_len=seq_len, batch_size=1, seed=0, bos_id=TOK.bos_id)
    return MixtureStream(base, TOK, cfg, batch_size)


def _decode_rows(batch: np.ndarray) -> list[str]:
    return [TOK.decode(r) for r in batch]


def test_facts_repeat_through_training_and_table_is_seeded():
    cfg = MixtureConfig(text=0.0, contextual=0.0, parametric=1.0, n_facts=8)
    rows = "".join(_decode_rows(np.concatenate([_stream(cfg).next_batch() for _ in range(4)])))
    table = fact_table(cfg)
    assert len({e for e, _ in table}) == 8
    counts = [rows.count(f"{e} lives in {p}\n") for e, p in table]
    assert min(counts) >= 2, counts  # every fact seen more than once in 32 rows
    assert fact_table(MixtureConfig(n_facts=8)) == table
    assert fact_table(MixtureConfig(n_facts=8, seed=1)) != table


def test_contextual_answers_occur_only_in_their_prompt():
    cfg = MixtureConfig()
    rng = np.random.default_rng(0)
    eps = [passkey_episode(rng, cfg) for _ in range(100)] + [kv_episode(rng, cfg) for _ in range(100)]
    for ep in eps:
        assert ep.answer in ep.prompt  # the prompt holds the answer ...
    passkeys = [e.answer for e in eps[:100]]
    assert len(set(passkeys)) >= 98  # ... and it is fresh per episode, nothing to memorize
    facts = " ".join(f"{e} {p}" for e, p in fact_table(cfg))
    assert not any(k in facts for k in passkeys)
    held = eval_episodes(cfg, 50)
    train_text = "".join(_decode_rows(np.concatenate(
        [_stream(MixtureConfig(text=0.0, parametric=0.0)).next_batch() for _ in range(8)])))
    ctx = [e for e in held if e.kind == "contextual"]
    assert len(ctx) == 50
    assert sum(e.prompt + e.answer in train_text for e in ctx) == 0  # eval episodes are unseen
    fact_eps = [e for e in held if e.kind == "parametric"]
    assert len(fact_eps) == cfg.n_facts and all(e.answer not in e.prompt for e in fact_eps)


def test_mixture_is_deterministic_resumable_and_follows_ratios():
    cfg = MixtureConfig(text=0.5, contextual=0.25, parametric=0.25, seed=3)
    a, b = _stream(cfg), _stream(cfg)
    first = [a.next_batch() for _ in range(3)]
    assert all(np.array_equal(x, b.next_batch()) for x in first)
    state = a.state()
    expected = [a.next_batch() for _ in range(2)]
    c = _stream(cfg)
    c.restore(state)
    assert all(np.array_equal(x, c.next_batch()) for x in expected)
    other = _stream(MixtureConfig(seed=4))
    assert not np.array_equal(other.next_batch(), first[0])
    with pytest.raises(ValueError, match="does not match"):
        other.restore(state)
    kinds = [a.row_kind(r) for r in range(2000)]
    assert abs(kinds.count("text") / 2000 - 0.5) < 0.05
    assert abs(kinds.count("parametric") / 2000 - 0.25) < 0.05
    batch = first[0]
    assert batch.shape == (8, 97) and (batch[:, 0] == TOK.bos_id).all()


def test_mixture_config_through_data_config():
    cfg = DataConfig(seq_len=64, batch_size=4, mixture={"text": 1, "contextual": 1, "parametric": 0})
    assert isinstance(cfg.mixture, MixtureConfig)
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    stream, evals, _ = build_data(cfg, progress=False)
    assert isinstance(stream, MixtureStream) and stream.next_batch().shape == (4, 65)
    assert evals.shape[1] == 65
    with pytest.raises(ValueError, match="ratios"):
        MixtureConfig(text=0, contextual=0, parametric=0)
    with pytest.raises(ValueError, match="unknown field"):
        DataConfig(mixture={"txt": 1.0})


def test_episode_rows_mark_exactly_the_answer_targets(make_config):
    cfg = MixtureConfig(n_facts=4)
    eps = eval_episodes(cfg, 3)
    tokens, mask, kept = episode_rows(TOK, eps, 400)
    assert kept == list(range(len(eps)))
    for row, m, ep in zip(tokens, mask, eps):
        targets = row[1:][m[:-1]]
        assert TOK.decode(targets) == ep.answer
        assert row[0] == TOK.bos_id and TOK.decode(row[1:1 + len(ep.prompt)]) == ep.prompt
    _, _, kept_short = episode_rows(TOK, eps, 30)
    assert len(kept_short) < len(eps)

    from mvjax.model import init_model

    model = init_model(make_config("rope", vocab_size=257, max_seq_len=400), 0)
    out = score(model, TOK, eps, batch_size=4)
    assert out["kinds"]["parametric"]["n"] == 4 and out["kinds"]["contextual"]["n"] == 3
    assert out["kinds"]["parametric"]["chance"] == pytest.approx(1 / cfg.n_places)
    assert out["kinds"]["contextual"]["accuracy"] == 0.0  # an untrained model copies nothing


def test_lead_in_questions_repeat_the_text_before_the_answer():
    cfg = MixtureConfig(question="lead_in")
    rng = np.random.default_rng(0)
    for ep in [passkey_episode(rng, cfg) for _ in range(20)] + [kv_episode(rng, cfg) for _ in range(20)]:
        lead = ep.prompt[-3:]  # the last characters before the answer ...
        assert lead + ep.answer in ep.prompt[:-3]  # ... precede the answer earlier in the prompt
    short = passkey_episode(np.random.default_rng(0), MixtureConfig())
    assert short.prompt.endswith("What is the pass key? ")
    with pytest.raises(ValueError, match="question"):
        MixtureConfig(question="long")


def test_copy_episodes_only_when_asked_and_old_streams_unchanged():
    base = _stream(MixtureConfig(text=0.0, parametric=0.0)).next_batch()
    same = _stream(MixtureConfig(text=0.0, parametric=0.0, copy=0.0, question="short"))
    assert np.array_equal(base, same.next_batch())  # the new fields at default: the same rows
    assert same.fingerprint == _stream(MixtureConfig(text=0.0, parametric=0.0)).fingerprint
    copying = _stream(MixtureConfig(text=0.0, parametric=0.0, copy=1.0, copy_len=8))
    assert copying.fingerprint != same.fingerprint
    for row in _decode_rows(copying.next_batch()):
        for episode in row.split("\n")[:-1]:  # the last one is cut at seq_len
            first, second = episode.lstrip(TOK.decode([TOK.bos_id])).split("|")
            assert first == second and 4 <= len(first) <= 8
    with pytest.raises(ValueError, match="copy"):
        MixtureConfig(copy=1.5)
