"""Held-out retrieval over training: answer loss and greedy exact match of contextual episodes.

Why: the step at which an arm learns in-context retrieval is a result of the rope-cause
experiment (does RoPE learn it earlier than NoPE or ALiBi; together with K's concentration?), and
finding a recipe that learns it at all needs the curve, not only the final accuracy. Scoring is the
one of ``analysis.task_accuracy`` (teacher-forced greedy exact match), plus the mean negative
log-likelihood per answer token, which moves long before exact match does.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from mvjax.analysis.task_accuracy import episode_rows
from mvjax.data.mixture import Episode
from mvjax.tokenizers import Tokenizer


def make_answer_fn(graphdef) -> Callable:
    """``f(params, tokens) -> (argmax ids, per-token NLL of the next token)``, jitted."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    @jax.jit
    def answer_fn(params, tokens):
        logits = nnx.merge(graphdef, params)(tokens).logits
        nxt = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
        nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, nxt[..., None], -1)[..., 0]
        return logits.argmax(-1), nll
    return answer_fn


class RetrievalProbe:
    """Fixed held-out episodes, encoded once; ``__call__(params)`` scores them per task."""

    def __init__(self, graphdef, tok: Tokenizer, episodes: Sequence[Episode], max_len: int,
                 batch_size: int = 50):
        self.tokens, self.mask, kept = episode_rows(tok, episodes, max_len)
        self.tasks = np.array([episodes[i].task for i in kept])
        self.batch_size = batch_size
        self.fn = make_answer_fn(graphdef)

    def __call__(self, params) -> dict[str, Any]:
        correct, nll = [], []
        for s in range(0, len(self.tokens), self.batch_size):
            x, m = self.tokens[s:s + self.batch_size], self.mask[s:s + self.batch_size]
            pad = self.batch_size - len(x)
            xp = np.concatenate([x, np.zeros((pad, x.shape[1]), np.int32)]) if pad else x
            pred, tok_nll = (np.asarray(a)[:len(x)] for a in self.fn(params, xp))
            target = np.concatenate([x[:, 1:], np.zeros((len(x), 1), np.int32)], axis=1)
            correct.append(np.all((pred == target) | ~m, axis=1))
            nll.append((tok_nll * m).sum(1) / m.sum(1))
        correct, nll = np.concatenate(correct), np.concatenate(nll)
        out = {}
        for task in sorted(set(self.tasks)) + ["all"]:
            sel = np.ones(len(self.tasks), bool) if task == "all" else self.tasks == task
            out[task] = {"n": int(sel.sum()), "exact": float(correct[sel].mean()),
                         "answer_nll": float(nll[sel].mean())}
        return out


def first_step_at(curve: Sequence[dict], key: str, level: float) -> int | None:
    """The first logged step whose ``curve[i][key]`` reaches ``level`` (None if never)."""
    for point in curve:
        if point[key] >= level:
            return int(point["step"])
    return None
