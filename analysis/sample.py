"""The default analysis text: written for this project, so it needs no download and no licence.

Two kinds of documents, because the paper's claim is that massive values matter for contextual
tasks: plain prose about the project's own subject, and deterministic synthetic prompts of the
contextual kind (passkey retrieval among filler, key→value recall). Same seed → same text, so
results on the default sample are reproducible. A few thousand tokens with a BPE tokenizer.
"""

from __future__ import annotations

import random

PROSE = [
    "Attention layers compare every query with every key. The comparison is a dot product, so a "
    "single coordinate that is far larger than the others can decide the outcome on its own. When "
    "such coordinates appear at the same place in almost every head, we call them massive values. "
    "They are not noise: they show up in the first layers, they persist across prompts, and they "
    "sit in a small and predictable set of dimensions.",
    "Rotary position embeddings turn each pair of query and key dimensions by an angle that grows "
    "with the token's position. Pairs with a high frequency turn quickly and encode fine position; "
    "pairs with a low frequency barely turn across a whole prompt and behave almost like unrotated "
    "coordinates. A model can therefore use the slow pairs as stable channels for meaning, and it "
    "is exactly there that the largest query and key entries are found.",
    "The values, by contrast, are never rotated. If the concentration were a property of attention "
    "in general, the value vectors would show it too. They usually do not, which is why the value "
    "projection is the natural control in any measurement of this kind.",
    "A careful measurement fixes its definition before looking at the data. Here the norm of each "
    "head and dimension is taken over all tokens of the dataset, an entry counts as massive when it "
    "exceeds five times the mean of its head, and the rule is written next to every number it "
    "produces. Changing the rule afterwards would turn a measurement into a search for a story.",
    "The first token of a sequence is special. Many heads send most of their attention to it when "
    "nothing else is relevant, a pattern known as an attention sink. The large query and key "
    "coordinates are nearly constant across tokens except at that first position, which suggests "
    "that they help the model keep the sink in place.",
    "Streaming statistics make the measurement cheap. Instead of storing every activation, the "
    "forward pass adds up squares, sums and maxima per head and dimension, batch after batch. The "
    "sums can be merged in any order, so a long dataset gives the same answer however it is split, "
    "and memory stays flat no matter how many tokens are read.",
    "Quantization is where these values bite in practice. A scheme that shares one scale across a "
    "row of keys must stretch that scale to fit the few huge channels, and every small channel then "
    "loses precision. Methods that scale keys per channel, or that protect outlier channels, keep "
    "the contextual abilities that depend on the large coordinates.",
    "To ask whether rotary embeddings cause the effect, one can train small models that differ only "
    "in how they encode position: rotary, linear biases on the attention logits, or no positional "
    "signal at all beyond the causal mask. If the concentration appears only with rotation, and "
    "moves when the rotation base changes, the case for a causal link becomes much stronger.",
]

_WORDS = ("river stone lantern harbor meadow copper violet signal orchard canyon ember glacier "
          "pillar thistle compass falcon marble willow beacon saffron").split()
_FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
           "There and back again. ")


def passkey_prompt(rng: random.Random, digits: int, filler_repeats: int) -> str:
    """A passkey hidden in repetitive filler, followed by the question (the paper's task shape)."""
    key = "".join(rng.choice("0123456789") for _ in range(digits))
    at = rng.randrange(filler_repeats + 1)
    parts = [_FILLER] * filler_repeats
    parts.insert(at, f"The pass key is {key}. Remember it. {key} is the pass key. ")
    return ("There is important information hidden inside a lot of irrelevant text. Find it and "
            "memorize it. " + "".join(parts) + "What is the pass key? The pass key is " + key + ".")


def recall_prompt(rng: random.Random, pairs: int) -> str:
    """In-context key→value recall: a list of word→number bindings, then a query for one of them."""
    keys = rng.sample(_WORDS, pairs)
    values = [rng.randrange(100, 1000) for _ in keys]
    lines = "\n".join(f"{k} -> {v}" for k, v in zip(keys, values))
    i = rng.randrange(pairs)
    return f"Remember these codes.\n{lines}\nThe code for {keys[i]} is {values[i]}."


def sample_texts(seed: int = 0, n_passkey: int = 12, n_recall: int = 24) -> list[str]:
    """The embedded sample: the prose paragraphs, then passkey and recall prompts (deterministic)."""
    rng = random.Random(seed)
    texts = list(PROSE)
    texts += [passkey_prompt(rng, digits=rng.choice((6, 12)), filler_repeats=rng.randrange(4, 12))
              for _ in range(n_passkey)]
    texts += [recall_prompt(rng, pairs=rng.randrange(4, 10)) for _ in range(n_recall)]
    return texts


DESCRIPTION = ("embedded sample (analysis/sample.py, seed 0): 8 prose paragraphs, 12 passkey and "
               "24 key-value recall prompts")
