"""Massive values in Q/K/V over a dataset, as a library call: ``analyze(model, tokenizer, rows,
definition)`` returns an ``Analysis`` record, and ``analyze_to_dir(AnalyzeConfig(...))`` does what
``mvjax analyze`` does (load, window the text, analyze, write the results set). Commands and
experiments call these; none builds a command line to reach them.

Sequences are fixed windows of the tokenized text (documents joined by a blank line), each starting
with BOS when the tokenizer has one: attention sinks and massive values depend on the first token,
so every window must look like the start of a context.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from mvjax.analysis.massive import Analysis  # noqa: F401  (the record analyze returns)
from mvjax.analysis.massive import analyze as judge
from mvjax.analysis.sample import DESCRIPTION, sample_texts
from mvjax.atomic import atomic_directory, check_results_dir
from mvjax.data import load_texts
from mvjax.data.packing import bos_windows
from mvjax.load import load_layerwise
from mvjax.massive_rule import MassiveDefinition
from mvjax.memory_budget import host_memory, human_bytes
from mvjax.mesh import FLAG as MESH_FLAG, build_mesh, parse_mesh, rows as rows_for
from mvjax.probe import collect_stats
from mvjax.provenance import provenance
from mvjax.sites import ALL_STAT_SITES, ATTN_SITE, sites_for
from mvjax.tokenizers import check_vocab

RESULTS_FILE = "massive_values.json"
DOC_SEPARATOR = "\n\n"
TOKEN_BYTES = 4  # an int32 token id in the windows (the text and its token list take more)


def load_data(source: str | None, text_field: str = "text") -> tuple[list[str], str]:
    """(texts, description); None → the embedded sample."""
    if source is None:
        return sample_texts(), DESCRIPTION
    texts = load_texts(source, text_field=text_field)
    return list(texts), str(source)


def make_sequences(tokenizer, texts: list[str], seq_len: int, max_tokens: int) -> np.ndarray:
    """N×seq_len token windows, BOS first when the tokenizer has one; at most max_tokens tokens
    (but at least one window)."""
    sep = tokenizer.encode(DOC_SEPARATOR)
    stream: list[int] = []
    for i, t in enumerate(texts):
        if i:
            stream += sep
        stream += tokenizer.encode(t)
    if not stream:
        raise ValueError("the dataset is empty: pass a file or dataset with text in it")
    rows = bos_windows(stream, seq_len, tokenizer.bos_id, max(1, max_tokens // seq_len))
    if not len(rows):
        raise ValueError(f"--seq-len {seq_len} is longer than the data ({len(stream)} tokens): "
                         "lower --seq-len or pass more text")
    return rows


def batches(rows: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(tokens, mask) batches of fixed shape; the last one padded with masked rows."""
    for i in range(0, len(rows), batch_size):
        chunk = rows[i: i + batch_size]
        mask = np.ones(chunk.shape, bool)
        if len(chunk) < batch_size:
            pad = batch_size - len(chunk)
            chunk = np.concatenate([chunk, np.zeros((pad, chunk.shape[1]), chunk.dtype)])
            mask = np.concatenate([mask, np.zeros((pad, mask.shape[1]), bool)])
        yield chunk, mask


def analyze(model, tokenizer, rows: np.ndarray, definition: MassiveDefinition = MassiveDefinition(),
            *, sites: tuple[str, ...] = (), batch_size: int = 4,
            progress: bool = True, mesh=None) -> Analysis:
    """Streaming Q/K/V statistics of ``model`` (a ``Transformer`` or ``LayerWeights``) over the
    token ``rows`` (N×T), judged by ``definition``. No ``sites``: the model's defaults
    (``mvjax.sites.sites_for``: the QK-norm sites too where the model has QK-norm).

    Also each layer's per-head attention on the first token (BOS), averaged over every query after
    it in every window (``mvjax.probe.first_token_mass``, weighted by query count across batches).
    Observing it runs the unfused attention: B×H×T×T float32 logits and probabilities for one
    batch at one layer at a time, whatever the model's depth (one SmolLM2 block, 4 windows: 36 →
    77 MiB of compiled temporaries at 512 tokens, 218 MiB → 1.1 GiB at 2,048).
    ``mesh`` (a ``jax.sharding.Mesh`` of ``mvjax.mesh``, data axis only): each batch's windows
    split over its devices; the batch size is rounded up to a multiple of the data axis."""
    cfg = model.cfg
    sites = sites or sites_for(cfg.qk_norm)
    batch_size = rows_for(batch_size, mesh)
    n_batches = -(-len(rows) // batch_size)
    records = collect_stats(model, batches(rows, batch_size), sites, total=n_batches,
                            progress=progress, sink=True, mesh=mesh)
    sink = records.pop(ATTN_SITE)
    result = judge(records, cfg, definition)
    pos = cfg.layer_positional(0)
    bos = getattr(tokenizer, "bos_id", None)
    return Analysis(
        definition=result["definition"],
        model={"config": cfg.to_dict(),
               "layout": pos.layout if pos.rotary_dims(cfg.head_dim) else pos.scheme},
        data={"n_sequences": int(len(rows)), "seq_len": int(rows.shape[1]),
              "n_tokens": int(rows.size), "bos": bos is not None, "bos_id": bos},
        n_bands=result["n_bands"], frequencies=result["frequencies"], sites=result["sites"],
        summary=result["summary"],
        first_token_mass=[sink[layer].mean().tolist() for layer in range(cfg.num_layers)])


@dataclasses.dataclass(frozen=True)
class AnalyzeConfig:
    """Everything ``mvjax analyze`` takes; ``analyze_to_dir`` runs it."""

    model: str = "smollm2"
    out: str | Path = "results/analyze"
    data: str | None = None  # None: the embedded sample
    text_field: str = "text"
    tokens: int = 16384
    seq_len: int = 512
    batch_size: int = 4
    definition: MassiveDefinition = MassiveDefinition()
    sites: tuple[str, ...] = ()  # none: the model's defaults (``mvjax.sites.sites_for``)
    bar_layer: int | None = None
    figures: bool = True
    mesh: str | None = None  # ``--mesh data=N``: windows split over N devices (None: one)

    def __post_init__(self) -> None:
        unknown = [s for s in self.sites if s not in ALL_STAT_SITES]
        if unknown:
            raise ValueError(f"unknown site(s) {unknown}: choose from {list(ALL_STAT_SITES)}")
        for name in ("tokens", "seq_len", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)} is invalid: "
                                 "use a positive integer")
        if self.seq_len < 2:
            raise ValueError(f"--seq-len {self.seq_len} is too short: use at least 2")
        if self.mesh is not None and parse_mesh(self.mesh).model > 1:
            raise ValueError(f"{MESH_FLAG} {self.mesh}: analyze goes layer by layer and splits windows "
                             f"only; use {MESH_FLAG} data=N")
        have, where = host_memory()  # the token windows alone are int32 in host memory
        if have is not None and self.tokens * TOKEN_BYTES > have:
            raise ValueError(f"--tokens {self.tokens} needs at least "
                             f"{human_bytes(self.tokens * TOKEN_BYTES)} for its token windows, more "
                             f"than {where} ({human_bytes(have)}): lower --tokens")


def _load_checked(config: AnalyzeConfig):
    """(weights, tokenizer, rows, description), every setting checked against the model."""
    weights, tok = load_layerwise(config.model)  # one layer's weights in memory at a time
    if tok is None:
        raise ValueError(f"model {config.model} has no tokenizer: save one into the model directory")
    cfg = weights.cfg
    if config.bar_layer is not None and not 0 <= config.bar_layer < cfg.num_layers:
        raise ValueError(f"--bar-layer {config.bar_layer} is out of range: the model has "
                         f"{cfg.num_layers} layers")
    check_vocab(tok, cfg.vocab_size)
    texts, description = load_data(config.data, config.text_field)
    if not any(t.strip() for t in texts):
        raise ValueError("the dataset is empty: pass a file or dataset with text in it")
    rows = make_sequences(tok, texts, config.seq_len, config.tokens)
    if config.seq_len > cfg.max_seq_len:
        raise ValueError(f"--seq-len {config.seq_len} exceeds the model's max_seq_len "
                         f"{cfg.max_seq_len}: lower it")
    return weights, tok, rows, description


def analyze_to_dir(config: AnalyzeConfig, command_line: str | None = None,
                   progress: bool = True) -> Analysis:
    """Load ``config.model``, analyze its windows of ``config.data`` and write the results set
    (``massive_values.json``, and figures + ``report.md`` unless ``figures`` is off) into
    ``config.out``, replacing any earlier set whole. The output is checked before any work."""
    out = check_results_dir(config.out, RESULTS_FILE)
    weights, tok, rows, description = _load_checked(config)
    mesh = None if config.mesh is None else build_mesh(parse_mesh(config.mesh))
    result = analyze(weights, tok, rows, config.definition, sites=config.sites,
                     batch_size=config.batch_size, progress=progress, mesh=mesh)
    result = dataclasses.replace(
        result, provenance=provenance(command_line, config.model),
        model={"name": str(config.model), **result.model},
        data={"source": config.data or "embedded", "description": description, **result.data,
              "doc_separator": json.dumps(DOC_SEPARATOR)[1:-1]})
    with atomic_directory(out) as tmp:  # the whole set replaces any earlier one, or nothing does
        (tmp / RESULTS_FILE).write_text(json.dumps(result.to_json(), indent=1))
        if config.figures:
            # local: matplotlib (analysis.plots, also imported by analysis.report), only drawing needs it
            from mvjax.analysis.plots import all_figures
            from mvjax.analysis.report import write_report

            layer = result.bar_layer() if config.bar_layer is None else config.bar_layer
            figures = all_figures(result, tmp, layer, Path(str(config.model)).name)
            write_report(result, figures, tmp)
    return result
