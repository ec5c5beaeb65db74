"""Projections and their scores on arrays: the entry point for benchmarking layouts.

Every function takes NumPy arrays (anything ``numpy.asarray`` accepts); ``float32`` C-contiguous
input is passed as it is, other input is converted once. Results are new ``float32`` arrays that own
the library's buffers (no copy on the way out). The GIL is released while the library works, and
Ctrl-C stops a call (the exception is raised when the library returns).
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

import numpy as np

from . import _attnviz as _native


def _matrix(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _matrices(attention, name: str = "attention") -> list:
    if isinstance(attention, np.ndarray) and attention.ndim == 2:
        attention = [attention]
    return [_matrix(a, f"{name}[{i}]") for i, a in enumerate(attention)]


def project(
    x,
    method: str = "tsne",
    dims: int = 2,
    *,
    seed: int = 0,
    metric: str = "cosine",
    attention: Optional[Sequence] = None,
    causal: bool = False,
    window: Optional[int] = None,
    return_info: bool = False,
    **params,
):
    """Lays out the rows of ``x`` (``n x d``) in ``dims`` (2 or 3) dimensions.

    ``method``: ``"tsne"``, ``"umap"`` or ``"pca"``. ``params`` are the method's parameters, as the
    Rust library names them, with its defaults where not given:

    - t-SNE: ``perplexity`` (30), ``iterations`` (750), ``early_exaggeration`` (12),
      ``exaggeration_iterations`` (250), ``learning_rate`` (automatic), ``theta`` (0.5),
      ``repulsion`` (``"auto"``, ``"exact"``, ``"barnes_hut"``, ``"fft"``), ``init`` (``"pca"``,
      ``"random"``), ``attention_weight``, ``attention_kl``;
    - UMAP: ``n_neighbors`` (15), ``min_dist`` (0.1), ``spread`` (1), ``n_epochs``,
      ``learning_rate`` (1), ``negative_sample_rate`` (5), ``repulsion_strength`` (1), ``init``
      (``"pca"``, ``"spectral"``, ``"random"``), ``attention_weight``, ``attention_kl``.

    An unknown parameter is a ``TypeError``; a value out of range an ``AttnvizError`` naming it.

    Attention-aware layouts: ``x`` is a head's joint point set, its ``n`` queries then its ``n`` keys
    (``2n`` rows), and ``attention`` one ``len x len`` matrix per sequence (rows: queries, columns:
    keys of the same sequence, in token order; lengths summing to ``n``); ``causal`` and ``window``
    say which keys a query may attend to. The attention share and the per-query attention term then
    default to the attnviz pipeline's (t-SNE 0.1 and 3, UMAP 0.1 and 30); set ``attention_weight`` /
    ``attention_kl`` to change them (0 and 0 give the plain method).

    Returns the ``n x dims`` coordinates; with ``return_info=True``, ``(coords, info)`` where
    ``info`` holds the objective (t-SNE's KL divergence), the full ``spec`` of the fit and
    ``fit_seconds``, the time of the library's fit alone.
    The same seed gives the same coordinates at any thread count.
    """
    x = _matrix(x, "x")
    matrices = None if attention is None else _matrices(attention)
    coords, objective, spec, seconds = _native.project(
        x, method, dims, seed, metric, params or None, matrices, causal, window
    )
    if return_info:
        return coords, {"objective": objective, "spec": json.loads(spec), "fit_seconds": seconds}
    return coords


def fidelity(
    layout,
    queries,
    keys,
    attention: Sequence,
    *,
    causal: bool = False,
    window: Optional[int] = None,
    seed: int = 0,
) -> dict:
    """How faithfully a layout shows a head's attention.

    ``layout``: ``2n x dims`` (queries, then keys); ``queries``, ``keys``: the raw ``n x d`` vectors
    (for the global score, which ranks logits); ``attention``: one ``len x len`` matrix per sequence.
    Returns ``fidelity`` (mean per-query Spearman correlation of nearness and attention),
    ``hit_at_3`` (how often the most-attended key is among the query's 3 nearest keys),
    ``chance_at_3``, ``global_fidelity`` and ``queries`` (how many counted); see the attn-project
    documentation for the exact definitions.
    """
    return _native.fidelity(
        _matrix(layout, "layout"),
        _matrix(queries, "queries"),
        _matrix(keys, "keys"),
        _matrices(attention),
        causal,
        window,
        seed,
    )


def quality(x, y, k: int = 10, *, metric: str = "euclidean") -> dict:
    """Trustworthiness, continuity and kNN recall at ``k`` of the layout ``y`` of ``x``.

    ``metric`` is the input space's (``"euclidean"``, as scikit-learn's ``trustworthiness``
    defaults to, or ``"cosine"``). Exact up to 4,000 points, a fixed seeded sample of query points
    above.
    """
    return _native.quality(_matrix(x, "x"), _matrix(y, "y"), k, metric)


def trustworthiness(x, y, k: int = 10, *, metric: str = "euclidean") -> float:
    """Trustworthiness at ``k`` (1: every layout neighbour is a true neighbour); see :func:`quality`."""
    return quality(x, y, k, metric=metric)["trustworthiness"]


def ceiling(
    attention: Sequence,
    dims: int = 2,
    *,
    seed: int = 0,
    causal: bool = False,
    window: Optional[int] = None,
):
    """The layout made from attention alone that shows it best (``2n x dims``, queries then keys):
    how much of a head's attention a layout of ``dims`` dimensions can show. Score it with
    :func:`fidelity` to compare a layout with its head's ceiling. Returns ``(coords, attention_kl)``.
    """
    return _native.ceiling(_matrices(attention), dims, seed, causal, window)
