#!/usr/bin/env python3
"""A GPT-2-small-sized random-weight checkpoint for the extraction benchmark (dev-time only).

No GPT-2 weights are reachable from this project's machines, and throughput depends on the sizes, not
the values: 12 layers, 12 heads, hidden 768, MLP 3072, 1024 positions, gelu_new, seeded random
weights. The tokenizer is the tiny byte-level BPE of the attn-extract fixture (300 tokens), so the
embedding table is 300 rows and words split into more tokens than with GPT-2's own vocabulary (the
same on both sides of the comparison).

    python make_gpt2_small.py OUT_DIR
"""
import shutil
import sys
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2Model


def main():
    out = Path(sys.argv[1])
    fixture = Path(__file__).resolve().parents[2] / "attn-extract" / "tests" / "fixtures" / "gpt2_tiny"
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=300, bos_token_id=0, eos_token_id=0)
    model = GPT2Model(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(fixture / name, out / name)
    print(out)


if __name__ == "__main__":
    main()
