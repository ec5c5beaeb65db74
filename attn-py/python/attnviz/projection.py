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
    if np.iscomplexobj(a):
        raise TypeError(f"{name}: expected real numbers, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _int(name: str, value, minimum: int = 0) -> int:
    """An integer argument, checked: a ``TypeError`` or ``ValueError`` naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: must be at least {minimum}, got {value}")
    return int(value)


def _window(window, causal: bool) -> Optional[int]:
    if window is None:
        return None
    window = _int("window", window, 1)
    if not causal:
        raise ValueError("window: a sliding window needs causal=True")
    return window


def _matrices(attention, causal: bool = False, window: Optional[int] = None) -> list:
    """One head's attention, one ``len x len`` matrix per sequence, checked as ``attnviz import``
    checks given attention: finite, non-negative, each row summing to 1 (or all 0: no attention),
    nothing above the diagonal when ``causal``, nothing ``window`` or more positions back."""
    if attention is None or isinstance(attention, (str, bytes)):
        raise TypeError("attention: expected one len x len matrix per sequence (a list of arrays)")
    if isinstance(attention, np.ndarray) and attention.ndim == 2:
        attention = [attention]
    out = []
    for i, a in enumerate(attention):
        a = _matrix(a, f"attention[{i}]")
        n, m = a.shape
        if n != m or n == 0:
            raise ValueError(f"attention[{i}]: expected a square len x len matrix, got {n} x {m}")
        if not np.isfinite(a).all() or (a < 0).any():
            raise ValueError(f"attention[{i}]: weights must be finite and non-negative")
        sums = a.sum(axis=1, dtype=np.float64)
        bad = np.flatnonzero((np.abs(sums - 1) > 1e-3) & (sums != 0))
        if bad.size:
            r = int(bad[0])
            raise ValueError(
                f"attention[{i}]: row {r} sums to {sums[r]:.4f}, not 1 (are these logits rather than probabilities?)"
            )
        if causal:
            future = np.triu(a, 1)
            if (future > 1e-6).any():
                r, c = map(int, np.argwhere(future > 1e-6)[0])
                raise ValueError(f"attention[{i}]: causal, but position {r} attends to the later position {c}")
        if window is not None:
            past = np.tril(a, -window)
            if (past > 1e-6).any():
                r, c = map(int, np.argwhere(past > 1e-6)[0])
                raise ValueError(
                    f"attention[{i}]: window {window}, but position {r} attends to position {c}, {r - c} back"
                )
        out.append(a)
    return out


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
      ``exaggeration_iterations`` (250), ``learning_rate`` (``"auto"``: ``max(n / 12, 200)``), ``theta`` (0.5),
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
    The same seed gives the same coordinates at any thread count. Ctrl-C stops the fit within one
    of its iterations (``KeyboardInterrupt``).
    """
    x = _matrix(x, "x")
    dims, seed = _int("dims", dims, 1), _int("seed", seed)
    window = _window(window, causal)
    if attention is None and (causal or window is not None):
        raise TypeError("causal/window: they say which keys a query attends to; pass attention= too")
    matrices = None if attention is None else _matrices(attention, causal, window)
    if params.get("learning_rate") == "auto":
        del params["learning_rate"]
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
    (for the global score, which ranks logits); ``attention``: one ``len x len`` matrix per sequence,
    ``n`` tokens in all.
    Returns ``fidelity`` (mean per-query Spearman correlation of nearness and attention),
    ``hit_at_3`` (how often the most-attended key is among the query's 3 nearest keys),
    ``chance_at_3``, ``global_fidelity`` and ``queries`` (how many counted); see the attn-project
    documentation for the exact definitions.
    """
    window = _window(window, causal)
    matrices = _matrices(attention, causal, window)
    n = sum(a.shape[0] for a in matrices)
    layout, queries, keys = _matrix(layout, "layout"), _matrix(queries, "queries"), _matrix(keys, "keys")
    for name, a in (("queries", queries), ("keys", keys)):
        if a.shape[0] != n:
            raise ValueError(f"{name}: {a.shape[0]} rows, but the attention matrices hold {n} tokens")
    if layout.shape[0] != 2 * n:
        raise ValueError(f"layout: {layout.shape[0]} rows, expected {2 * n} (the {n} queries, then the {n} keys)")
    if layout.shape[1] not in (2, 3):
        raise ValueError(f"layout: {layout.shape[1]} columns, expected a 2-D or 3-D layout")
    return _native.fidelity(layout, queries, keys, matrices, causal, window, _int("seed", seed))


def quality(x, y, k: int = 10, *, metric: str = "cosine") -> dict:
    """Trustworthiness, continuity and kNN recall at ``k`` of the layout ``y`` of ``x``.

    ``metric`` is the input space's: ``"cosine"`` (the default, as :func:`project`'s, so that a
    layout is scored in the space it was made from) or ``"euclidean"`` (scikit-learn's
    ``trustworthiness`` default). Exact up to 4,000 points, a fixed seeded sample of query points
    above.
    """
    return _native.quality(_matrix(x, "x"), _matrix(y, "y"), _int("k", k, 1), metric)


def trustworthiness(x, y, k: int = 10, *, metric: str = "cosine") -> float:
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
    """The layout made from the attention alone (``2n x dims``, queries then keys), optimized so
    that each query's nearest keys are the ones it attends to: an estimate of how much of a head's
    attention a layout of ``dims`` dimensions can show, not a bound (a layout may score a little
    above it). Score it with :func:`fidelity` beside a layout to tell a layout's shortfall from the
    head's. Returns ``(coords, attention_kl)``.
    """
    window = _window(window, causal)
    matrices = _matrices(attention, causal, window)
    return _native.ceiling(matrices, _int("dims", dims, 1), _int("seed", seed), causal, window)
