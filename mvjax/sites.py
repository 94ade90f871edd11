"""The names of the model's probe sites, in one place (no heavy imports: the CLI's --help reads them).

``q`` B×T×H×D, ``k`` / ``v`` B×T×KV×D are the projections before the positional transform;
``q_rot`` / ``k_rot`` after it; ``attn`` the attention probabilities B×H×T×S.
"""

SITES = ("q", "k", "v", "q_rot", "k_rot", "attn")
# Sites whose activation is B×T×heads×D (attention probabilities need other statistics).
STAT_SITES = tuple(s for s in SITES if s != "attn")
# Query/key sites: where massive values are expected; V is the contrast.
QK_SITES = tuple(s for s in STAT_SITES if s != "v")
