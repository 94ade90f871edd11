"""A LLaMA-style decoder in Flax NNX with a swappable positional scheme per layer and probe sites.

Probe sites (what a ``Probe`` sees and may edit, per layer):
  ``q`` B×T×H×D, ``k`` / ``v`` B×T×KV×D — projections before the positional transform;
  ``q_normed`` / ``k_normed`` — after QK-norm (a model with ``qk_norm``), before the transform;
  ``q_rot`` / ``k_rot`` — after it (identical to q / k for ALiBi and NoPE);
  ``attn`` B×H×T×S — attention probabilities after softmax.
A probe is plain data handed to the forward pass; with ``probe=None`` no site code is traced at all.

Parameter names mirror HF LLaMA (``q_proj``, ``gate_proj`` …) so weight conversion is a renaming;
kernels are stored in×out (HF stores out×in). Gemma-style options (``ModelConfig``: QK-norm,
sliding windows, (1 + w) norms, norms on the sublayer outputs, GeGLU, scaled embeddings and
queries) and Qwen2's q/k/v biases (``qkv_bias``; the ``q`` / ``k`` / ``v`` sites see the biased
projections) add parameters only when switched on, so a LLaMA model's state is unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from mvjax.config import ModelConfig
from mvjax.flash import causal_attention
from mvjax.mesh import constrain
from mvjax.positional import Scheme, build_scheme

Array = jax.Array


PHASES = ("prefill", "decode")


class SiteContext(NamedTuple):
    """What a probe may need besides the activation: which tokens are real, where they sit, and in
    which phase of decoding the pass runs.

    phase: ``"prefill"`` — a whole prompt (or a training/analysis chunk) whose keys are being written
    for the first time; ``"decode"`` — tokens that follow a prompt already held in the KV cache.
    state: at decode, the records the same probe returned at prefill (``Output.records``), so an edit
    that depends on the prompt (e.g. its mean) can be applied to later tokens without recomputing
    it; None at prefill.
    """

    valid_BxT: Array  # bool, False on padding
    positions_BxT: Array
    phase: str = "prefill"
    state: Any = None


class Probe(Protocol):
    """Observe and/or edit activations at named sites. ``sites`` says where to be called; the call
    returns the (possibly edited) activation and a record (any pytree, or None) that the forward
    pass returns in ``Output.records[site][layer]``."""

    sites: frozenset[str]

    def __call__(self, site: str, layer: int, x: Array, ctx: SiteContext) -> tuple[Array, Any]: ...


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """Post-positional keys and values for every layer, preallocated to ``max_len`` slots."""

    k: list[Array]  # per layer B×S×KV×D
    v: list[Array]
    valid_BxS: Array  # bool: slot holds a real token
    end: Array  # int32 scalar: slots filled so far
    # static: no slot is filled yet, so a prefill attends only to its own tokens and can take the
    # causal core (which skips the masked upper triangle: SmolLM2, 8×1024 prompt, 30.5 → 24.0 s)
    fresh: bool = dataclasses.field(default=False, metadata={"static": True})

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, max_len: int) -> "KVCache":
        dtype = jnp.dtype(cfg.dtype)
        shape = (batch, max_len, cfg.num_kv_heads, cfg.head_dim)
        # on a mesh: rows over data, KV heads over model
        zeros = [constrain(jnp.zeros(shape, dtype), "data", None, "model", None)
                 for _ in range(cfg.num_layers)]
        valid = constrain(jnp.zeros((batch, max_len), bool), "data", None)
        return cls(list(zeros), list(zeros), valid, jnp.array(0, jnp.int32), fresh=True)


class Output(NamedTuple):
    logits: Array | None  # B×T×V float32 (None when logits=False)
    cache: KVCache | None
    records: dict[str, dict[int, Any]]
    hidden: Array  # B×T×hidden after the final norm


class Linear(nnx.Linear):
    """``nnx.Linear`` applied to a 2-D view of the input: XLA's CPU backend computes the weight
    gradient of a (B·T)×D matmul faster than a B×T×D contraction over two axes (MLP+projection
    gradient of the cpu-512 benchmark config: 10.0 s → 7.7 s per step)."""

    def __call__(self, x: Array) -> Array:
        y = super().__call__(x.reshape(-1, x.shape[-1]))
        return y.reshape(*x.shape[:-1], y.shape[-1])


def _linear(cfg: ModelConfig, d_in: int, d_out: int, rngs: nnx.Rngs, bias: bool = False) -> Linear:
    return Linear(d_in, d_out, use_bias=bias, dtype=jnp.dtype(cfg.dtype),
                  kernel_init=nnx.initializers.normal(cfg.init_std), rngs=rngs)


class RMSNorm(nnx.Module):
    """x / rms(x) · (offset + w); w starts where the scale is 1 (ones for LLaMA, zeros for Gemma)."""

    def __init__(self, dim: int, eps: float, offset: float = 0.0):
        self.weight = nnx.Param(jnp.full((dim,), 1.0 - offset, jnp.float32))
        self.eps, self.offset = eps, offset

    def __call__(self, x: Array) -> Array:
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        scale = self.weight[...] if self.offset == 0 else self.offset + self.weight[...]
        return (xf * scale).astype(x.dtype)


def _norm(cfg: ModelConfig, dim: int | None = None) -> RMSNorm:
    return RMSNorm(cfg.hidden_size if dim is None else dim, cfg.norm_eps, cfg.norm_weight_offset)


def embed_scale(cfg: ModelConfig) -> float | None:
    """The factor on input embeddings: sqrt(hidden) with ``scale_embeddings``, else None. Applied
    in ``cfg.dtype`` (as Gemma does, in its weights' dtype)."""
    return cfg.hidden_size ** 0.5 if cfg.scale_embeddings else None


def scale_embedded(x: Array, cfg: ModelConfig) -> Array:
    """Embedded tokens times ``embed_scale`` (unchanged without it)."""
    factor = embed_scale(cfg)
    return x if factor is None else x * jnp.asarray(factor, x.dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, layer: int, rngs: nnx.Rngs):
        self.cfg, self.layer = cfg, layer
        h, kv, hd, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.hidden_size
        self.q_proj = _linear(cfg, d, h * hd, rngs, cfg.qkv_bias)
        self.k_proj = _linear(cfg, d, kv * hd, rngs, cfg.qkv_bias)
        self.v_proj = _linear(cfg, d, kv * hd, rngs, cfg.qkv_bias)
        self.o_proj = _linear(cfg, h * hd, d, rngs)
        if cfg.qk_norm:
            self.q_norm, self.k_norm = _norm(cfg, hd), _norm(cfg, hd)
        self.scheme: Scheme = build_scheme(cfg.layer_positional(layer), hd, h, rngs)
        self.window = cfg.layer_window(layer)

    def __call__(self, x_BxTxD: Array, ctx: SiteContext, cache: KVCache | None,
                 probe: Probe | None, records: dict) -> tuple[Array, tuple[Array, Array] | None]:
        cfg, layer = self.cfg, self.layer
        B, T, _ = x_BxTxD.shape
        H, KV, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

        def site(name: str, a: Array) -> Array:
            if probe is None or name not in probe.sites:
                return a
            a, rec = probe(name, layer, a, ctx)
            if rec is not None:
                records.setdefault(name, {})[layer] = rec
            return a

        q_BxTxHxD = site("q", self.q_proj(x_BxTxD).reshape(B, T, H, D))
        k_BxTxKxD = site("k", self.k_proj(x_BxTxD).reshape(B, T, KV, D))
        v_BxTxKxD = site("v", self.v_proj(x_BxTxD).reshape(B, T, KV, D))
        if cfg.qk_norm:
            q_BxTxHxD, k_BxTxKxD = self.q_norm(q_BxTxHxD), self.k_norm(k_BxTxKxD)
        q_BxTxHxD = site("q_normed", q_BxTxHxD)
        k_BxTxKxD = site("k_normed", k_BxTxKxD)
        q_BxTxHxD = site("q_rot", self.scheme.rotate_q(q_BxTxHxD, ctx.positions_BxT))
        k_BxTxKxD = site("k_rot", self.scheme.rotate_k(k_BxTxKxD, ctx.positions_BxT))
        if cfg.attn_scale != D ** -0.5:  # the cores scale logits by D ** -0.5
            q_BxTxHxD = q_BxTxHxD * jnp.asarray(cfg.attn_scale * D ** 0.5, q_BxTxHxD.dtype)

        if ((cache is None or cache.fresh) and (probe is None or "attn" not in probe.sites)
                and not self.scheme.learned):
            # training, analysis and a prefill into an empty cache: causal over the chunk's own
            # tokens, probabilities unobserved
            q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q_BxTxHxD, k_BxTxKxD, v_BxTxKxD))
            out = jnp.swapaxes(causal_attention(
                q, k, v, ctx.valid_BxT, ctx.positions_BxT, self.scheme.bias,
                max(CAUSAL_BLOCK, -(-T // MAX_CAUSAL_BLOCKS)), self.window), 1, 2)
            new_kv = None
            if cache is not None:  # the chunk fills slots [0, T)
                new_kv = tuple(jax.lax.dynamic_update_slice(c[layer], x.astype(c[layer].dtype), (0, 0, 0, 0))
                               for c, x in ((cache.k, k_BxTxKxD), (cache.v, v_BxTxKxD)))
            return self.o_proj(out.reshape(B, T, H * D)), new_kv

        if cache is None:  # keys are this chunk's tokens; key index s attends iff s <= t
            k_all, v_all, new_kv = k_BxTxKxD, v_BxTxKxD, None
            k_pos_BxS, k_valid_BxS = ctx.positions_BxT, ctx.valid_BxT
            causal_TxS = jnp.tril(jnp.ones((T, T), bool))
        else:  # write this chunk at slots [end, end+T); attend to slots <= own slot
            start = (0, cache.end, 0, 0)
            k_all = jax.lax.dynamic_update_slice(cache.k[layer], k_BxTxKxD.astype(cache.k[layer].dtype), start)
            v_all = jax.lax.dynamic_update_slice(cache.v[layer], v_BxTxKxD.astype(cache.v[layer].dtype), start)
            new_kv = (k_all, v_all)
            S = k_all.shape[1]
            k_valid_BxS = jax.lax.dynamic_update_slice(cache.valid_BxS, ctx.valid_BxT, (0, cache.end))
            k_pos_BxS = _cached_positions(ctx.positions_BxT, cache.end, S)
            causal_TxS = jnp.arange(S)[None, :] <= (cache.end + jnp.arange(T))[:, None]

        bias = self.scheme.bias(ctx.positions_BxT, k_pos_BxS)
        mask_BxTxS = causal_TxS[None] & k_valid_BxS[:, None, :]
        if self.window is not None:  # a cache keeps every key; the window is a mask over positions
            mask_BxTxS &= window_mask(ctx.positions_BxT, k_pos_BxS, self.window)
        attn_site = None
        if probe is not None and "attn" in probe.sites:
            attn_site = lambda p: site("attn", p)  # noqa: E731
        out = attend(q_BxTxHxD, k_all, v_all, mask_BxTxS, bias, attn_site)
        return self.o_proj(out.reshape(B, T, H * D)), new_kv


CAUSAL_BLOCK = 128  # query rows per block of the memory-light causal path (``mvjax.flash``)
MAX_CAUSAL_BLOCKS = 16  # longer sequences get larger blocks: the loop is unrolled into the graph


def attend(q_BxTxHxD: Array, k_BxSxKxD: Array, v_BxSxKxD: Array, mask_BxTxS: Array,
           bias_BxHxTxS: Array | None = None, attn_site=None) -> Array:
    """Softmax attention with GQA (query head h reads kv head h // (H/KV)); logits and softmax in
    float32. ``attn_site`` may observe or edit the B×H×T×S probabilities.

    The general path (a KV cache, an observed ``attn`` site): heads sit next to batch
    (B×H×T×D), so both matmuls are plain batched GEMMs and the probe sees probabilities in the
    documented layout. Causal attention over a chunk's own tokens takes
    ``mvjax.flash.causal_attention`` instead, which never holds the B×H×T×T tensors."""
    G = q_BxTxHxD.shape[2] // k_BxSxKxD.shape[2]
    q_BxHxTxD = jnp.swapaxes(q_BxTxHxD, 1, 2)
    k_BxHxSxD, v_BxHxSxD = (jnp.repeat(jnp.swapaxes(x, 1, 2), G, axis=1) for x in (k_BxSxKxD, v_BxSxKxD))
    out = _softmax_attention(q_BxHxTxD, k_BxHxSxD, v_BxHxSxD, mask_BxTxS, bias_BxHxTxS, attn_site)
    return jnp.swapaxes(out, 1, 2)


def _softmax_attention(q_BxHxTxD: Array, k_BxHxSxD: Array, v_BxHxSxD: Array, mask_BxTxS: Array,
                       bias_BxHxTxS: Array | None, attn_site=None) -> Array:
    logits = jnp.einsum("bhtd,bhsd->bhts", q_BxHxTxD, k_BxHxSxD,
                        preferred_element_type=jnp.float32) * q_BxHxTxD.shape[-1] ** -0.5
    if bias_BxHxTxS is not None:
        logits = logits + bias_BxHxTxS
    logits = jnp.where(mask_BxTxS[:, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    if attn_site is not None:
        probs = attn_site(probs)
    return jnp.einsum("bhts,bhsd->bhtd", probs.astype(v_BxHxSxD.dtype), v_BxHxSxD)


def window_mask(q_pos_BxT: Array, k_pos_BxS: Array, window: int) -> Array:
    """B×T×S: key within the ``window`` most recent positions of its query (itself included)."""
    return q_pos_BxT[:, :, None] - k_pos_BxS[:, None, :] < window


def _cached_positions(positions_BxT: Array, end: Array, S: int) -> Array:
    """Positions of cache slots, assuming slot s holds position s - end + positions[:, 0]
    (contiguous positions across the cache, which is how ``generate`` fills it)."""
    return positions_BxT[:, :1] - end + jnp.arange(S)[None, :]


ACTIVATIONS = {"silu": jax.nn.silu, "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True)}


class MLP(nnx.Module):
    """Gated MLP: down(act(gate(x)) * up(x)) — SwiGLU with SiLU, GeGLU with tanh GELU."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.gate_proj = _linear(cfg, cfg.hidden_size, cfg.mlp_hidden, rngs)
        self.up_proj = _linear(cfg, cfg.hidden_size, cfg.mlp_hidden, rngs)
        self.down_proj = _linear(cfg, cfg.mlp_hidden, cfg.hidden_size, rngs)
        self.act = ACTIVATIONS[cfg.mlp_activation]

    def __call__(self, x: Array) -> Array:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    """Pre-norm block. ``post_attn_norm`` is the norm *before* the MLP (HF LLaMA's name); with
    ``post_norms`` the sublayer outputs are normed too (``attn_out_norm``, ``mlp_out_norm``)."""

    def __init__(self, cfg: ModelConfig, layer: int, rngs: nnx.Rngs):
        self.input_norm = _norm(cfg)
        self.attn = Attention(cfg, layer, rngs)
        self.post_attn_norm = _norm(cfg)
        self.mlp = MLP(cfg, rngs)
        self.post_norms = cfg.post_norms
        if cfg.post_norms:
            self.attn_out_norm, self.mlp_out_norm = _norm(cfg), _norm(cfg)

    def __call__(self, x, ctx, cache, probe, records):
        a, new_kv = self.attn(self.input_norm(x), ctx, cache, probe, records)
        x = x + (self.attn_out_norm(a) if self.post_norms else a)
        m = self.mlp(self.post_attn_norm(x))
        return x + (self.mlp_out_norm(m) if self.post_norms else m), new_kv


class Transformer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = nnx.Embed(cfg.vocab_size, cfg.hidden_size, dtype=jnp.dtype(cfg.dtype),
                               embedding_init=nnx.initializers.normal(cfg.init_std), rngs=rngs)
        self.layers = nnx.List([Block(cfg, i, rngs) for i in range(cfg.num_layers)])
        self.norm = _norm(cfg)
        self.lm_head = None if cfg.tie_embeddings else _linear(cfg, cfg.hidden_size, cfg.vocab_size, rngs)

    def __call__(self, tokens_BxT: Array, positions_BxT: Array | None = None, *,
                 attention_mask_BxT: Array | None = None, cache: KVCache | None = None,
                 probe: Probe | None = None, logits: bool = True, phase: str = "prefill",
                 probe_state: Any = None) -> Output:
        """Run the decoder. Positions default to 0..T-1 (continuing after ``cache.end`` with a
        cache); ``attention_mask_BxT`` (1 = real token) masks padded keys and tells probes which
        tokens to count. With a cache, the returned ``Output.cache`` holds this chunk too.
        ``phase`` and ``probe_state`` reach the probe through ``SiteContext``: pass
        ``phase="decode"`` for tokens after a cached prompt, with the prompt pass's records."""
        if tokens_BxT.ndim != 2:
            raise ValueError(f"tokens must be B×T integers; got shape {tokens_BxT.shape}")
        if phase not in PHASES:
            raise ValueError(f"phase={phase!r} is invalid: use one of {PHASES}")
        B, T = tokens_BxT.shape
        cfg = self.cfg
        if positions_BxT is None:
            offset = 0 if cache is None else cache.end
            positions_BxT = jnp.broadcast_to(offset + jnp.arange(T, dtype=jnp.int32), (B, T))
        valid = (jnp.ones((B, T), bool) if attention_mask_BxT is None
                 else attention_mask_BxT.astype(bool))
        ctx = SiteContext(valid, positions_BxT, phase, probe_state)
        records: dict[str, dict[int, Any]] = {}
        x = scale_embedded(self.embed(tokens_BxT), cfg)
        new_k, new_v = [], []
        for layer in self.layers:
            x, kv = layer(x, ctx, cache, probe, records)
            if kv is not None:
                new_k.append(kv[0])
                new_v.append(kv[1])
        x = self.norm(x)
        new_cache = None
        if cache is not None:
            new_valid = jax.lax.dynamic_update_slice(cache.valid_BxS, valid, (0, cache.end))
            new_cache = KVCache(new_k, new_v, new_valid, cache.end + T)
        out = None
        if logits:
            out = self.embed.attend(x) if self.lm_head is None else self.lm_head(x)
            out = out.astype(jnp.float32)
        return Output(out, new_cache, records, x)


def init_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
    """A freshly initialized model (parameters float32, compute in ``cfg.dtype``)."""
    return Transformer(cfg, nnx.Rngs(seed))


def abstract_state(cfg: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, shape-only parameter state) of the model ``cfg`` builds, with no init compute."""
    return nnx.split(nnx.eval_shape(lambda: init_model(cfg)))


DTYPE_CHOICES = ("auto", "float32", "bfloat16")


def compute_dtype(name: str | None) -> str:
    """``auto`` (or None): bfloat16 on an accelerator, float32 on CPU (where bfloat16 matmuls are
    emulated and slower); else the name itself."""
    name = "auto" if name is None else name
    if name not in DTYPE_CHOICES:
        raise ValueError(f"--dtype {name!r} is invalid: use one of {DTYPE_CHOICES}")
    if name == "auto":
        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    return name


def with_compute_dtype(model: Transformer, name: str | None) -> Transformer:
    """``model`` computing in ``compute_dtype(name)`` (the same parameters, float32 as stored).
    Statistics stay float32 whatever it is: probes cast each activation before reducing
    (``mvjax.probe.masked_float32``), logits and attention logits are float32, the host sums in
    float64."""
    dtype = compute_dtype(name)
    if model.cfg.dtype == dtype:
        return model
    graphdef, _ = abstract_state(dataclasses.replace(model.cfg, dtype=dtype))
    return nnx.merge(graphdef, nnx.state(model))
