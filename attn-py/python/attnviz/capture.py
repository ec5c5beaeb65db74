"""Capture queries, keys and attention of any Hugging Face transformers model (torch optional).

`capture_vectors(model, tokenizer, texts)` runs a `transformers` model on the texts and records, for
every (selected) layer, what its attention multiplies:

* queries as the attention receives them: after the projection (bias included), after per-head norms
  (Qwen3, Gemma 3) and after rotary embeddings where the model has them, before any 1/sqrt(d) scaling;
* keys likewise, once per key head (grouped-query models are not repeated to the query heads);
* the attention probabilities the model's own eager attention computes (its scaling, soft-capping,
  attention sinks, causal / sliding-window / padding masks).

`capture(...)` does the same and imports the result into an attnviz dataset (`attnviz.import_vectors`).

How: a custom attention function is registered in transformers' `AttentionInterface` (with the eager
mask builder in `AttentionMaskInterface`) and selected with `model.set_attn_implementation` for the
duration of the run, the model's previous implementation being restored afterwards, also on errors.
The function hands the call over to the `eager_attention_forward` of the attention module's own
modeling file, with the same arguments, and records its inputs (`query` [b, heads, n, d], `key`
[b, kv_heads, n, d]) and the probabilities it returns. Verified on BERT, GPT-2, Llama, Mistral, Qwen2,
Qwen3 (against attn-extract's reference fixtures) and Gemma 2 (soft-capping, sliding layers).

Fallback for families whose attention classes do not go through the `AttentionInterface` (older
ones: GPT-J, GPT-Neo, Falcon, Bloom, DeBERTa, ... in transformers 5.x): the attention comes from
`output_attentions=True` and queries/keys from forward hooks on per-layer `query`/`q_proj`/`q_lin`
and `key`/`k_proj`/`k_lin` linear layers (verified on MegatronBERT). It is refused (ValueError) for
those that rotate queries and keys inside the attention (rotary embeddings, e.g. GPT-J) or add
relative position terms, since hooks would see vectors other than those the attention multiplies.

Encoder-decoder and cross-attention models are refused with a ValueError.

Batching: each text is tokenized on its own (the tokenizer's special tokens added, truncated to
`max_length` when given), texts of similar length are batched together and padded on the right, with
explicit position ids (counted over the real tokens) where the model's forward accepts them; pad
positions are removed again with the attention mask, so every sequence's rows are exactly its tokens,
whatever the batch size.

Token texts are the tokenizer's own token strings (`convert_ids_to_tokens`: `Ġthe`, `##ing`,
`▁world`, `<0xC3>`), as attn-extract and the viewer show them: they keep the word boundaries visible
and, unlike decoding single ids, never turn a byte-level piece of a multi-byte character into
U+FFFD. `is_special` marks the tokenizer's special ids and the tokens its post-processor added.

Memory: the returned arrays are float32 and hold, with L captured layers, H heads, G key heads,
d the head size, N the number of tokens of all texts and T the longest text:
queries L*H*N*d, keys L*G*N*d and attention L*H*N*T floats (4 bytes each). The attention dominates
for long texts: 12 layers x 12 heads x 100 texts of 512 tokens is 12*12*51200*512*4 B = 15 GB; select
layers (`layers=[...]`) or use shorter / fewer texts accordingly. On the model's device only one
batch's activations are alive at a time.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Captured", "capture", "capture_vectors"]

ATTN_NAME = "attnviz_capture"
_TORCH_MSG = "attnviz.capture needs PyTorch and transformers: pip install torch transformers"


@dataclass
class Captured:
    """What `capture_vectors` records (see the module documentation for the conventions)."""

    queries: np.ndarray  # float32 [layers, heads, N, head_dim]
    keys: np.ndarray  # float32 [layers, kv_heads, N, head_dim]
    attention: np.ndarray  # float32 [layers, heads, N, max_len]
    tokens: list  # {"seq_id", "position", "text", "is_special"} per row
    causal: bool
    window: int | None = None
    window_layers: list | None = None  # model layer indices the window applies to (None = all)
    model_id: str = "model"
    layers: list = field(default_factory=list)  # model layer index of each entry of the first axis

    def __repr__(self) -> str:
        L, H, N, d = self.queries.shape
        return (f"Captured(model_id={self.model_id!r}, layers={self.layers}, heads={H}, "
                f"kv_heads={self.keys.shape[1]}, head_dim={d}, tokens={N}, "
                f"sequences={len({t['seq_id'] for t in self.tokens})}, causal={self.causal}, "
                f"window={self.window}, window_layers={self.window_layers})")


def _require_torch():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise ImportError(_TORCH_MSG) from None
    return torch, transformers


def _progress(items, progress, stage="capture"):
    """Iterate `items` with progress: `True` a tqdm bar when tqdm is installed, a callable gets
    `(kind, stage, value)` as attnviz's other functions give it ("start" with the total, "advance"
    with the batches done, "finish"), `False` / None nothing."""
    total = len(items)
    if callable(progress):
        def report():
            progress("start", stage, total)
            for i, item in enumerate(items):
                yield item
                progress("advance", stage, i + 1)
            progress("finish", stage, total)
        return report()
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return items
        return tqdm(items, total=total, desc=f"attnviz {stage}", unit="batch")
    return items


# --------------------------------------------------------------------------------------------------
# The attention function registered in transformers.

_ACTIVE: list = []  # the recorder of the run in progress (a stack: nested runs record innermost)


def _generic_eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None,
                   **kwargs):
    """Llama-style eager attention, for attention modules whose file has no eager function."""
    import torch

    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if scaling is None:
        scaling = getattr(module, "scaling", None) or query.shape[-1] ** -0.5
    w = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        w = torch.tanh(w / softcap) * softcap
    if attention_mask is not None:
        w = w + attention_mask[:, :, :, : key.shape[-2]]
    w = torch.softmax(w, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(w, value).transpose(1, 2).contiguous()
    return out, w


def _eager_for(module):
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    return fn if callable(fn) else _generic_eager


def _attnviz_attention(module, query, key, value, attention_mask, **kwargs):
    out, weights = _eager_for(module)(module, query, key, value, attention_mask, **kwargs)
    if _ACTIVE:
        _ACTIVE[-1].record(module, query, key, weights, attention_mask, kwargs)
        # A pad query whose every key is masked gets NaN probabilities where the mask becomes -inf
        # (float64 models, whose mask is cast to -inf by a float32 softmax; float16 overflow) and a
        # window or left padding hides all its keys; zeroed here so that they cannot reach the real
        # tokens through 0 * NaN in the next layer. A real token's row always has a key: its own.
        nan = out.isnan()
        if bool(nan.any()):
            out = out.masked_fill(nan, 0.0)
    return out, weights


def _register():
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import eager_mask

    AttentionInterface.register(ATTN_NAME, _attnviz_attention)
    # Without a mask builder of its own, transformers would hand a custom implementation no mask.
    AttentionMaskInterface.register(ATTN_NAME, eager_mask)


# --------------------------------------------------------------------------------------------------
# Recording.


class _Recorder:
    def __init__(self, layers: list, n_layers: int, n_rows: int, max_len: int):
        self.layers = layers
        self.slot = {l: i for i, l in enumerate(layers)}
        self.n_layers = n_layers
        self.n_rows = n_rows
        self.max_len = max_len
        self.order: dict = {}  # id(module) -> layer, for modules without a `layer_idx`
        self.q = self.k = self.a = None
        self.batch: list = []  # (first row, real positions tensor) per batch item
        self.seen: set = set()
        self.calls = 0
        self.causal: dict = {}  # layer -> bool (from the module), or None
        self.window: dict = {}  # layer -> int | None ("sliding_window" given to the attention)
        self.window_given: set = set()
        self.mask_causal: dict = {}

    def layer_of(self, module) -> int:
        idx = getattr(module, "layer_idx", None)
        if isinstance(idx, int):
            return idx
        return self.order.setdefault(id(module), len(self.order))

    def record(self, module, query, key, weights, attention_mask, kwargs):
        self.calls += 1
        if getattr(module, "is_cross_attention", False) or kwargs.get("is_cross_attention"):
            raise ValueError(f"attnviz.capture: cross-attention ({type(module).__name__}) is not supported")
        b, H, n, d = query.shape
        if key.ndim != 4 or key.shape[0] != b or key.shape[-1] != d or weights is None \
                or tuple(weights.shape) != (b, H, n, key.shape[2]):
            raise ValueError(
                f"attnviz.capture: unexpected attention shapes in {type(module).__name__} (query "
                f"{tuple(query.shape)}, key {tuple(key.shape)}, weights "
                f"{None if weights is None else tuple(weights.shape)})")
        if key.shape[2] != n:
            raise ValueError(
                f"attnviz.capture: {type(module).__name__} attends from {n} queries to {key.shape[2]} keys "
                "(cross-attention, memory or cached keys): not supported")
        if H % key.shape[1]:
            raise ValueError(f"attnviz.capture: {H} query heads are not a multiple of {key.shape[1]} key heads")
        layer = self.layer_of(module)
        if layer >= self.n_layers:
            raise ValueError(
                f"attnviz.capture: attention layer {layer} beyond the model's {self.n_layers} layers "
                "(more attention modules than config.num_hidden_layers: encoder-decoder or cross-attention?)")
        if layer in self.seen:
            raise ValueError(
                f"attnviz.capture: layer {layer} attended twice in one forward pass "
                "(cross-attention or a shared attention module: not supported)")
        self.seen.add(layer)
        is_causal = getattr(module, "is_causal", None)
        if "is_causal" in kwargs and isinstance(kwargs["is_causal"], bool):
            is_causal = kwargs["is_causal"]
        self.causal.setdefault(layer, is_causal if isinstance(is_causal, bool) else None)
        if "sliding_window" in kwargs:
            self.window_given.add(layer)
            w = kwargs["sliding_window"]
            self.window.setdefault(layer, int(w) if w is not None else None)
        if self.mask_causal.get(layer) is None:
            self.mask_causal[layer] = _mask_is_causal(attention_mask, self.batch)
        if layer not in self.slot:
            return
        self.store(self.slot[layer], query.detach(), key.detach(), weights.detach())

    def store(self, li, q, k, w):
        if self.q is None:
            L = len(self.layers)
            self.q = np.zeros((L, q.shape[1], self.n_rows, q.shape[3]), np.float32)
            self.k = np.zeros((L, k.shape[1], self.n_rows, k.shape[3]), np.float32)
            self.a = np.zeros((L, q.shape[1], self.n_rows, self.max_len), np.float32)
        if q.shape[1] != self.q.shape[1] or k.shape[1] != self.k.shape[1] or q.shape[3] != self.q.shape[3]:
            raise ValueError("attnviz.capture: layers differ in head count or head size: not supported")
        for bi, (start, pos) in enumerate(self.batch):
            n = int(pos.numel())
            pos = pos.to(q.device)
            self.q[li, :, start:start + n] = q[bi][:, pos].float().cpu().numpy()
            self.k[li, :, start:start + n] = k[bi][:, pos].float().cpu().numpy()
            self.a[li, :, start:start + n, :n] = w[bi][:, pos][:, :, pos].float().cpu().numpy()


def _mask_is_causal(mask, batch) -> bool | None:
    """Whether the additive / boolean mask hides every later key from every real token (None: no
    evidence, i.e. no sequence longer than one token)."""
    if mask is None:
        return False
    import torch

    if not isinstance(mask, torch.Tensor) or mask.ndim != 4:
        return None
    evidence = None
    for bi, (_, pos) in enumerate(batch):
        n = int(pos.numel())
        if n < 2:
            continue
        m = mask[bi if mask.shape[0] > 1 else 0, 0]
        pos = pos.to(m.device)
        m = m[pos][:, pos]
        hidden = ~m if m.dtype == torch.bool else m < torch.finfo(m.dtype).min / 2
        upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=m.device), 1)
        if not bool(hidden[upper].all()):
            return False
        evidence = True
    return evidence


# --------------------------------------------------------------------------------------------------
# Model inspection.


def _text_config(model):
    cfg = model.config
    get = getattr(cfg, "get_text_config", None)
    return get() if callable(get) else cfg


def _n_layers(model) -> int:
    cfg = _text_config(model)
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    raise ValueError(f"attnviz.capture: cannot tell the number of layers of {type(model).__name__} "
                     "(no num_hidden_layers in its config)")


def _refuse_unsupported(model):
    cfg = model.config
    name = type(model).__name__
    if getattr(cfg, "is_encoder_decoder", False):
        raise ValueError(f"attnviz.capture: encoder-decoder models ({name}) are not supported; "
                         "capture a decoder-only or encoder-only model")
    for c in {id(cfg): cfg, id(_text_config(model)): _text_config(model)}.values():
        if getattr(c, "add_cross_attention", False):
            raise ValueError(f"attnviz.capture: models with cross-attention layers ({name}) are not supported")


def model_id_of(model) -> str:
    path = getattr(model.config, "name_or_path", "") or ""
    base = os.path.basename(str(path).rstrip("/\\"))
    return base or type(model).__name__


def _window_from_config(model, n_layers):
    """(window, layers it applies to) from the config, for models that do not tell the attention."""
    cfg = _text_config(model)
    w = getattr(cfg, "sliding_window", None)
    if not isinstance(w, int) or w <= 0 or getattr(cfg, "use_sliding_window", True) is False:
        return {}
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == n_layers:
        return {l: w for l, t in enumerate(types) if t == "sliding_attention"}
    return {l: w for l in range(n_layers)}


def _can_use_interface(model) -> bool:
    from transformers import PreTrainedModel

    for m in model.modules():
        if isinstance(m, PreTrainedModel):
            can = getattr(type(m), "_can_set_attn_implementation", None)
            if callable(can) and not can():
                return False
    return True


def _configs(model):
    from transformers import PreTrainedModel

    seen, out, todo = set(), [], [m.config for m in model.modules() if isinstance(m, PreTrainedModel)]
    while todo:
        c = todo.pop()
        if c is None or id(c) in seen:
            continue
        seen.add(id(c))
        out.append(c)
        for key in getattr(c, "sub_configs", {}) or {}:
            todo.append(getattr(c, key, None))
    return out


def _forward_params(module) -> set:
    try:
        return {n for n, p in inspect.signature(module.forward).parameters.items()
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    except (TypeError, ValueError):
        return set()


# --------------------------------------------------------------------------------------------------
# Tokenization and batching.


def _max_positions(model):
    """The most positions the model's position embeddings take (``None``: no limit known, e.g.
    rotary models, whose positions are computed)."""
    for config in _configs(model):
        if getattr(config, "position_embedding_type", "absolute") not in ("absolute", None):
            return None
        if getattr(config, "rope_theta", None) is not None or getattr(config, "rope_parameters", None):
            return None
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def _encode(tokenizer, texts, max_length):
    special_ids = set(getattr(tokenizer, "all_special_ids", None) or [])
    seqs = []
    for si, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"attnviz.capture: texts must be strings (text {si} is {type(text).__name__})")
        enc = tokenizer(text, add_special_tokens=True, truncation=max_length is not None,
                        max_length=max_length, return_special_tokens_mask=True)
        ids = list(enc["input_ids"])
        if ids and isinstance(ids[0], list):  # a tokenizer that always batches
            ids = ids[0]
        if not ids:
            raise ValueError(f"attnviz.capture: text {si} has no tokens")
        smask = enc.get("special_tokens_mask") or [0] * len(ids)
        if smask and isinstance(smask[0], list):
            smask = smask[0]
        extra = {}
        if "token_type_ids" in enc:
            tt = enc["token_type_ids"]
            extra["token_type_ids"] = list(tt[0] if tt and isinstance(tt[0], list) else tt)
        texts_ = tokenizer.convert_ids_to_tokens(ids)
        tokens = [{"seq_id": si, "position": p, "text": str(t),
                   "is_special": bool(ids[p] in special_ids or (p < len(smask) and smask[p]))}
                  for p, t in enumerate(texts_)]
        seqs.append({"ids": ids, "tokens": tokens, **extra})
    return seqs


def _pad_id(tokenizer, model) -> int:
    """An id the embedding accepts (pad positions are masked out; tiny tokenizers may name a pad id
    beyond the model's vocabulary)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    vocab = getattr(emb, "num_embeddings", None)
    for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tokenizer, name, None)
        if isinstance(v, int) and 0 <= v and (vocab is None or v < vocab):
            return v
    return 0


def _make_batch(torch, seqs, idx, pad_id, padding_side, device, accepted):
    n = max(len(seqs[i]["ids"]) for i in idx)
    ids = torch.full((len(idx), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), n), dtype=torch.long)
    tt = torch.zeros((len(idx), n), dtype=torch.long)
    for b, i in enumerate(idx):
        s = seqs[i]
        m = len(s["ids"])
        sl = slice(0, m) if padding_side == "right" else slice(n - m, n)
        ids[b, sl] = torch.tensor(s["ids"], dtype=torch.long)
        mask[b, sl] = 1
        if "token_type_ids" in s:
            tt[b, sl] = torch.tensor(s["token_type_ids"], dtype=torch.long)
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if "position_ids" in accepted:
        inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
    if "token_type_ids" in accepted and any("token_type_ids" in seqs[i] for i in idx):
        inputs["token_type_ids"] = tt.to(device)
    if "use_cache" in accepted:
        inputs["use_cache"] = False
    positions = [mask[b].nonzero().flatten() for b in range(len(idx))]
    return inputs, positions


# --------------------------------------------------------------------------------------------------
# The public functions.


def capture_vectors(model, tokenizer, texts: str | Sequence[str], *, layers: Iterable[int] | None = None,
                    max_length: int | None = None, batch_size: int = 8, progress: bool = True,
                    _padding_side: str = "right") -> Captured:
    """Run `model` (a transformers `PreTrainedModel`) on `texts` and capture every selected layer's
    queries, keys and attention probabilities (see the module documentation: conventions, memory).

    layers: model layer indices (negative ones count from the end); None = all layers.
    max_length: truncate each text to this many tokens (special tokens included).
    batch_size: texts per forward pass; results do not depend on it (up to float rounding).
    progress: True (a tqdm bar when tqdm is installed), False, or a callable `(kind, stage, value)`.
    Returns a `Captured`; the model's attention implementation and train/eval mode are restored.
    """
    torch, _ = _require_torch()
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("attnviz.capture: no texts")
    if batch_size < 1:
        raise ValueError(f"attnviz.capture: batch_size must be at least 1 (got {batch_size})")
    if _padding_side not in ("right", "left"):
        raise ValueError(f"attnviz.capture: padding side must be right or left (got {_padding_side!r})")
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise TypeError("attnviz.capture: model must be a transformers PreTrainedModel")
    _refuse_unsupported(model)
    n_layers = _n_layers(model)
    if layers is None:
        sel = list(range(n_layers))
    else:
        sel = []
        for l in ([layers] if np.ndim(layers) == 0 else layers):
            l = int(l)
            if not -n_layers <= l < n_layers:
                raise ValueError(f"attnviz.capture: layer {l} out of range (the model has {n_layers} layers)")
            sel.append(l % n_layers)
        sel = sorted(set(sel))
        if not sel:
            raise ValueError("attnviz.capture: no layers selected")

    seqs = _encode(tokenizer, texts, max_length)
    limit = _max_positions(model)
    for si, sq in enumerate(seqs):
        if limit is not None and len(sq["ids"]) > limit:
            raise ValueError(
                f"attnviz.capture: text {si} has {len(sq['ids'])} tokens, more than the model's {limit} "
                f"positions; pass max_length={limit} to cut longer texts"
            )
    dtype = next((p.dtype for p in model.parameters()), None)
    if dtype is not None and dtype.is_floating_point and torch.finfo(dtype).bits < 32:
        warnings.warn(
            f"attnviz.capture: the model computes in {dtype} (transformers loads a checkpoint's own "
            f"dtype); its vectors are captured as float32 but carry {dtype}'s precision. Load it with "
            "dtype=torch.float32 for float32 vectors.",
            stacklevel=2,
        )
    starts = np.cumsum([0] + [len(s["ids"]) for s in seqs]).tolist()
    n_rows, max_len = starts[-1], max(len(s["ids"]) for s in seqs)
    # Batches of similar lengths: less padding; the rows still land in text order.
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]["ids"]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    runner = getattr(model, "base_model", None)
    if not isinstance(runner, torch.nn.Module) or runner is model or not _forward_params(runner) & {"input_ids"}:
        runner = model  # no separate base model: run the whole one
    accepted = _forward_params(runner)
    try:
        device = next(p.device for p in model.parameters())
    except StopIteration:
        device = torch.device("cpu")
    pad_id = _pad_id(tokenizer, model)
    rec = _Recorder(sel, n_layers, n_rows, max_len)

    use_interface = _can_use_interface(model)
    configs = _configs(model)
    saved = [(c, getattr(c, "_attn_implementation_internal", None)) for c in configs]
    was_training = model.training
    handles = []
    try:
        model.eval()
        if use_interface:
            _register()
            model.set_attn_implementation(ATTN_NAME)
        else:
            fb = _Fallback(model, sel, n_layers, rec)
            handles = fb.hooks
        _ACTIVE.append(rec)
        with torch.inference_mode():
            for idx in _progress(batches, progress):
                inputs, positions = _make_batch(torch, seqs, idx, pad_id, _padding_side, device, accepted)
                rec.batch = [(starts[i], positions[b]) for b, i in enumerate(idx)]
                rec.seen = set()
                if use_interface:
                    runner(**inputs)
                    if rec.calls == 0:
                        raise ValueError(
                            f"attnviz.capture: {type(model).__name__} did not call transformers' attention "
                            "interface: its attention cannot be captured")
                else:
                    fb.run(runner, inputs)
    finally:
        if _ACTIVE and _ACTIVE[-1] is rec:
            _ACTIVE.pop()
        for h in handles:
            h.remove()
        for c, impl in saved:
            if getattr(c, "_attn_implementation_internal", None) != impl:
                c._attn_implementation_internal = impl
        model.train(was_training)

    missing = [l for l in sel if l not in rec.causal]
    if missing or rec.q is None:
        raise ValueError(f"attnviz.capture: no attention captured for layer(s) {missing or sel} of "
                         f"{type(model).__name__}")

    tokens = [t for s in seqs for t in s["tokens"]]
    causal = _decide_causal(model, rec, n_layers)
    window, window_layers = _decide_window(model, rec, n_layers, sel)
    return Captured(queries=rec.q, keys=rec.k, attention=rec.a, tokens=tokens, causal=causal,
                    window=window, window_layers=window_layers, model_id=model_id_of(model), layers=sel)


def _decide_causal(model, rec, n_layers) -> bool:
    """What the eager attention did (the mask it was given: every later real key hidden from every
    real token, or not), else what the attention modules say (`is_causal`), else the config."""
    for source in (rec.mask_causal, rec.causal):
        seen = {v for v in source.values() if v is not None}
        if len(seen) > 1:
            raise ValueError("attnviz.capture: some layers are causal and others are not: not supported")
        if seen:
            return seen.pop()
    cfg = _text_config(model)
    return bool(getattr(cfg, "is_decoder", False) or getattr(cfg, "is_causal", False)
                or type(model).__name__.endswith(("ForCausalLM", "LMHeadModel")))


def _decide_window(model, rec, n_layers, sel):
    if rec.window_given:
        per = {l: rec.window.get(l) for l in rec.window_given}
        if len(rec.window_given) < n_layers:  # layers that did not say: from the config
            for l, w in _window_from_config(model, n_layers).items():
                per.setdefault(l, w)
    else:
        per = _window_from_config(model, n_layers)
    per = {l: w for l, w in per.items() if w is not None}
    sizes = sorted(set(per.values()))
    if len(sizes) > 1:
        raise ValueError(f"attnviz.capture: layers use different sliding windows {sizes}: not supported")
    if not sizes:
        return None, None
    on = [l for l in sel if l in per]
    if not on:
        return None, None
    return sizes[0], (None if on == sel else on)


class _Fallback:
    """Forward hooks on per-layer q/k linear layers + `output_attentions`, for attention modules that
    do not use transformers' AttentionInterface (non-rotary ones only)."""

    Q_NAMES = ("q_proj", "query", "q_lin")
    K_NAMES = ("k_proj", "key", "k_lin")

    def __init__(self, model, sel, n_layers, rec):
        import torch

        name = type(model).__name__
        rotary = [type(m).__name__ for m in model.modules() if "rotary" in type(m).__name__.lower()]
        cfg = _text_config(model)
        if rotary or getattr(cfg, "rotary_dim", None) or getattr(cfg, "rope_parameters", None) \
                or getattr(cfg, "position_embedding_type", "absolute") not in ("absolute", None):
            raise ValueError(
                f"attnviz.capture: {name} computes attention outside transformers' AttentionInterface and "
                "applies position embeddings inside it (rotary or relative): its queries and keys cannot be "
                "captured as attention uses them")
        lin = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        qs = [m for n, m in lin.items() if n.rsplit(".", 1)[-1] in self.Q_NAMES]
        ks = [m for n, m in lin.items() if n.rsplit(".", 1)[-1] in self.K_NAMES]
        if len(qs) != n_layers or len(ks) != n_layers:
            raise ValueError(
                f"attnviz.capture: {name} does not use transformers' AttentionInterface and has no per-layer "
                "query/key projections that hooks could read: not supported")
        self.heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        if not isinstance(self.heads, int):
            raise ValueError(f"attnviz.capture: cannot tell the head count of {name}")
        self.sel, self.rec = sel, rec
        self.out: dict = {}
        self.hooks = []
        for l in sel:
            self.hooks.append(qs[l].register_forward_hook(self._hook(("q", l))))
            self.hooks.append(ks[l].register_forward_hook(self._hook(("k", l))))

    def _hook(self, key):
        def fn(_m, _inp, out):
            self.out[key] = out.detach()
        return fn

    def run(self, runner, inputs):
        o = runner(**inputs, output_attentions=True)
        att = getattr(o, "attentions", None)
        if att is None or len(att) <= max(self.sel):
            raise ValueError(f"attnviz.capture: {type(runner).__name__} returned no attention probabilities")
        for l in self.sel:
            w = att[l]
            q, k = self.out.pop(("q", l)), self.out.pop(("k", l))
            b, n = q.shape[:2]
            d = q.shape[-1] // self.heads
            q = q.reshape(b, n, self.heads, d).transpose(1, 2)
            k = k.reshape(b, n, k.shape[-1] // d, d).transpose(1, 2)
            self.rec.causal.setdefault(l, None)
            if self.rec.mask_causal.get(l) is None:
                self.rec.mask_causal[l] = _weights_are_causal(w, self.rec.batch)
            self.rec.store(self.rec.slot[l], q, k, w)


def _weights_are_causal(w, batch) -> bool | None:
    import torch

    evidence = None
    for bi, (_, pos) in enumerate(batch):
        n = int(pos.numel())
        if n < 2:
            continue
        pos = pos.to(w.device)
        a = w[bi][:, pos][:, :, pos]
        upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=w.device), 1)
        if bool((a[:, upper] != 0).any()):
            return False
        evidence = True
    return evidence


def capture(model, tokenizer, texts, out=None, *, layers=None, max_length=None, batch_size=8, model_id=None,
            overwrite=False, progress=True, **import_options):
    """`capture_vectors`, then import the vectors into an attnviz dataset at `out` (default
    `attnviz-data/<model id>`) with `attnviz.import_vectors`; returns the `attnviz.Dataset`.

    `import_options` go to `import_vectors` (`normalize`, `seed`, `heads`); the captured layers are
    the dataset's layers, numbered as in the model, which keeps its size. Lay the dataset out with
    `Dataset.project`."""
    _require_torch()
    if {"layers", "layer_ids", "model_layers"} & set(import_options):
        raise TypeError("attnviz.capture: choose layers with `layers=`; the captured ones are imported")
    from attnviz import import_vectors
    from attnviz.pipeline import check_out

    if out is not None:
        check_out(out, overwrite)  # before the model runs, not after
    c = capture_vectors(model, tokenizer, texts, layers=layers, max_length=max_length, batch_size=batch_size,
                        progress=progress)
    if model_id is not None:
        c.model_id = str(model_id)
    if out is None:
        out = os.path.join("attnviz-data", c.model_id)
    return import_vectors(c.queries, c.keys, c.tokens, c.attention, out=out, model_id=c.model_id,
                          causal=c.causal, window=c.window, window_layers=c.window_layers, layer_ids=c.layers,
                          model_layers=_n_layers(model), overwrite=overwrite, progress=progress,
                          **import_options)
