"""Held-out retrieval over training: answer loss and greedy exact match of contextual episodes.

Why: the step at which an arm learns in-context retrieval is a result of the rope-cause
experiment (does RoPE learn it earlier than NoPE or ALiBi; together with K's concentration?), and
finding a recipe that learns it at all needs the curve, not only the final accuracy. Scoring is the
one of ``analysis.task_accuracy`` (teacher-forced greedy exact match), plus the mean negative
log-likelihood per answer token, which moves long before exact match does.

"Does retrieval arrive with the concentration?" is asked on the inputs retrieval runs on: the probe
also logs Q/K norms on a batch packed from the same episodes (``EPISODE_KEY``; the natural-text
curves of the training log are 10% of the mixture), and, every ``gap_every`` steps, the
massive-vs-random disruption gap on them (``GAP_KEY``, from the caller's ``gap`` function).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mvjax.analysis.task_accuracy import episode_rows
from mvjax.data.mixture import Episode
from mvjax.tokenizers import Tokenizer
from mvjax.train.metrics import make_concentration_fn


def make_answer_fn(graphdef) -> Callable:
    """``f(params, tokens) -> (argmax ids, per-token NLL of the next token)``, jitted."""
    @jax.jit
    def answer_fn(params, tokens):
        logits = nnx.merge(graphdef, params)(tokens).logits
        nxt = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
        nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, nxt[..., None], -1)[..., 0]
        return logits.argmax(-1), nll
    return answer_fn


EPISODE_KEY = "episode_norms"  # probe record: {site: L×H×D norms M} on the packed episode rows
GAP_KEY = "gap"  # probe record: the caller's disruption gap on the episodes at this step
EPISODE_SITES = ("q_rot", "k_rot")


def packed_rows(tok: Tokenizer, episodes: Sequence[Episode], row_len: int, n_rows: int) -> np.ndarray:
    """``n_rows`` × ``row_len`` tokens: the episodes (BOS, prompt, answer) one after another, cut
    into full rows, so every position is a real episode token (no padding in the norms). Fewer
    rows if the episodes run out (one shorter row if they fill none)."""
    stream: list[int] = []
    for ep in episodes:
        if len(stream) >= row_len * n_rows:
            break
        stream += [tok.bos_id, *tok.encode(ep.prompt), *tok.encode(ep.answer)]
    n = min(n_rows, len(stream) // row_len)
    if n == 0:  # fewer episode tokens than one row: one shorter row
        return np.asarray(stream, np.int32)[None]
    return np.asarray(stream[:n * row_len], np.int32).reshape(n, row_len)


def top_dim_share(M_LxHxD: np.ndarray) -> np.ndarray:
    """Per (layer, head): the top dim's share of the head's energy ΣM² (means the same at every
    head size, unlike the λ × mean count)."""
    E = np.asarray(M_LxHxD, np.float64) ** 2
    return E.max(-1) / np.maximum(E.sum(-1), 1e-30)


class RetrievalProbe:
    """Fixed held-out episodes, encoded once; ``__call__(params, step)`` scores them per task,
    logs the Q/K norms on ``concentration_rows`` packed episode rows (0: off) and, at steps that
    are multiples of ``gap_every`` (0: never), ``gap(model)`` on the merged model."""

    def __init__(self, graphdef, tok: Tokenizer, episodes: Sequence[Episode], max_len: int,
                 batch_size: int = 50, concentration_rows: int = 0,
                 gap: Callable[[Any], dict] | None = None, gap_every: int = 0):
        self.tokens, self.mask, kept = episode_rows(tok, episodes, max_len)
        self.tasks = np.array([episodes[i].task for i in kept])
        self.chance = np.array([episodes[i].chance for i in kept], np.float64)
        self.batch_size = batch_size
        self.fn = make_answer_fn(graphdef)
        self.graphdef, self.gap, self.gap_every = graphdef, gap, gap_every
        self.rows = packed_rows(tok, episodes, max_len, concentration_rows) if concentration_rows else None
        self.conc = make_concentration_fn(graphdef) if self.rows is not None else None

    def __call__(self, params, step: int | None = None) -> dict[str, Any]:
        out = self.retrieval(params)
        if self.conc is not None:
            norms = jax.device_get(self.conc(params, self.rows)["norms"])
            out[EPISODE_KEY] = {s: np.asarray(norms[s]).tolist() for s in EPISODE_SITES}
        if self.gap is not None and self.gap_every and step is not None and step % self.gap_every == 0:
            out[GAP_KEY] = self.gap(nnx.merge(self.graphdef, params))
        return out

    def retrieval(self, params) -> dict[str, Any]:
        """Greedy exact match and answer NLL per task (and ``all``)."""
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
                         "answer_nll": float(nll[sel].mean()), "chance": float(self.chance[sel].mean())}
        return out


def episode_point(norms: dict[str, Any], lam: float) -> dict[str, Any]:
    """The concentration on the episodes at one step: per site, the top dim's energy share (max
    over layers and heads; head-size free) and the paper's count of M > λ × the head's mean M."""
    out = {}
    for site, M in norms.items():
        M = np.asarray(M, np.float64)
        out[f"episode_{site}_top_share_max"] = float(top_dim_share(M).max())
        out[f"episode_{site}_lambda_count"] = int((M > lam * M.mean(-1, keepdims=True)).sum())
    return out


def first_step_at(curve: Sequence[dict], key: str, level: float) -> int | None:
    """The first logged step whose ``curve[i][key]`` reaches ``level`` (None if never)."""
    for point in curve:
        if point[key] >= level:
            return int(point["step"])
    return None
