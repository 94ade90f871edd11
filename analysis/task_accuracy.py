"""Accuracy of a model on mixture episodes (``mvjax.data.mixture``): contextual vs parametric.

Scoring is exact match under greedy decoding, computed teacher-forced in one forward pass: the
answer is right iff at every answer position the argmax of the logits is the answer's token —
the same tokens greedy generation would emit, without a decode loop. Each row is BOS + prompt +
answer, right-padded (causal attention: padding after the answer cannot change it). Every task is
reported with its chance level (``Episode.chance``) so small models are read against it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx

from mvjax.data.mixture import Episode
from mvjax.tokenizers import Tokenizer


def episode_rows(tok: Tokenizer, episodes: Sequence[Episode], max_len: int
                 ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(tokens N×L, answer-target mask N×L, kept episode indices). ``mask[i, t]`` marks the
    positions whose next-token prediction must equal ``tokens[i, t + 1]``. Episodes longer than
    ``max_len`` are dropped (their indices are missing from ``kept``)."""
    rows, spans, kept = [], [], []
    for i, ep in enumerate(episodes):
        prompt, answer = tok.encode(ep.prompt), tok.encode(ep.answer)
        ids = [tok.bos_id] + prompt + answer
        if len(ids) > max_len or not answer:
            continue
        rows.append(ids)
        spans.append((1 + len(prompt) - 1, len(ids) - 1))  # predict answer[j] at prompt end + j
        kept.append(i)
    L = max((len(r) for r in rows), default=1)
    tokens = np.zeros((len(rows), L), np.int32)
    mask = np.zeros((len(rows), L), bool)
    for j, (r, (a, b)) in enumerate(zip(rows, spans)):
        tokens[j, :len(r)] = r
        mask[j, a:b] = True
    return tokens, mask, kept


def score(model, tok: Tokenizer, episodes: Sequence[Episode], batch_size: int = 32
          ) -> dict[str, Any]:
    """{"tasks": {task: {kind, n, accuracy, chance}}, "kinds": {kind: {n, accuracy, chance}},
    "dropped": episodes too long for the model}. Chance of a kind = mean of its episodes'."""
    tokens, mask, kept = episode_rows(tok, episodes, model.cfg.max_seq_len)
    graphdef, state = nnx.split(model)

    @jax.jit
    def predict(state, x):
        return nnx.merge(graphdef, state)(x).logits.argmax(-1)

    correct = np.zeros(len(kept), bool)
    for s in range(0, len(kept), batch_size):
        x = tokens[s:s + batch_size]
        pad = batch_size - len(x)
        xp = np.concatenate([x, np.zeros((pad, x.shape[1]), np.int32)]) if pad else x
        pred = np.asarray(predict(state, xp))[:len(x)]
        m = mask[s:s + batch_size]
        target = np.concatenate([x[:, 1:], np.zeros((len(x), 1), np.int32)], axis=1)
        correct[s:s + len(x)] = np.all((pred == target) | ~m, axis=1)
    by_task: dict[str, list] = defaultdict(list)
    for ok, i in zip(correct, kept):
        by_task[episodes[i].task].append((bool(ok), episodes[i]))
    tasks = {t: {"kind": v[0][1].kind, "n": len(v), "accuracy": float(np.mean([o for o, _ in v])),
                 "chance": float(np.mean([e.chance for _, e in v]))} for t, v in by_task.items()}
    kinds: dict[str, Any] = {}
    for kind in ("contextual", "parametric"):
        v = [(o, e) for t in by_task.values() for o, e in t if e.kind == kind]
        if v:
            kinds[kind] = {"n": len(v), "accuracy": float(np.mean([o for o, _ in v])),
                           "chance": float(np.mean([e.chance for _, e in v]))}
    return {"tasks": tasks, "kinds": kinds, "dropped": len(episodes) - len(kept),
            "scoring": "exact match of every answer token under greedy (argmax) decoding, "
                       "teacher-forced in one pass"}
