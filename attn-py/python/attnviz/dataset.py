"""An attnviz dataset on disk (plain Parquet + JSON) as a Python object: tables as pyarrow (pandas
or polars on request), a head's vectors, attention and layouts as NumPy, re-projection, and the
viewer inline in a notebook."""

from __future__ import annotations

import html
import json
import operator
import os
import re
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from . import _attnviz as _native
from ._errors import in_python_terms
from ._progress import reporter

_HEAD_DIR = re.compile(r"^L(\d+)H(\d+)$")


def _names(name: str, values) -> list:
    """A list of strings argument (one string is a mistake, not a list of letters)."""
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"{name}: expected a list of names such as [\"tsne\", \"pca\"], got {values!r}")
    return list(values)


def _index(value):
    """A non-negative integer (NumPy's included, bools not), else ``None``."""
    if isinstance(value, bool):
        return None
    try:
        i = operator.index(value)
    except TypeError:
        return None
    return i if i >= 0 else None


def _ints(name: str, values) -> list:
    """A list of non-negative integers argument."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name}: expected a list of non-negative integers, got {values!r}")
    out = [_index(v) for v in values]
    if any(v is None for v in out):
        raise TypeError(f"{name}: expected a list of non-negative integers, got {values!r}")
    return out


def _head_pairs(heads) -> list:
    pairs = []
    for h in heads:
        pair = [_index(v) for v in h] if isinstance(h, (tuple, list)) else []
        if len(pair) != 2 or None in pair:
            raise TypeError(f"heads: expected (layer, head) pairs such as [(0, 3)], got {h!r}")
        pairs.append(tuple(pair))
    return pairs


def _frame(table, format: str):
    if format == "arrow":
        return table
    if format == "pandas":
        return table.to_pandas()
    if format == "polars":
        import polars

        return polars.from_arrow(table)
    raise ValueError(f"format: `{format}`; expected arrow, pandas or polars")


class Dataset:
    """The dataset in directory ``path`` (what ``attnviz run``, ``import`` or :func:`attnviz.capture`
    wrote). Opening checks that it is one; reading a head checks its files."""

    def __init__(self, path):
        self.path = Path(path)
        if not (self.path / "meta.json").is_file():
            raise _native.AttnvizError(
                f"{self.path}: not an attnviz dataset (no meta.json)"
            )

    def __repr__(self) -> str:
        meta = self.meta
        return (
            f"attnviz.Dataset({str(self.path)!r}: {meta['model']['id']}, "
            f"{len(self.heads)} heads, {meta['run']['num_tokens']} tokens)"
        )

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def meta(self) -> dict:
        """``meta.json``: the model, the run that made the dataset and its settings."""
        return json.loads((self.path / "meta.json").read_text(encoding="utf-8"))

    @property
    def heads(self) -> list:
        """The stored heads as ``(layer, head)`` pairs, in order."""
        found = []
        heads_dir = self.path / "heads"
        if heads_dir.is_dir():
            for entry in os.listdir(heads_dir):
                m = _HEAD_DIR.match(entry)
                if m and (heads_dir / entry / "vectors.parquet").is_file():
                    found.append((int(m.group(1)), int(m.group(2))))
        return sorted(found)

    def info(self) -> dict:
        """What ``attnviz info --json`` prints: metadata, completeness and the per-head summary."""
        return json.loads(_native.info(str(self.path)))

    def summary(self, format: str = "arrow"):
        """The per-head summary as a flat table, one row per head: ``head`` (``L{l}H{h}``), ``layer``,
        ``head_index``, the normalization diagnostics (``spearman_cosine_before``/``_after``,
        ``scale``, ``norm_gap``), per stored layout ``<method>_<dims>d_`` + ``trustworthiness``,
        ``fidelity``, ``hit_at_3``, ``chance_at_3``, ``global_fidelity``, ``seed``, the vectors' own
        fidelity (``raw_``, ``normalized_`` + ``fidelity``, ``hit_at_3``) and the head's ceiling
        (``ceiling_<dims>d_fidelity``, ``ceiling_<dims>d_hit_at_3``)."""
        import pyarrow as pa

        def scores(prefix, f):
            if not f:
                return {}
            keys = ("fidelity", "hit_at_3", "chance_at_3", "global_fidelity")
            return {f"{prefix}_{k}": f.get(k) for k in keys}

        rows = []
        for h in self.info()["per_head"]:
            row = {k: h.get(k) for k in ("head", "layer", "head_index", "spearman_cosine_before",
                                         "spearman_cosine_after", "scale", "norm_gap")}
            for layout, t in h.get("trustworthiness", {}).items():
                row[f"{layout}_trustworthiness"] = t
            for layout, f in h.get("fidelity", {}).items():
                row.update(scores(layout, f))
            for layout, seed in h.get("seeds", {}).items():
                row[f"{layout}_seed"] = seed
            row.update(scores("raw", h.get("fidelity_raw")))
            row.update(scores("normalized", h.get("fidelity_normalized")))
            for dims, f in h.get("ceiling", {}).items():
                row.update(scores(f"ceiling_{dims}", f))
            rows.append(row)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        table = pa.table({c: [row.get(c) for row in rows] for c in columns})
        return _frame(table, format)

    def tokens(self, format: str = "arrow"):
        """``tokens.parquet``: one row per token (sequence, position, text, ...)."""
        import pyarrow.parquet as pq

        return _frame(pq.read_table(self.path / "tokens.parquet"), format)

    def table(self, layer: int, head: int, name: str = "vectors", format: str = "arrow"):
        """A head's Parquet file as it is stored: ``vectors``, ``attention`` (sparse long format),
        ``value_norms``, or a projection such as ``tsne_2d``."""
        import pyarrow.parquet as pq

        head_dir = self.path / "heads" / f"L{layer:02d}H{head:02d}"
        path = head_dir / f"{name}.parquet"
        if not path.is_file():
            path = head_dir / "projections" / f"{name}.parquet"
        if not path.is_file():
            raise _native.AttnvizError(f"{head_dir}: no `{name}` file for head L{layer}H{head}")
        return _frame(pq.read_table(path), format)

    def head(self, layer: int, head: int) -> dict:
        """A head's vectors as ``n x d`` float32 arrays: ``queries``, ``keys`` (raw, as the model
        computed them; a grouped-query head's keys are its key head's) and, when the head was
        normalized, ``queries_normalized``, ``keys_normalized``, ``key_translation``, ``scale``;
        plus ``attention``, one ``len x len`` matrix per sequence (empty when none is stored)."""
        if (layer, head) not in self.heads:
            raise _native.AttnvizError(f"{self.path}: no head L{layer}H{head} (stored: {len(self.heads)} heads)")
        out = _native.read_head(str(self.path), layer, head)
        out["attention"] = self.attention(layer, head)
        return out

    def attention(self, layer: int, head: int) -> list:
        """A head's attention: one ``len x len`` float32 matrix per sequence, in token order (empty
        when the head was stored without attention)."""
        if (layer, head) not in self.heads:
            raise _native.AttnvizError(f"{self.path}: no head L{layer}H{head} (stored: {len(self.heads)} heads)")
        return _native.read_attention(str(self.path), layer, head)

    def projection(self, layer: int, head: int, method: str = "tsne", dims: int = 2):
        """A head's stored layout: ``(coords, record)`` with ``coords`` ``2n x dims`` (queries, then
        keys) and ``record`` its spec, quality, fidelity and the head's ceiling."""
        if (layer, head) not in self.heads:
            raise _native.AttnvizError(f"{self.path}: no head L{layer}H{head} (stored: {len(self.heads)} heads)")
        if not (self.path / "heads" / f"L{layer:02d}H{head:02d}" / "projections" / f"{method}_{dims}d.parquet").is_file():
            raise _native.AttnvizError(
                f"{self.path}: head L{layer}H{head} has no {method} {dims}D layout; make it with Dataset.project"
            )
        coords, record = _native.read_projection(str(self.path), layer, head, method, dims)
        return coords, json.loads(record)

    def project(
        self,
        methods: Sequence[str] = ("tsne", "umap", "pca"),
        dims: Sequence[int] = (2,),
        *,
        heads: Optional[Sequence] = None,
        force: bool = False,
        progress=True,
        **settings,
    ) -> dict:
        """Projects the stored heads (``attnviz project``): layouts already made with the same
        settings are kept, others made (``force=True``: made again, each replaced only when its
        successor is whole). ``settings``: ``layout`` (``"attnviz"`` or ``"paper"``), ``metric``,
        ``seed``, ``perplexity``, ``tsne_iterations``, ``n_neighbors``, ``min_dist``,
        ``tsne_attention_weight``, ``umap_attention_weight``, ``tsne_attention_kl``,
        ``umap_attention_kl``, ``ceiling``, ``vectors`` (``"raw"``/``"normalized"``), ``quality``.
        Returns the run's summary."""
        options = dict(settings, methods=_names("methods", methods), dims=_ints("dims", dims))
        only = None if heads is None else _head_pairs(heads)
        with in_python_terms():
            summary = _native.project_dataset(str(self.path), options, only, force, reporter(progress))
        return json.loads(summary)

    def export_html(self, out, *, projections=None, sequences: int = 5) -> Path:
        """Writes the viewer with this dataset's views embedded as one HTML file that opens offline.
        ``projections``: e.g. ``[("tsne", 2), ("umap", 2)]`` (default: one, t-SNE 2D when stored);
        ``sequences``: how many sequences get Sentence views."""
        _native.export_html(str(self.path), str(out), _projections(projections), _ints("sequences", [sequences])[0])
        return Path(out)

    def serve(self, host: str = "127.0.0.1", port: int = 0):
        """Starts the viewer's HTTP server on a background thread; returns it (``.url``, ``.stop()``).
        Loopback only unless ``host`` says otherwise."""
        return _native.Server(str(self.path), host, port)

    def show(
        self,
        *,
        height: int = 720,
        projections=None,
        sequences: int = 3,
        server: bool = False,
        max_inline_mb: float = 40.0,
    ):
        """The interactive viewer inside a notebook (Jupyter, JupyterLab, VS Code): the exported page
        in an ``<iframe srcdoc>``, so it lives in the notebook and needs no server. Views that need a
        live query (search, a point's attention) say so there; ``server=True`` shows the served
        viewer instead (a local server on a background thread; works where the notebook's browser
        can reach this machine). An inline page over ``max_inline_mb`` megabytes is refused with the
        advice to pass fewer ``projections`` or ``server=True``."""
        height = _ints("height", [height])[0]
        sequences = _ints("sequences", [sequences])[0]
        if server:
            running = self.serve()
            return View(_iframe(src=running.url, height=height), server=running)
        with tempfile.TemporaryDirectory(prefix="attnviz-show-") as tmp:
            page = Path(tmp) / "viewer.html"
            _native.export_html(str(self.path), str(page), _projections(projections), sequences)
            size = page.stat().st_size
            if size > max_inline_mb * 1e6:
                raise _native.AttnvizError(
                    f"show: the inline viewer of {self.path} is {size / 1e6:.0f} MB, over max_inline_mb="
                    f"{max_inline_mb:g}; pass projections=[(\"tsne\", 2)], fewer sequences, or server=True"
                )
            document = page.read_text(encoding="utf-8")
        return View(_iframe(srcdoc=document, height=height))


def _projections(projections):
    if projections is None:
        return None
    return [(str(m), int(d)) for m, d in projections]


def _iframe(*, height: int, srcdoc: Optional[str] = None, src: Optional[str] = None) -> str:
    style = f'style="width:100%;height:{int(height)}px;border:1px solid #ddd"'
    if srcdoc is not None:
        return f'<iframe class="attnviz-viewer" srcdoc="{html.escape(srcdoc, quote=True)}" {style}></iframe>'
    return f'<iframe class="attnviz-viewer" src="{html.escape(src or "", quote=True)}" {style}></iframe>'


class View:
    """What :meth:`Dataset.show` returns: notebooks display it (``_repr_html_``); ``.html`` is the
    markup, ``.server`` the running server when one was started (``.stop()`` ends it)."""

    def __init__(self, markup: str, server=None):
        self.html = markup
        self.server = server

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        where = f"served at {self.server.url}" if self.server is not None else "inline"
        return f"<attnviz viewer, {where}>"


def open(path) -> Dataset:  # noqa: A001 - the package's verb, as `attnviz.open(path)`
    """Opens the dataset in directory ``path``."""
    return Dataset(path)
