"""The names of the model's probe sites, in one place (no heavy imports: the CLI's --help reads them).

``q`` B×T×H×D, ``k`` / ``v`` B×T×KV×D are the projections before the positional transform;
``q_rot`` / ``k_rot`` after it; ``attn`` the attention probabilities B×H×T×S.
``q_normed`` / ``k_normed``: q and k after QK-norm and before the positional transform (models
with ``qk_norm``; elsewhere they equal ``q`` / ``k``). They are not in the default site lists, so
what a LLaMA-shaped analysis captures is unchanged; ``sites_for`` adds them where they differ.
"""

ATTN_SITE = "attn"  # the attention probabilities B×H×T×S
SITES = ("q", "k", "v", "q_rot", "k_rot", ATTN_SITE)
# Sites whose activation is B×T×heads×D (attention probabilities need other statistics).
STAT_SITES = tuple(s for s in SITES if s != ATTN_SITE)
# Query/key sites: where massive values are expected; V is the contrast.
QK_SITES = tuple(s for s in STAT_SITES if s != "v")
# After QK-norm, before the positional transform.
QK_NORM_SITES = ("q_normed", "k_normed")
# Every site a B×T×heads×D statistic can be captured at.
ALL_STAT_SITES = ("q", "k", "v", *QK_NORM_SITES, "q_rot", "k_rot")


def sites_for(qk_norm: bool) -> tuple[str, ...]:
    """The default statistics sites of a model: ``STAT_SITES``, plus the QK-norm sites in a model
    that has QK-norm (in pipeline order)."""
    return ALL_STAT_SITES if qk_norm else STAT_SITES
