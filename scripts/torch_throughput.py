#!/usr/bin/env python3
"""PyTorch + transformers baseline for attn-extract's examples/throughput.rs (dev-time only).

Same corpus (same 64-bit LCG), same work: every layer's per-head Q and K (hooked Linear outputs)
and attention probabilities copied to host numpy arrays, sequences batched by similar length.

    python scripts/torch_throughput.py <model dir> [sentences=300] [batch=16] [repeats=5]

Like the Rust example, every run is repeated and the median and best are printed.
"""

import sys
import time

import torch
from transformers import AutoTokenizer, BertModel

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


def run(model, tok, texts, batch, capture):
    enc = [tok(t)["input_ids"] for t in texts]
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


def main():
    model_dir = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    capture = []
    for layer in model.encoder.layer:
        for lin in (layer.attention.self.query, layer.attention.self.key):
            lin.register_forward_hook(lambda _m, _i, o: capture.append(o.detach()))
    texts = corpus(n)
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    run(model, tok, texts[:batch], batch, capture)  # warm-up
    rates = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        tokens = run(model, tok, texts, batch, capture)
        rates.append(tokens / (time.perf_counter() - t0))
    rates.sort()
    print(f"{n} sentences, {tokens} tokens, batch {batch}: median {rates[len(rates) // 2]:.0f} tokens/s, "
          f"best {rates[-1]:.0f} ({len(rates)} runs: {', '.join(f'{r:.0f}' for r in rates)}) "
          f"(torch {torch.__version__}, 2 threads)")


if __name__ == "__main__":
    main()
