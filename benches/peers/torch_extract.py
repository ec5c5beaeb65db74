#!/usr/bin/env python3
"""PyTorch + transformers side of the extraction benchmark (benches/src/bin/extract_compare.rs).

Same corpus as the Rust side (same 64-bit LCG), same work: every layer's per-head Q and K (hooked
Linear outputs) and attention probabilities copied to host numpy arrays, sequences batched by
similar length. Each run is repeated; the last line of stdout is a JSON record of all rates.

    python torch_extract.py <model dir> [--sentences 300] [--batch 16] [--repeats 5] [--threads 2] [--truncate] [--images DIR]
"""

import argparse
import json
import os
import sys
import time

import torch
from transformers import AutoModel, AutoTokenizer

WORDS = [
    "the", "a", "model", "attention", "head", "query", "key", "value", "token", "sentence", "cat", "dog",
    "runs", "jumps", "over", "under", "quickly", "slowly", "red", "blue", "green", "small", "large",
    "and", "or", "but", "because", "when", "while", "house", "tree", "river", "mountain", "city", "book",
    "reads", "writes", "sees", "finds", "loses", "happy", "sad", "bright", "dark", "old", "new", "in",
    "on", "at", "with", "from", "into", "language", "vision", "transformer", "layer", "picture", "music",
    "science", "history", "people", "children", "morning", "evening",
]
MASK = (1 << 64) - 1


def corpus(n):
    state = 42

    def nxt():
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) & MASK
        return state >> 33

    out = []
    for _ in range(n):
        length = 8 + nxt() % 25
        out.append(" ".join([WORDS[nxt() % len(WORDS)] for _ in range(length)] + ["."]))
    return out


def run(model, tok, texts, batch, capture, max_len=None):
    enc = [tok(t, truncation=max_len is not None, max_length=max_len)["input_ids"] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]))
    tokens = 0
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        seq = max(len(enc[i]) for i in idx)
        ids = torch.zeros((len(idx), seq), dtype=torch.long)
        mask = torch.zeros((len(idx), seq), dtype=torch.long)
        for b, i in enumerate(idx):
            ids[b, :len(enc[i])] = torch.tensor(enc[i])
            mask[b, :len(enc[i])] = 1
            tokens += len(enc[i])
        capture.clear()
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
        _host = [c.numpy() for c in capture] + [a.numpy() for a in out.attentions]
    return tokens


def run_images(model, processor, images, batch, capture):
    """ViT: the same decoded pixels as the Rust side, preprocessing included in the time."""
    tokens = 0
    for start in range(0, len(images), batch):
        pixels = processor(images=images[start:start + batch], return_tensors="pt")["pixel_values"]
        capture.clear()
        with torch.no_grad():
            out = model(pixel_values=pixels, output_attentions=True)
        _host = [c.numpy() for c in capture] + [a.numpy() for a in out.attentions]
        tokens += out.attentions[0].shape[0] * out.attentions[0].shape[-1]
    return tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--truncate", action="store_true", help="cut sequences to the model's positions")
    ap.add_argument("--images", help="a folder of PNGs (ViT models; --sentences is then ignored)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    extra = {"add_pooling_layer": False} if a.images else {}  # ViT: no pooler (attn-extract has none)
    model = AutoModel.from_pretrained(a.model_dir, attn_implementation="eager", **extra).eval()
    capture = []
    hook = lambda _m, _i, o: capture.append(o.detach())
    if model.config.model_type == "gpt2":
        # GPT-2 projects q, k and v in one Conv1D; its output holds Q and K.
        for block in model.h:
            block.attn.c_attn.register_forward_hook(hook)
    elif model.config.model_type == "vit":
        # transformers 5.x: ViTModel.layers and q_proj/k_proj in memory (4.x: encoder.layer, query/key).
        for layer in model.layers if hasattr(model, "layers") else model.encoder.layer:
            att = layer.attention
            for lin in (getattr(att, "q_proj", None) or att.attention.query,
                        getattr(att, "k_proj", None) or att.attention.key):
                lin.register_forward_hook(hook)
    elif model.config.model_type in ("llama", "mistral", "qwen2", "qwen3"):
        # Llama family: q_proj/k_proj outputs (the rotation happens inside the attention forward, in
        # the timed work either way).
        for layer in model.layers:
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                lin.register_forward_hook(hook)
    else:
        for layer in model.encoder.layer:
            for lin in (layer.attention.self.query, layer.attention.self.key):
                lin.register_forward_hook(hook)
    if a.images:
        from PIL import Image
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(a.model_dir)
        files = sorted(p for p in os.listdir(a.images) if p.endswith(".png"))
        images = [Image.open(os.path.join(a.images, f)).convert("RGB") for f in files]
        once = lambda items: run_images(model, processor, items, a.batch, capture)
        work = images
    else:
        tok = AutoTokenizer.from_pretrained(a.model_dir)
        max_len = model.config.max_position_embeddings if a.truncate else None  # n_positions for GPT-2
        once = lambda items: run(model, tok, items, a.batch, capture, max_len)
        work = corpus(a.sentences)
    once(work[:a.batch])  # warm-up
    rates = []
    tokens = 0
    for _ in range(max(a.repeats, 1)):
        t0 = time.perf_counter()
        tokens = once(work)
        rates.append(tokens / (time.perf_counter() - t0))
    print(json.dumps({"tokens": tokens, "rates": rates, "torch": torch.__version__,
                      "transformers": __import__("transformers").__version__, "threads": a.threads}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
