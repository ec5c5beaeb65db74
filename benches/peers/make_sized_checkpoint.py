#!/usr/bin/env python3
"""Random-weight checkpoints of real model sizes for the extraction benchmark (dev-time only).

No GPT-2 or ViT weights are reachable from this project's machines, and throughput depends on the
sizes, not the values. Both are seeded and saved in Hugging Face layout:

- gpt2-small: 12 layers, 12 heads, hidden 768, MLP 3072, 1024 positions, gelu_new. The tokenizer is
  the tiny byte-level BPE of the attn-extract fixture (300 tokens), so the embedding table has 300
  rows and words split into more tokens than with GPT-2's own vocabulary (the same on both sides).
- vit-base: ViT-B/16 at 224 px (12 layers, 12 heads, hidden 768, MLP 3072), no pooler, with the
  default preprocessing (resize to 224, mean and std 0.5).

    python make_sized_checkpoint.py {gpt2-small,vit-base} OUT_DIR
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2Model, ViTConfig, ViTModel


def main():
    kind, out = sys.argv[1], Path(sys.argv[2])
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "gpt2-small":
        GPT2Model(GPT2Config(vocab_size=300, bos_token_id=0, eos_token_id=0)).save_pretrained(out)
        fixture = Path(__file__).resolve().parents[2] / "attn-extract" / "tests" / "fixtures" / "gpt2_tiny"
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(fixture / name, out / name)
    elif kind == "vit-base":
        ViTModel(ViTConfig(), add_pooling_layer=False).save_pretrained(out)
        prep = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                "size": {"height": 224, "width": 224}, "resample": 2, "do_rescale": True,
                "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
        (out / "preprocessor_config.json").write_text(json.dumps(prep, indent=1))
    else:
        sys.exit(f"unknown kind {kind!r}: gpt2-small or vit-base")
    print(out)


if __name__ == "__main__":
    main()
