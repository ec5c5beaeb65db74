"""Queries, keys and attention from a TransformerLens `ActivationCache` (or any mapping with its names).

    logits, cache = model.run_with_cache(texts)          # a HookedTransformer
    c = from_activation_cache(cache, [model.to_str_tokens(t) for t in texts])
    attnviz.import_vectors(c.queries, c.keys, c.tokens, c.attention, causal=c.causal, ...)

Per layer l it reads `blocks.{l}.attn.hook_rot_q` / `hook_rot_k` (after the rotary embedding) when the
cache has them, else `blocks.{l}.attn.hook_q` / `hook_k`, each [batch, pos, head, d_head] (or
[pos, head, d_head] for a cache made with `remove_batch_dim=True`); grouped-query models store
`n_key_value_heads` key heads, kept as they are. The attention is `blocks.{l}.attn.hook_pattern`
[batch, head, query pos, key pos]. Layers are those that have a pattern. Values may be torch tensors
or NumPy arrays; the result is float32 NumPy (see `attnviz.capture.Captured`).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .capture import Captured

__all__ = ["from_activation_cache"]

_PATTERN = re.compile(r"^blocks\.(\d+)\.attn\.hook_pattern$")


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device, in any dtype
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _keys_of(cache) -> list:
    keys = getattr(cache, "keys", None)
    return list(keys()) if callable(keys) else list(cache)


def from_activation_cache(cache: Mapping[str, Any], str_tokens: Sequence[Sequence[str]] | Sequence[str], *,
                          causal: bool = True, model_id: str = "transformer-lens",
                          special_tokens: Iterable[str] | None = None, padding_side: str = "right",
                          window: int | None = None, window_layers: list | None = None) -> Captured:
    """Build a `Captured` from a TransformerLens activation cache.

    str_tokens: per sequence, its token strings (`model.to_str_tokens(text)`); a single list of strings
        is one sequence. Sequence b's rows are its first len(str_tokens[b]) positions (or its last ones
        with padding_side="left"): positions beyond are padding and are dropped.
    special_tokens: token strings to mark `is_special`; by default the special tokens of the cache's
        model's tokenizer (`cache.model.tokenizer`) when there is one, else none.
    window / window_layers: a sliding window (keys `window` or more positions back get no attention)
        and the model layers it applies to; by default read from `cache.model.cfg` (`window_size` and the
        "local" entries of `attn_types`) when the cache carries its model, else none.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"from_activation_cache: padding_side must be right or left (got {padding_side!r})")
    names = set(_keys_of(cache))
    layers = sorted(int(m.group(1)) for m in map(_PATTERN.match, names) if m)
    if not layers:
        raise ValueError("from_activation_cache: no blocks.{l}.attn.hook_pattern in the cache (run the model "
                         "with run_with_cache and keep the attention hooks)")
    if len(str_tokens) and isinstance(str_tokens[0], str):
        str_tokens = [list(str_tokens)]
    str_tokens = [list(s) for s in str_tokens]
    lengths = [len(s) for s in str_tokens]
    if not lengths or min(lengths) == 0:
        raise ValueError("from_activation_cache: every sequence needs at least one token in str_tokens")

    def get(l, *kinds):
        for kind in kinds:
            name = f"blocks.{l}.attn.{kind}"
            if name in names:
                return _np(cache[name]), name
        raise ValueError(f"from_activation_cache: the cache has no {' or '.join(kinds)} for layer {l}")

    n_rows, max_len = sum(lengths), max(lengths)
    qs, ks, attn = None, None, None
    for li, l in enumerate(layers):
        q, qname = get(l, "hook_rot_q", "hook_q")
        k, kname = get(l, "hook_rot_k", "hook_k")
        a, _ = get(l, "hook_pattern")
        if q.ndim == 3:  # remove_batch_dim=True
            q, k, a = q[None], k[None], a[None]
        if q.ndim != 4 or k.ndim != 4 or a.ndim != 4:
            raise ValueError(f"from_activation_cache: layer {l}: expected [batch, pos, head, d_head] queries/keys "
                             f"and [batch, head, pos, pos] pattern, got {q.shape}, {k.shape}, {a.shape}")
        b, pos, H, d = q.shape
        if b != len(lengths):
            raise ValueError(f"from_activation_cache: {len(lengths)} sequences in str_tokens but a batch of {b}")
        if max_len > pos:
            raise ValueError(f"from_activation_cache: a sequence of {max_len} tokens in a cache of {pos} positions")
        if k.shape[0] != b or k.shape[1] != pos or k.shape[3] != d or H % k.shape[2]:
            raise ValueError(f"from_activation_cache: layer {l}: keys {k.shape} do not match queries {q.shape}")
        if a.shape != (b, H, pos, pos):
            raise ValueError(f"from_activation_cache: layer {l}: pattern {a.shape}, expected {(b, H, pos, pos)}")
        if qs is None:
            qs = np.zeros((len(layers), H, n_rows, d), np.float32)
            ks = np.zeros((len(layers), k.shape[2], n_rows, d), np.float32)
            attn = np.zeros((len(layers), H, n_rows, max_len), np.float32)
        elif (H, k.shape[2], d) != (qs.shape[1], ks.shape[1], qs.shape[3]):
            raise ValueError(f"from_activation_cache: layer {l} has other head counts or sizes than layer {layers[0]}")
        start = 0
        for bi, n in enumerate(lengths):
            sl = slice(0, n) if padding_side == "right" else slice(pos - n, pos)
            qs[li, :, start:start + n] = q[bi, sl].transpose(1, 0, 2)
            ks[li, :, start:start + n] = k[bi, sl].transpose(1, 0, 2)
            attn[li, :, start:start + n, :n] = a[bi][:, sl, sl]
            start += n

    model = getattr(cache, "model", None)
    if special_tokens is None:
        tok = getattr(model, "tokenizer", None)
        special_tokens = getattr(tok, "all_special_tokens", None) or []
    special = set(special_tokens)
    cfg = getattr(model, "cfg", None)
    if window is None and cfg is not None:
        size, types = getattr(cfg, "window_size", None), getattr(cfg, "attn_types", None)
        if isinstance(size, int) and types:
            local = [l for l in layers if l < len(types) and types[l] == "local"]
            if local:
                window, window_layers = size, (None if local == layers else local)
    tokens = [{"seq_id": si, "position": p, "text": str(t), "is_special": str(t) in special}
              for si, seq in enumerate(str_tokens) for p, t in enumerate(seq)]
    return Captured(queries=qs, keys=ks, attention=attn, tokens=tokens, causal=bool(causal), window=window,
                    window_layers=window_layers, model_id=model_id, layers=layers)
