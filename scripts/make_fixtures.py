#!/usr/bin/env python3
"""Build the reference fixtures of attn-extract (dev-time only; CI never runs this).

For each model family (BERT, GPT-2, ViT patch 16 and patch 32) this script builds a tiny, seeded,
random-weight checkpoint with deliberately non-default sizes, writes it in Hugging Face layout
(config.json, model.safetensors, tokenizer files / preprocessor_config.json), runs it in
`transformers` on fixed inputs and records, per sequence, the input ids (or pixel values), every
layer's query and key projections (bias included, before the 1/sqrt(d) scaling) and the attention
probabilities. The Rust tests in attn-extract/tests/ load the checkpoint with burn and compare.

Usage:
    python scripts/make_fixtures.py                 # tiny models -> attn-extract/tests/fixtures/
    python scripts/make_fixtures.py --minilm DIR    # also the all-MiniLM-L6-v2 reference

Output per fixture directory:
    config.json, model.safetensors, tokenizer files   the checkpoint
    inputs.json                                       the sentences (or image count) and token ids
    expected.safetensors                              s{i}.q.{l} [len, hidden], s{i}.k.{l} [len, hidden],
                                                      s{i}.attn.{l} [heads, len, len],
                                                      s{i}.ids [len] (text) or s{i}.image [H, W, 3] uint8
                                                      and s{i}.pixels [3, H, W] (images)
"""

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "attn-extract" / "tests" / "fixtures"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention is all you need!",
    "A tiny model, seeded: three layers and four heads.",
    "Hello world",
]

TRAIN_TEXT = SENTENCES + [
    "the cat sat on the mat and the dog sat on the log",
    "queries and keys are projected together into one picture",
    "transformers compute attention between every pair of tokens",
    "quickly jumping foxes are brown; lazy dogs sleep all day",
    "seeded random weights make the test deterministic",
]


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Replace every parameter with seeded values large enough that attention is far from uniform."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            lname = name.lower()
            is_norm = "layernorm" in lname or ".ln_" in lname or lname.startswith("ln_") or "layer_norm" in lname
            noise = torch.randn(p.shape, generator=g)
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias") or is_norm:
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.3 * noise)


class Capture:
    """Forward hooks on the q/k projections of every layer."""

    def __init__(self):
        self.q = {}
        self.k = {}
        self.handles = []

    def hook_linear(self, module, store, layer):
        def fn(_m, _inp, out):
            store[layer] = out.detach()[0].clone()

        self.handles.append(module.register_forward_hook(fn))

    def hook_fused(self, module, layer, hidden):
        def fn(_m, _inp, out):
            out = out.detach()[0]
            self.q[layer] = out[:, :hidden].clone()
            self.k[layer] = out[:, hidden : 2 * hidden].clone()

        self.handles.append(module.register_forward_hook(fn))


def record(tensors, i, cap, attentions, layers):
    for l in layers:
        tensors[f"s{i}.q.{l}"] = cap.q[l].float().contiguous()
        tensors[f"s{i}.k.{l}"] = cap.k[l].float().contiguous()
        tensors[f"s{i}.attn.{l}"] = attentions[l][0].float().contiguous()


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def bert_fixture():
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM

    out = fresh(OUT / "bert_tiny")
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(TRAIN_TEXT, vocab_size=150, min_frequency=1, show_progress=False)
    wp.save_model(str(out))  # vocab.txt only: exercises the WordPiece fallback of the loader
    # transformers 5.x's BertTokenizerFast no longer builds from a bare vocab_file, so encode with the
    # `tokenizers` WordPiece pipeline it wraps (BertNormalizer, BertPreTokenizer, [CLS] .. [SEP]).
    tok = BertWordPieceTokenizer(str(out / "vocab.txt"), lowercase=True)
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=40,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        hidden_act="gelu",
    )
    torch.manual_seed(1)
    # MaskedLM: names carry the `bert.` prefix and extra `cls.` head tensors the loader must ignore.
    model = BertForMaskedLM(cfg)
    model.config._attn_implementation = "eager"
    randomize(model, 11)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    cap = Capture()
    for l, layer in enumerate(model.bert.encoder.layer):
        cap.hook_linear(layer.attention.self.query, cap.q, l)
        cap.hook_linear(layer.attention.self.key, cap.k, l)
    tensors, ids_all = {}, []
    for i, s in enumerate(SENTENCES):
        enc = {"input_ids": torch.tensor([tok.encode(s).ids])}
        with torch.no_grad():
            o = model.bert(input_ids=enc["input_ids"], output_attentions=True)
        record(tensors, i, cap, o.attentions, range(cfg.num_hidden_layers))
        tensors[f"s{i}.ids"] = enc["input_ids"][0].to(torch.int64)
        ids_all.append(enc["input_ids"][0].tolist())
    save_file(tensors, out / "expected.safetensors")
    (out / "inputs.json").write_text(json.dumps({"sentences": SENTENCES, "ids": ids_all}, indent=1))


def gpt2_fixture():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    out = fresh(OUT / "gpt2_tiny")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TRAIN_TEXT, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    bpe.save_model(str(out))  # vocab.json + merges.txt: exercises the byte-level BPE fallback
    # Encode with the byte-level BPE pipeline GPT2TokenizerFast wraps (no special tokens added).
    tok = ByteLevelBPETokenizer(str(out / "vocab.json"), str(out / "merges.txt"))
    cfg = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=40,
        n_embd=32,
        n_layer=3,
        n_head=4,
        n_inner=37,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(2)
    model = GPT2LMHeadModel(cfg)  # `transformer.` prefix, tied lm_head
    model.config._attn_implementation = "eager"
    randomize(model, 22)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    cap = Capture()
    for l, block in enumerate(model.transformer.h):
        cap.hook_fused(block.attn.c_attn, l, cfg.n_embd)
    tensors, ids_all = {}, []
    for i, s in enumerate(SENTENCES):
        enc = {"input_ids": torch.tensor([tok.encode(s).ids])}
        with torch.no_grad():
            o = model.transformer(input_ids=enc["input_ids"], output_attentions=True)
        record(tensors, i, cap, o.attentions, range(cfg.n_layer))
        tensors[f"s{i}.ids"] = enc["input_ids"][0].to(torch.int64)
        ids_all.append(enc["input_ids"][0].tolist())
    save_file(tensors, out / "expected.safetensors")
    (out / "inputs.json").write_text(json.dumps({"sentences": SENTENCES, "ids": ids_all}, indent=1))


def test_images(n: int, size: int) -> list:
    """Deterministic RGB test images: gradients plus a grating plus seeded noise."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    imgs = []
    for i in range(n):
        r = 255 * x
        g = 255 * (0.5 + 0.5 * np.sin(2 * np.pi * (i + 2) * (x + y)))
        b = 255 * y * (i % 2) + 80 * (1 - (i % 2))
        img = np.stack([r, g, b], -1) + rng.normal(0, 20, (size, size, 3))
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
    return imgs


def vit_fixture(name: str, patch: int, image_size: int, hidden: int, with_preprocessor: bool, classification: bool):
    from transformers import ViTConfig, ViTForImageClassification, ViTModel

    out = fresh(OUT / name)
    cfg = ViTConfig(
        image_size=image_size,
        patch_size=patch,
        num_channels=3,
        hidden_size=hidden,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=37,
        layer_norm_eps=1e-12,
        hidden_act="gelu",
        qkv_bias=True,
        num_labels=3,
    )
    torch.manual_seed(3)
    if classification:
        model = ViTForImageClassification(cfg)  # `vit.` prefix and a classifier to ignore
        vit = model.vit
    else:
        model = ViTModel(cfg)  # no prefix, with pooler
        vit = model
    model.config._attn_implementation = "eager"
    randomize(model, 33 + patch)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    if with_preprocessor:
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        (out / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True, "size": {"height": image_size, "width": image_size}, "resample": 2,
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": mean, "image_std": std,
        }, indent=1))
    else:
        mean, std = [0.5] * 3, [0.5] * 3
    cap = Capture()
    # transformers 5.x flattened ViTModel.encoder.layer into ViTModel.layers (in memory only).
    layers = vit.layers if hasattr(vit, "layers") else vit.encoder.layer
    for l, layer in enumerate(layers):
        att = layer.attention
        # transformers 5.x names the projections q_proj/k_proj in memory (files keep query/key).
        qm = getattr(att, "q_proj", None) or att.attention.query
        km = getattr(att, "k_proj", None) or att.attention.key
        cap.hook_linear(qm, cap.q, l)
        cap.hook_linear(km, cap.k, l)
    tensors = {}
    imgs = test_images(2, image_size)
    for i, img in enumerate(imgs):
        # Images are already at the model size: preprocessing is rescale + normalize only.
        px = (img.astype(np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
        px = torch.from_numpy(px.transpose(2, 0, 1).copy())[None]
        with torch.no_grad():
            o = vit(pixel_values=px, output_attentions=True)
        record(tensors, i, cap, o.attentions, range(cfg.num_hidden_layers))
        tensors[f"s{i}.image"] = torch.from_numpy(img.copy())
        tensors[f"s{i}.pixels"] = px[0].contiguous()
    save_file(tensors, out / "expected.safetensors")
    (out / "inputs.json").write_text(json.dumps({"images": len(imgs)}, indent=1))


MINILM_SENTENCES = [
    "The cat sat on the mat.",
    "AttentionViz shows queries and keys of every head together.",
    "Transformers, like BERT and GPT-2, rely on self-attention!",
]


def minilm_reference(model_dir: str):
    from transformers import AutoTokenizer, BertModel

    out = fresh(OUT / "minilm_reference")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, attn_implementation="eager")
    model.eval()
    layers = [0, 5]  # first and last: keeps the fixture small
    cap = Capture()
    for l in layers:
        cap.hook_linear(model.encoder.layer[l].attention.self.query, cap.q, l)
        cap.hook_linear(model.encoder.layer[l].attention.self.key, cap.k, l)
    tensors, ids_all = {}, []
    for i, s in enumerate(MINILM_SENTENCES):
        enc = tok(s, return_tensors="pt")
        with torch.no_grad():
            o = model(**enc, output_attentions=True)
        record(tensors, i, cap, o.attentions, layers)
        tensors[f"s{i}.ids"] = enc["input_ids"][0].to(torch.int64)
        ids_all.append(enc["input_ids"][0].tolist())
    save_file(tensors, out / "expected.safetensors")
    (out / "inputs.json").write_text(
        json.dumps({"sentences": MINILM_SENTENCES, "ids": ids_all, "layers": layers}, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minilm", help="directory of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    bert_fixture()
    gpt2_fixture()
    # Sizes keep the conv weights (hidden x 3 x patch x patch) and so the fixtures small.
    vit_fixture("vit16_tiny", patch=16, image_size=48, hidden=32, with_preprocessor=True, classification=True)
    vit_fixture("vit32_tiny", patch=32, image_size=64, hidden=24, with_preprocessor=False, classification=False)
    if args.minilm:
        minilm_reference(args.minilm)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"fixtures written to {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
