"""Score tasks and perplexity under a probe (none, an intervention, a statistics probe).

Every item is one prefill of its prompt into a KV cache, then each continuation (choice or target)
runs as a decode-phase chunk on that same cache, so a prompt is computed once however many choices
it has, and interventions follow their KV-cache rule (``mvjax.interventions``) exactly as in
generation. Prompts are left-padded into length buckets (positions still start at 0 at the first
real token) and batches have a fixed row count, so one compilation serves every batch of a bucket;
the probe is a traced argument, so every intervention with the same structure (e.g. all controls of
the disruption experiment) shares those compilations.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mvjax import mesh as mesh_lib
from mvjax.data.tasks.base import Task, accuracy_summary, rank_correct
from mvjax.model import KVCache, Transformer


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One item as token ids: prompt (BOS first when the tokenizer has one) and continuations."""

    prompt: tuple[int, ...]
    conts: tuple[tuple[int, ...], ...]
    n_choices: int
    answer: int | None  # index into conts
    target: int | None  # index into conts


def encode_task(tok, task: Task) -> list[Encoded]:
    out = []
    bos = [] if tok.bos_id is None else [tok.bos_id]
    for it in task.items:
        conts = [tuple(tok.encode(c)) for c in it.choices]
        target = None
        if it.target is not None:
            if it.target in it.choices:
                target = it.choices.index(it.target)
            else:
                conts.append(tuple(tok.encode(it.target)))
                target = len(conts) - 1
        if any(len(c) == 0 for c in conts):
            raise ValueError(f"task {task.name}: a choice or target encodes to no tokens: "
                             "give non-empty text")
        out.append(Encoded(tuple(bos + tok.encode(it.prompt)), tuple(conts), len(it.choices),
                           it.answer_index, target))
    return out


def _cont_pad(n: int) -> int:
    """Continuation length a batch is padded to: a power of two, at least 4."""
    return max(4, 1 << (n - 1).bit_length())


def check_fits(tok, task: Task, max_seq_len: int) -> None:
    """Refuse, before scoring, an item whose prompt and continuations (padded as ``Scorer`` pads
    them) exceed ``max_seq_len``, naming the item, the continuation and their lengths."""
    for n, (it, enc) in enumerate(zip(task.items, encode_task(tok, task)), 1):
        extra = it.target is not None and it.target not in it.choices
        texts = [*it.choices] + ([it.target] if extra else [])
        P = len(enc.prompt)
        for text, ids in zip(texts, enc.conts):
            if bucket(P) + _cont_pad(len(ids)) > max_seq_len:
                what = "target" if text == it.target else "choice"
                short = text if len(text) <= 40 else text[:37] + "..."
                raise ValueError(f"task {task.name} item {n}: its {what} {short!r} ({len(text)} "
                                 f"characters, {len(ids)} tokens) with its prompt ({P} tokens) "
                                 f"exceeds the model's max_seq_len {max_seq_len}: shorten it")


def fit_to_context(tok, builtin: list[Task], user: list[Task], max_seq_len: int
                   ) -> tuple[list[Task], list[str]]:
    """(the built-in tasks that fit the model's context, the names of those left out). A run pads
    every continuation to the longest choice or target of any task (``Scorer``'s one shape), so a
    task fits when each prompt's bucket plus that padding is at most ``max_seq_len``; a built-in
    task with a prompt too long, or whose long continuation pushes a task file over, is left out
    whole (its items are made for their length). Task files are never cut: an item that cannot
    fit is refused naming the task and the item."""
    enc = {t.name: encode_task(tok, t) for t in [*builtin, *user]}
    cont = {name: max(len(c) for e in items for c in e.conts) for name, items in enc.items()}
    prompt = {name: max(bucket(len(e.prompt)) for e in items) for name, items in enc.items()}
    user_cont = max((cont[t.name] for t in user), default=1)
    kept = list(builtin)
    while True:
        pad = _cont_pad(max([user_cont, *(cont[t.name] for t in kept)]))
        out = {t.name for t in kept if prompt[t.name] + pad > max_seq_len}
        if (not out and kept and pad > _cont_pad(user_cont)
                and any(prompt[t.name] + pad > max_seq_len for t in user)):
            out = {max(kept, key=lambda t: cont[t.name]).name}
        if not out:
            break
        kept = [t for t in kept if t.name not in out]
    widest = max([*user, *kept], key=lambda t: cont[t.name], default=None)
    for task in user:
        for n, e in enumerate(enc[task.name], 1):
            if bucket(len(e.prompt)) + pad > max_seq_len:
                raise ValueError(
                    f"task {task.name} item {n}: its prompt ({len(e.prompt)} tokens, padded to "
                    f"{bucket(len(e.prompt))}) with every continuation padded to {pad} tokens (the "
                    f"longest choice or target of any task, in task {widest.name}) exceeds the "
                    f"model's max_seq_len {max_seq_len}: shorten the prompt, or score task "
                    f"{widest.name} in a run of its own")
    names = {t.name for t in kept}
    return kept, [t.name for t in builtin if t.name not in names]


def longest_continuation(encoded: dict) -> int:
    """Tokens in the longest choice or target of any task (one continuation shape for a run)."""
    return max(len(c) for items in encoded.values() for e in items for c in e.conts)


def bucket(n: int) -> int:
    """Padded prompt length: the next power of two, at least 32. Each bucket is one compilation
    of the 30-layer forward (minutes on a CPU), which costs more than the padding; the generated
    tasks' prompts are sized to fit their power-of-two lengths exactly."""
    return max(32, 1 << (max(n, 1) - 1).bit_length())



def _lm_logits(model: Transformer, hidden):
    out = model.embed.attend(hidden) if model.lm_head is None else model.lm_head(hidden)
    return out.astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 6))
def _prefill(graphdef, state, tokens, valid, positions, probe, cache_len):
    model = nnx.merge(graphdef, state)
    cache = KVCache.empty(model.cfg, tokens.shape[0], cache_len)
    out = model(tokens, positions, attention_mask_BxT=valid, cache=cache, probe=probe, logits=False)
    last_lp = jax.nn.log_softmax(_lm_logits(model, out.hidden[:, -1]), axis=-1)
    return last_lp, out.cache, out.records


@functools.partial(jax.jit, static_argnums=(0,))
def _continue(graphdef, state, cache, last_lp, tokens, lengths, positions, probe, probe_state):
    """Sum of log-probabilities of each row's continuation and whether greedy decoding emits it."""
    model = nnx.merge(graphdef, state)
    C = tokens.shape[1]
    valid = jnp.arange(C)[None] < lengths[:, None]
    out = model(tokens, positions, attention_mask_BxT=valid, cache=cache, probe=probe,
                phase="decode", probe_state=probe_state, logits=False)
    lp = jax.nn.log_softmax(_lm_logits(model, out.hidden[:, :-1]), axis=-1)  # predicts tokens 1..C-1
    nxt = tokens[:, 1:]
    tok_lp = jnp.take_along_axis(lp, nxt[..., None], axis=-1)[..., 0]
    hit = jnp.argmax(lp, axis=-1) == nxt
    inner = jnp.arange(C - 1)[None] < (lengths - 1)[:, None]
    first_lp = jnp.take_along_axis(last_lp, tokens[:, :1], axis=-1)[:, 0]
    total = first_lp + jnp.sum(jnp.where(inner, tok_lp, 0.0), axis=1)
    greedy = (jnp.argmax(last_lp, axis=-1) == tokens[:, 0]) & jnp.all(hit | ~inner, axis=1)
    return total, greedy


class Scorer:
    """Runs encoded items through one model under any probe. On a model placed on a mesh
    (``mvjax.mesh.place_model``) the rows of each batch are split over its ``data`` axis: the
    batch is rounded up to a multiple of it, the extra rows are padding like any short batch's."""

    def __init__(self, model: Transformer, batch_size: int = 8, cont_len: int = 0):
        self.model = model
        self.cont_len = cont_len  # pad continuations to at least this (one shape for all tasks)
        self.graphdef, self.state = nnx.split(model)
        self.cfg = model.cfg
        self.mesh = mesh_lib.mesh_of(self.state)
        self.batch_size = mesh_lib.rows(batch_size, self.mesh)

    def run(self, items: list[Encoded], probe=None, on_records=None, progress=None):
        """(log-likelihoods, greedy hits): per item, one float / bool per continuation.
        ``on_records(records, valid_BxT)`` receives each prefill batch's probe records."""
        with mesh_lib.active(self.mesh):
            return self._run(items, probe, on_records, progress)

    def _run(self, items: list[Encoded], probe, on_records, progress):
        B, put = self.batch_size, functools.partial(mesh_lib.put_batch, mesh=self.mesh)
        longest = max(len(c) for e in items for c in e.conts)
        C = _cont_pad(max(longest, self.cont_len))  # continuations padded to a power of two
        order = sorted(range(len(items)), key=lambda i: len(items[i].prompt))
        ll: list[list[float]] = [[] for _ in items]
        hits: list[list[bool]] = [[] for _ in items]
        for start in range(0, len(order), B):
            idx = order[start: start + B]
            T = bucket(max(len(items[i].prompt) for i in idx))
            if T + C > self.cfg.max_seq_len:
                raise ValueError(f"a prompt of {T} tokens with continuations of up to {longest} "
                                 f"tokens exceeds the model's max_seq_len {self.cfg.max_seq_len}: "
                                 "shorten the task")
            tokens, valid, lens = np.zeros((B, T), np.int32), np.zeros((B, T), bool), np.zeros(B, np.int32)
            for r, i in enumerate(idx):
                p = items[i].prompt
                tokens[r, T - len(p):], valid[r, T - len(p):], lens[r] = p, True, len(p)
            positions = (np.arange(T)[None] - (T - lens)[:, None]).astype(np.int32)
            last_lp, cache, records = _prefill(self.graphdef, self.state, *put((tokens, valid, positions)),
                                               probe, T + C)
            if on_records is not None:
                on_records(mesh_lib.fetch(records), valid)
            state = records if probe is not None else None
            for j in range(max(len(items[i].conts) for i in idx)):
                ctoks, clen = np.zeros((B, C), np.int32), np.ones(B, np.int32)
                for r, i in enumerate(idx):
                    if j < len(items[i].conts):
                        c = items[i].conts[j]
                        ctoks[r, :len(c)], clen[r] = c, len(c)
                cpos = (lens[:, None] + np.arange(C)[None]).astype(np.int32)
                total, greedy = mesh_lib.fetch(_continue(
                    self.graphdef, self.state, cache, last_lp, *put((ctoks, clen, cpos)), probe, state))
                for r, i in enumerate(idx):
                    if j < len(items[i].conts):
                        ll[i].append(float(total[r]))
                        hits[i].append(bool(greedy[r]))
            if progress is not None:
                progress.update(len(idx))
        return ll, hits


RANKINGS = ("sum", "per_token")


def choice_scores(item: Encoded, ll_i, ranking: str = "sum") -> list[float]:
    """The item's choice scores: summed log-likelihood of each choice's tokens (``sum``, favours
    short choices) or its mean per token (``per_token``, length-normalised)."""
    if ranking not in RANKINGS:
        raise ValueError(f"ranking={ranking!r} is invalid: use one of {RANKINGS}")
    scores = list(ll_i[:item.n_choices])
    return scores if ranking == "sum" else [x / len(c) for x, c in zip(scores, item.conts)]


def score_task(items: list[Encoded], ll, hits, chance: float | None,
               keep: Iterable[int] | None = None, ranking: str = "sum",
               exact_chance: float = 0.0) -> dict[str, Any]:
    """{"rank": summary by ``ranking``, "rank_sum", "rank_per_token", "exact": summary} over the
    items in ``keep`` (default all). ``exact_chance``: what a model that ignores the binding but
    copies any listed value would get by greedy exact match (0 for keys it cannot guess)."""
    keep = list(range(len(items))) if keep is None else list(keep)
    out: dict[str, Any] = {}
    ranked = [i for i in keep if items[i].n_choices]
    if ranked:
        for r in RANKINGS:
            out[f"rank_{r}"] = accuracy_summary(
                [rank_correct(choice_scores(items[i], ll[i], r), items[i].answer) for i in ranked], chance)
        out["rank"] = out[f"rank_{ranking}"]
    exact = [hits[i][items[i].target] for i in keep if items[i].target is not None]
    if exact:
        out["exact"] = accuracy_summary(exact, exact_chance) | {
            "hits": "".join("1" if h else "0" for h in exact)}  # per item, for paired statistics
    return out


NLL_CHUNK = 64  # positions per LM-head call in perplexity: B×64×V logits at a time


def token_nll(model: Transformer, hidden_BxTxD, next_BxT):
    """-log p(next token) at every position. The LM head runs on ``NLL_CHUNK`` positions at a
    time, so a large vocabulary never materializes B×T×V logits (Gemma 3: 262,144 × 4 bytes per
    position, 268 MB for one 256-token row, twice over with the log-softmax)."""
    B, T, D = hidden_BxTxD.shape
    n = -(-T // NLL_CHUNK)
    pad = n * NLL_CHUNK - T
    h = jnp.pad(hidden_BxTxD, ((0, 0), (0, pad), (0, 0))).reshape(B, n, NLL_CHUNK, D)
    t = jnp.pad(next_BxT, ((0, 0), (0, pad))).reshape(B, n, NLL_CHUNK)

    def chunk(args):
        hc, tc = args
        lp = jax.nn.log_softmax(_lm_logits(model, hc), axis=-1)
        return -jnp.take_along_axis(lp, tc[..., None], axis=-1)[..., 0]

    nll = jax.lax.map(chunk, (jnp.swapaxes(h, 0, 1), jnp.swapaxes(t, 0, 1)))
    return jnp.swapaxes(nll, 0, 1).reshape(B, n * NLL_CHUNK)[:, :T]


@functools.partial(jax.jit, static_argnums=(0,))
def _ppl_batch(graphdef, state, tokens, real_B, probe):
    """Summed NLL of the real rows (``real_B``; the others pad the batch to the data axis and are
    fully masked, so they reach no sum) and the probe's attention-mass records."""
    model = nnx.merge(graphdef, state)
    valid = jnp.broadcast_to(real_B[:, None], tokens.shape)
    out = model(tokens, attention_mask_BxT=valid, probe=probe, logits=False)
    nll = token_nll(model, out.hidden[:, :-1], tokens[:, 1:])
    sink = out.records.get("attn", {})
    return jnp.sum(jnp.where(real_B[:, None], nll, 0.0)), sink


def perplexity(model: Transformer, rows: np.ndarray, probe=None, batch_size: int = 2):
    """(perplexity of rows N×T — every token after the first predicted —, per-layer mean attention
    mass on key slot 0 or None). Rows must be unpadded (BOS first). On a mesh, batches are rounded
    up to a multiple of its data axis with masked rows."""
    graphdef, state = nnx.split(model)
    mesh = mesh_lib.mesh_of(state)
    B = mesh_lib.rows(batch_size, mesh)
    total, count, sinks = 0.0, 0, []
    for i in range(0, len(rows), B):
        real = np.asarray(rows[i: i + B], np.int32)
        chunk = np.zeros((B, real.shape[1]), np.int32)
        chunk[:len(real)] = real
        with mesh_lib.active(mesh):
            nll, sink = mesh_lib.fetch(_ppl_batch(graphdef, state, *mesh_lib.put_batch(
                (chunk, np.arange(B) < len(real)), mesh), probe))
        total += float(nll)
        count += real.shape[0] * (real.shape[1] - 1)
        if sink:
            sinks.append((real.shape[0], [float(np.mean(sink[l])) for l in sorted(sink)]))
    sink_mass = None
    if sinks:
        n = sum(w for w, _ in sinks)
        sink_mass = (np.sum([w * np.asarray(s) for w, s in sinks], axis=0) / n).tolist()
    return float(np.exp(total / count)), sink_mass
