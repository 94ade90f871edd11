"""A training mixture: natural text, contextual episodes and parametric facts, row by row.

Why three kinds: the paper's claim is that massive Q/K dims carry *contextual* knowledge (what is in
the prompt) more than *parametric* knowledge (what is in the weights). A model trained from scratch
can only be tested on that if it learned both, so the mixture teaches both on purpose:

- ``text``: rows of the natural corpus (the ``TokenStream`` of ``DataConfig.source``).
- ``contextual``: synthetic episodes whose answer is drawn fresh for every episode and appears only
  in that episode's prompt — a passkey hidden in filler, or key→value recall from a short list.
  No weight can store it; only attention to the prompt can produce it.
- ``parametric``: statements from one seeded table of invented entity → attribute facts
  ("Vorlak lives in Quenmar"), the same table repeated through training so the facts live in the
  weights; they are asked without the fact in the prompt.

Every row is a pure function of (seed, row index): row ``r`` picks its kind with the ratios and
fills itself with episodes from a generator seeded by (seed, r). The stream state is the row count
plus the text stream's state, so a resume continues exactly. An episode is ``prompt + answer``, each
tokenized separately, so a scorer can ask the model for exactly the answer's tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, NamedTuple

import numpy as np

from mvjax.config import invalid, to_plain
from mvjax.tokenizers import Tokenizer

KINDS = ("text", "contextual", "parametric")
CONTEXTUAL_TASKS = ("passkey", "kv_recall")
QUESTIONS = ("short", "lead_in")
_COPY_ALPHABET = list("0123456789abcdefghijklmnopqrstuvwxyz")
# fields added after runs were made: left out of the stream fingerprint while at their default, so
# those runs still resume
_LATER_FIELDS = {"question": "short", "copy": 0.0, "copy_len": 16, "copy_symbols": 36,
                 "kv_queries": 1, "kv_sep": "="}
FACT_SEED_SALT = 0xFAC7  # the fact table depends on the mixture seed only, never on the row
_FILLER = ("The grass is green. ", "The sky is blue. ", "The sun is yellow. ", "Here we go. ",
           "There and back again. ", "The river runs on. ")
_SYLLABLES = ("ka", "lo", "mi", "ren", "tor", "va", "zel", "qu", "bri", "dan", "ost", "ulm", "fey",
              "gar", "nix", "pel", "sor", "thi", "wen", "yal")


@dataclasses.dataclass(frozen=True)
class MixtureConfig:
    """Ratios of the three row kinds (normalized; a zero drops a kind) and the synthetic tasks'
    sizes. n_facts entities map to one of n_places invented places (chance = 1/n_places);
    a passkey sits between 0..passkey_filler filler sentences on each side."""

    text: float = 0.5
    contextual: float = 0.25
    parametric: float = 0.25
    n_facts: int = 64
    n_places: int = 16
    passkey_digits: int = 5
    passkey_filler: int = 3
    kv_pairs: int = 6
    kv_value_digits: int = 3
    seed: int = 0
    # "short": the question names the key only ("What is the pass key? ", "ab? "); "lead_in": it
    # repeats the text just before the answer in the prompt ("... The pass key is ", "ab="), so a
    # head that matches the preceding tokens and copies what followed (induction) can answer.
    question: str = "short"
    # share of contextual episodes that are a random string then the same string again (training
    # only: every token of the repeat is predictable by content lookup alone, so they teach it densely)
    copy: float = 0.0
    copy_len: int = 16
    # the first copy_symbols of 0-9a-z: with few symbols (10: digits) one token rarely locates the
    # repeat, so copying needs a match on several preceding tokens, as the passkey and kv lead-ins do
    copy_symbols: int = 36
    # training rows only: a kv episode asks this many of its keys (each answered before the next
    # question), so retrieval targets are dense; held-out episodes always ask one
    kv_queries: int = 1
    # between a key and its value ("ab=123"); "" writes "ab123", so the key's last token is the
    # token just before the value, as in a copied string
    kv_sep: str = "="


    def __post_init__(self) -> None:
        ratios = (self.text, self.contextual, self.parametric)
        if any(not isinstance(r, (int, float)) or r < 0 for r in ratios) or sum(ratios) <= 0:
            invalid("data.mixture ratios", ratios, "use non-negative text/contextual/parametric "
                    "ratios with a positive sum, e.g. 0.5/0.25/0.25")
        for name in ("n_facts", "n_places", "passkey_digits", "kv_pairs", "kv_value_digits"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                invalid(f"data.mixture.{name}", v, "must be a positive integer")
        if not isinstance(self.passkey_filler, int) or self.passkey_filler < 0:
            invalid("data.mixture.passkey_filler", self.passkey_filler, "must be >= 0")
        if self.question not in QUESTIONS:
            invalid("data.mixture.question", self.question, f"use one of {QUESTIONS}")
        if not isinstance(self.copy, (int, float)) or not 0 <= self.copy <= 1:
            invalid("data.mixture.copy", self.copy, "must be a share in [0, 1]")
        if not isinstance(self.copy_len, int) or self.copy_len < 2:
            invalid("data.mixture.copy_len", self.copy_len, "must be an integer >= 2")
        if not isinstance(self.kv_queries, int) or not 1 <= self.kv_queries <= self.kv_pairs:
            invalid("data.mixture.kv_queries", self.kv_queries, "must be an integer in [1, kv_pairs]")
        if not isinstance(self.kv_sep, str) or any(c.isalnum() or c.isspace() for c in self.kv_sep):
            invalid("data.mixture.kv_sep", self.kv_sep, "use punctuation or '' (e.g. '=' or ':')")
        if not isinstance(self.copy_symbols, int) or not 2 <= self.copy_symbols <= 36:
            invalid("data.mixture.copy_symbols", self.copy_symbols, "must be an integer in [2, 36]")
        if self.n_places < 2:
            invalid("data.mixture.n_places", self.n_places, "use at least 2 places")
        if not isinstance(self.seed, int) or self.seed < 0:
            invalid("data.mixture.seed", self.seed, "must be a non-negative integer")

    def probabilities(self) -> np.ndarray:
        r = np.array([self.text, self.contextual, self.parametric], np.float64)
        return r / r.sum()


class Episode(NamedTuple):
    """One question: the model reads ``prompt`` and must continue with ``answer``."""

    kind: str  # "contextual" or "parametric"
    task: str  # passkey | kv_recall | fact
    prompt: str
    answer: str
    chance: float  # accuracy of an informed guess without the knowledge


def _name(rng: np.random.Generator, n_syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES, n_syllables)).capitalize()


def fact_table(cfg: MixtureConfig) -> list[tuple[str, str]]:
    """The seeded entity → place table (distinct entity names; places from a small set)."""
    rng = np.random.default_rng([cfg.seed, FACT_SEED_SALT])
    places: list[str] = []
    while len(places) < cfg.n_places:
        p = _name(rng, 2)
        if p not in places:
            places.append(p)
    entities: list[str] = []
    while len(entities) < cfg.n_facts:
        e = _name(rng, 3)
        if e not in entities and e not in places:
            entities.append(e)
    return [(e, places[int(rng.integers(cfg.n_places))]) for e in entities]


def fact_episode(table: list[tuple[str, str]], index: int, n_places: int) -> Episode:
    entity, place = table[index]
    return Episode("parametric", "fact", f"{entity} lives in ", place, 1.0 / n_places)


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(int(d)) for d in rng.integers(0, 10, n))


def passkey_episode(rng: np.random.Generator, cfg: MixtureConfig) -> Episode:
    """Filler, the key, filler, the question: the key exists only in this prompt."""
    key = _digits(rng, cfg.passkey_digits)
    before = "".join(rng.choice(_FILLER, int(rng.integers(0, cfg.passkey_filler + 1))))
    after = "".join(rng.choice(_FILLER, int(rng.integers(0, cfg.passkey_filler + 1))))
    question = "What is the pass key? " + ("The pass key is " if cfg.question == "lead_in" else "")
    prompt = f"{before}The pass key is {key}. Remember it. {after}{question}"
    return Episode("contextual", "passkey", prompt, key, 10.0 ** -cfg.passkey_digits)


def kv_episode(rng: np.random.Generator, cfg: MixtureConfig, queries: int = 1) -> Episode:
    """A list of fresh key=value pairs, then ``queries`` distinct keys asked (the earlier ones
    answered in the prompt); chance = picking one listed value."""
    keys: list[str] = []
    while len(keys) < cfg.kv_pairs:
        k = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 2))
        if k not in keys:
            keys.append(k)
    values = [_digits(rng, cfg.kv_value_digits) for _ in keys]
    if queries == 1:
        asked = [int(rng.integers(cfg.kv_pairs))]
    else:
        asked = [int(i) for i in rng.permutation(cfg.kv_pairs)[:queries]]
    listing = " ".join(f"{k}{cfg.kv_sep}{v}" for k, v in zip(keys, values))
    sep = cfg.kv_sep if cfg.question == "lead_in" else "? "
    answered = "".join(f"{keys[i]}{sep}{values[i]} " for i in asked[:-1])
    return Episode("contextual", "kv_recall", f"{listing}. {answered}{keys[asked[-1]]}{sep}",
                   values[asked[-1]], 1.0 / cfg.kv_pairs)


def copy_episode(rng: np.random.Generator, cfg: MixtureConfig) -> Episode:
    """A random string of copy_len//2..copy_len symbols, then the same string again."""
    n = int(rng.integers(max(2, cfg.copy_len // 2), cfg.copy_len + 1))
    s = "".join(rng.choice(_COPY_ALPHABET[:cfg.copy_symbols], n))
    return Episode("contextual", "copy", f"{s}|", s, float(cfg.copy_symbols) ** -n)


def contextual_episode(rng: np.random.Generator, cfg: MixtureConfig, kv_queries: int = 1) -> Episode:
    task = CONTEXTUAL_TASKS[int(rng.integers(len(CONTEXTUAL_TASKS)))]
    return passkey_episode(rng, cfg) if task == "passkey" else kv_episode(rng, cfg, kv_queries)


def encode_episode(tok: Tokenizer, ep: Episode) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids + the newline that ends an episode), tokenized separately so the
    answer's tokens are the same in training and in scoring."""
    return tok.encode(ep.prompt), tok.encode(ep.answer) + tok.encode("\n")


class MixtureStream:
    """Batches of rows mixing the three kinds; same interface as ``TokenStream``
    (``next_batch``, ``state``, ``restore``). ``text_stream`` should yield one row per
    ``next_batch`` (batch_size 1) so text rows are drawn in order, none skipped."""

    def __init__(self, text_stream, tokenizer: Tokenizer, cfg: MixtureConfig, batch_size: int):
        if tokenizer.bos_id is None:
            raise ValueError("the mixture starts every row with BOS: use a tokenizer with a bos_id")
        self.text, self.tok, self.cfg = text_stream, tokenizer, cfg
        self.seq_len, self.batch_size = text_stream.seq_len, int(batch_size)
        self.table = fact_table(cfg)
        self.row = 0
        plain = {k: v for k, v in to_plain(cfg).items() if _LATER_FIELDS.get(k, object()) != v}
        digest = hashlib.sha256(repr(plain).encode()).hexdigest()[:8]
        self.fingerprint = f"{text_stream.fingerprint}-mix-{digest}"

    def row_kind(self, row: int) -> str:
        rng = np.random.default_rng([self.cfg.seed, row, 0])
        return KINDS[int(rng.choice(3, p=self.cfg.probabilities()))]

    def synthetic_row(self, row: int, kind: str) -> np.ndarray:
        """BOS then whole episodes of ``kind`` until seq_len + 1 tokens (the last one cut)."""
        rng = np.random.default_rng([self.cfg.seed, row, 1])
        ids = [self.tok.bos_id]
        while len(ids) < self.seq_len + 1:
            if kind == "contextual" and self.cfg.copy and rng.random() < self.cfg.copy:
                ep = copy_episode(rng, self.cfg)
            elif kind == "contextual":
                ep = contextual_episode(rng, self.cfg, self.cfg.kv_queries)
            else:
                ep = fact_episode(self.table, int(rng.integers(len(self.table))), self.cfg.n_places)
            prompt, answer = encode_episode(self.tok, ep)
            ids += prompt + answer
        return np.asarray(ids[: self.seq_len + 1], np.int32)

    def next_batch(self) -> np.ndarray:
        kinds = [self.row_kind(self.row + i) for i in range(self.batch_size)]
        rows = [self.text.next_batch()[0] if k == "text" else self.synthetic_row(self.row + i, k)
                for i, k in enumerate(kinds)]
        self.row += self.batch_size
        return np.stack(rows).astype(np.int32)

    def state(self) -> dict[str, Any]:
        return {"row": self.row, "text": self.text.state(), "fingerprint": self.fingerprint}

    def restore(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or not {"row", "text", "fingerprint"} <= set(state):
            raise ValueError(f"mixture state {state!r} is invalid: expected row, text and "
                             "fingerprint, as written by MixtureStream.state()")
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(f"mixture state fingerprint {state['fingerprint']} does not match "
                             f"{self.fingerprint}: resume with the same data and mixture config")
        self.text.restore(state["text"])
        self.row = int(state["row"])


def eval_episodes(cfg: MixtureConfig, n: int, seed: int = 1) -> list[Episode]:
    """``n`` contextual episodes from a generator the training rows never use (fresh answers),
    then every fact of the table (asked without the fact in the prompt)."""
    rng = np.random.default_rng([cfg.seed, seed, 0xE7A1])
    contextual = [contextual_episode(rng, cfg) for _ in range(n)]
    return contextual + [fact_episode(fact_table(cfg), i, cfg.n_places) for i in range(cfg.n_facts)]
