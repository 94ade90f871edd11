"""Where training text comes from: a named corpus, a local file or directory, or a hub dataset.

Everything becomes a ``list[str]`` of documents. Documents matter because packing puts a BOS before
each one (the attention sink the science studies) and the held-out split is drawn by document, so
no text is both trained on and evaluated on. Structured files (.json/.jsonl/.parquet) go through HF
``datasets`` so that local files and hub names share one code path.
"""

from __future__ import annotations

import os
from pathlib import Path

# Named corpora: name -> file name looked up in $MVJAX_DATA, then in the corpora shipped with the
# package (mvjax/data/corpora, package data), so a named corpus resolves on any machine.
NAMED_SOURCES = {"tinyshakespeare": "tinyshakespeare.txt"}
TEXT_SUFFIXES = (".txt",)
DATASET_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + tuple(DATASET_SUFFIXES)
PACKAGED_CORPORA = Path(__file__).resolve().parent / "corpora"


def _named_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("MVJAX_DATA"):
        dirs.append(Path(os.environ["MVJAX_DATA"]).expanduser())
    dirs.append(PACKAGED_CORPORA)
    return dirs


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).suffix.lower() in SUPPORTED_SUFFIXES


def resolve_source(source: str) -> str:
    """A local path (as a string) for named corpora and existing paths, else ``source`` unchanged
    as a hub dataset name. Raises ``FileNotFoundError`` for a missing local path or named corpus."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"data source {source!r} is invalid: pass a file, a directory, a hub "
                         f"dataset name or one of {sorted(NAMED_SOURCES)}")
    if source in NAMED_SOURCES:
        tried = [d / NAMED_SOURCES[source] for d in _named_dirs()]
        for path in tried:
            if path.is_file():
                return str(path)
        raise FileNotFoundError(f"named corpus {source!r} not found (tried {[str(p) for p in tried]}):"
                                " set $MVJAX_DATA to the directory holding "
                                f"{NAMED_SOURCES[source]}, or pass a file path")
    path = Path(source).expanduser()
    if path.exists():
        return str(path)
    if _looks_like_path(source):
        raise FileNotFoundError(f"data source {path} does not exist: pass an existing .txt/.json/"
                                ".jsonl/.parquet file or a directory of them")
    return source


def _split_text(text: str, doc_separator: str) -> list[str]:
    if not doc_separator:
        raise ValueError("doc_separator='' is invalid: use e.g. '\\n\\n' (paragraphs) or '\\n' (lines)")
    return [d for d in text.split(doc_separator) if d.strip()]


def _column(ds, text_field: str, where: str) -> list[str]:
    if text_field not in ds.column_names:
        raise ValueError(f"{where} has no field {text_field!r}; its fields are {ds.column_names}: "
                         "pass the right text_field")
    out = []
    for i, value in enumerate(ds[text_field]):
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"{where} row {i}: field {text_field!r} holds {type(value).__name__}, "
                             "not text: pass a text_field whose values are strings")
        if value.strip():
            out.append(value)
    return out


def _load_file(path: Path, text_field: str, doc_separator: str) -> list[str]:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): convert it "
                             "to UTF-8") from None
        return _split_text(text, doc_separator)
    if suffix in DATASET_SUFFIXES:
        import datasets  # local: seconds to import; only .json/.jsonl/.parquet files need it

        kind = DATASET_SUFFIXES[suffix]
        try:
            ds = datasets.load_dataset(kind, data_files=str(path), split="train")
        except Exception as e:  # malformed JSON/parquet surfaces as several datasets error types
            cause = e.__cause__ or e
            reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise ValueError(f"could not read {path} as {kind} ({reason}): check the file is valid "
                             f"{kind} with one record per row") from e
        return _column(ds, text_field, str(path))
    raise ValueError(f"data file {path} has unsupported type {suffix!r}: use one of "
                     f"{SUPPORTED_SUFFIXES}")


def _load_hub(name: str, text_field: str, split: str) -> list[str]:
    import datasets  # local: seconds to import; only hub and dataset-file sources need it

    repo, _, config = name.partition(":")  # "wikitext:wikitext-103-raw-v1" picks a config
    try:
        ds = (datasets.load_dataset(repo, config, split=split) if config
              else datasets.load_dataset(repo, split=split))
    except Exception as e:  # offline, unknown name, bad split: all mean "not loadable"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(f"data source {name!r} is neither a local path nor a loadable hub "
                                f"dataset (split={split!r}: {reason}); check the path, or the "
                                "dataset name, split and network") from e
    return _column(ds, text_field, f"hub dataset {name!r} split {split!r}")


def load_texts(source: str, *, text_field: str = "text", split: str = "train",
               doc_separator: str = "\n\n") -> list[str]:
    """Documents (non-blank strings, in source order) from ``source``.

    ``.txt`` files are split into documents by ``doc_separator``; ``.json``/``.jsonl``/``.parquet``
    contribute one document per row (``text_field``); a directory contributes all such files in
    sorted order; any other name is loaded from the hub as ``load_dataset(source, split=split)``
    (``NAME:CONFIG`` passes a dataset config, e.g. ``wikitext:wikitext-2-raw-v1``).
    """
    resolved = resolve_source(source)
    path = Path(resolved)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*")
                       if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        if not files:
            raise ValueError(f"directory {path} holds no {SUPPORTED_SUFFIXES} files: point source at "
                             "a directory of data files or at one file")
        texts = [d for f in files for d in _load_file(f, text_field, doc_separator)]
    elif path.is_file():
        texts = _load_file(path, text_field, doc_separator)
    else:
        texts = _load_hub(resolved, text_field, split)
    if not texts:
        raise ValueError(f"data source {source!r} holds no non-blank documents: check the file, "
                         f"text_field={text_field!r} and doc_separator={doc_separator!r}")
    return texts
