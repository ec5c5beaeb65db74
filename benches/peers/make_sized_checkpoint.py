#!/usr/bin/env python3
"""Random-weight checkpoints of real model sizes for the extraction benchmark (dev-time only).

No GPT-2 or ViT weights are reachable from this project's machines, and throughput depends on the
sizes, not the values. Both are seeded and saved in Hugging Face layout:

- gpt2-small: 12 layers, 12 heads, hidden 768, MLP 3072, 1024 positions, gelu_new. The tokenizer is
  the tiny byte-level BPE of the attn-extract fixture (300 tokens), so the embedding table has 300
  rows and words split into more tokens than with GPT-2's own vocabulary (the same on both sides).
- vit-base: ViT-B/16 at 224 px (12 layers, 12 heads, hidden 768, MLP 3072), no pooler, with the
  default preprocessing (resize to 224, mean and std 0.5).
- llama-100m: a Llama-shaped decoder of ~100M parameters (12 layers, 12 query / 4 key-value heads,
  hidden 768, MLP 2048, vocabulary 32,000, rope_theta 500,000, 4,096 positions), f32, no LM head. The
  tokenizer is the llama_tiny fixture's byte-level BPE (320 tokens, BOS added), as for gpt2-small.

- llama-100m-bf16: the same weights rounded to bf16 (half the file).

    python make_sized_checkpoint.py {gpt2-small,vit-base,llama-100m,llama-100m-bf16} OUT_DIR
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel, ViTConfig, ViTModel


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
    elif kind in ("llama-100m", "llama-100m-bf16"):
        cfg = LlamaConfig(vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                          num_key_value_heads=4, intermediate_size=2048, max_position_embeddings=4096,
                          rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, bos_token_id=0,
                          eos_token_id=1)
        model = LlamaModel(cfg)
        if kind.endswith("bf16"):
            model = model.to(torch.bfloat16)
        model.save_pretrained(out)
        fixture = Path(__file__).resolve().parents[2] / "attn-extract" / "tests" / "fixtures" / "llama_tiny"
        shutil.copy(fixture / "tokenizer.json", out / "tokenizer.json")
        # AutoTokenizer needs a class name; the BOS comes from tokenizer.json's post-processor.
        (out / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>"}, indent=1))
    else:
        sys.exit(f"unknown kind {kind!r}: gpt2-small, vit-base, llama-100m or llama-100m-bf16")
    print(out)


if __name__ == "__main__":
    main()
