#!/usr/bin/env python3
"""Build the reference fixtures of attn-extract (dev-time only; CI never runs this).

For each model family (BERT, GPT-2, ViT patch 16 and patch 32, and the Llama-family decoders
llama, mistral, qwen2, qwen3) this script builds a tiny, seeded,
random-weight checkpoint with deliberately non-default sizes, writes it in Hugging Face layout
(config.json, model.safetensors, tokenizer files / preprocessor_config.json), runs it in
`transformers` on fixed inputs and records, per sequence, the input ids (or pixel values), every
layer's query and key projections (bias included, before the 1/sqrt(d) scaling) and the attention
probabilities. The Rust tests in attn-extract/tests/ load the checkpoint with burn and compare.

Usage:
    python scripts/make_fixtures.py                 # tiny models -> attn-extract/tests/fixtures/
    python scripts/make_fixtures.py --minilm DIR    # also the all-MiniLM-L6-v2 reference
    python scripts/make_fixtures.py --only decoders # only the Llama-family fixtures
    python scripts/make_fixtures.py --only resize   # only the image resizing references

Output per fixture directory:
    config.json, model.safetensors, tokenizer files   the checkpoint
    inputs.json                                       the sentences (or image count) and token ids
    expected.safetensors                              s{i}.q.{l} [len, hidden], s{i}.k.{l} [len, hidden],
                                                      s{i}.v.{l} [len, hidden] (value projections),
                                                      s{i}.attn.{l} [heads, len, len],
                                                      s{i}.ids [len] (text) or s{i}.image [H, W, 3] uint8
                                                      and s{i}.pixels [3, H, W] (images)
    resize/: odd-sized, non-square PNG images (inputs/*.png), PIL's resize of each to 48x48 and
    23x41 with every resampling filter (pil.safetensors: `{image}.{filter}.{w}x{h}` [h, w, 3] uint8),
    and transformers' image processor (ViTImageProcessorPil) output for them with three configs,
    processors/{vit16,deit,clip}/preprocessor_config.json (processor.safetensors:
    `{config}.{image}` [3, 48, 48] float32).
    Llama-family decoders also record s{i}.qpre.{l} / s{i}.kpre.{l}, the vectors before the rotary
    embedding (after Qwen3's q/k norms); s{i}.q.{l} / s{i}.k.{l} are after it, as attention multiplies
    them. Keys hold `num_key_value_heads` heads: [len, kv_heads * head_dim].
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
        self.v = {}
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
            self.v[layer] = out[:, 2 * hidden :].clone()

        self.handles.append(module.register_forward_hook(fn))


def record(tensors, i, cap, attentions, layers):
    for l in layers:
        tensors[f"s{i}.q.{l}"] = cap.q[l].float().contiguous()
        tensors[f"s{i}.k.{l}"] = cap.k[l].float().contiguous()
        tensors[f"s{i}.attn.{l}"] = attentions[l][0].float().contiguous()
        tensors[f"s{i}.v.{l}"] = cap.v[l].float().contiguous()


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def bert_fixture():
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM

    # The WordPiece trainer orders tokens of equal frequency differently from run to run: an existing
    # vocab.txt is kept, so that regenerating the fixtures does not renumber the tokens.
    kept = OUT / "bert_tiny" / "vocab.txt"
    vocab = kept.read_text() if kept.exists() else None
    out = fresh(OUT / "bert_tiny")
    if vocab is None:
        wp = BertWordPieceTokenizer(lowercase=True)
        wp.train_from_iterator(TRAIN_TEXT, vocab_size=150, min_frequency=1, show_progress=False)
        wp.save_model(str(out))  # vocab.txt only: exercises the WordPiece fallback of the loader
    else:
        (out / "vocab.txt").write_text(vocab)
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
        cap.hook_linear(layer.attention.self.value, cap.v, l)
    tensors, ids_all = {}, []
    for i, s in enumerate(SENTENCES):
        enc = {"input_ids": torch.tensor([tok.encode(s).ids])}
        with torch.no_grad():
            o = model.bert(input_ids=enc["input_ids"], output_attentions=True)
        record(tensors, i, cap, o.attentions, range(cfg.num_hidden_layers))
        tensors[f"s{i}.ids"] = enc["input_ids"][0].to(torch.int64)
        ids_all.append(enc["input_ids"][0].tolist())
    save_file(tensors, out / "expected.safetensors")
    (out / "inputs.json").write_text(json.dumps(
        {"sentences": SENTENCES, "ids": ids_all, "tokens": [tok.encode(s).tokens for s in SENTENCES]}, indent=1))


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
    (out / "inputs.json").write_text(json.dumps(
        {"sentences": SENTENCES, "ids": ids_all, "tokens": [tok.encode(s).tokens for s in SENTENCES]}, indent=1))


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
        vm = getattr(att, "v_proj", None) or att.attention.value
        cap.hook_linear(qm, cap.q, l)
        cap.hook_linear(km, cap.k, l)
        cap.hook_linear(vm, cap.v, l)
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


# Odd, non-square sizes (width, height): downscaled in both directions, upscaled, and mixed.
RESIZE_IMAGES = {"wide50x37": (50, 37), "tall29x61": (29, 61), "big97x71": (97, 71), "small13x17": (13, 17)}
# PIL's filter codes, as preprocessor_config.json's `resample` uses them.
PIL_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def resize_fixture():
    """PIL's resampling and transformers' image processor on odd-sized images (see the module doc)."""
    from PIL import Image
    from transformers import ViTImageProcessorPil

    out = fresh(OUT / "resize")
    (out / "inputs").mkdir()
    rng = np.random.default_rng(11)
    pil, processed = {}, {}
    # Three ways of reaching 48 px: vit16_tiny's own (resize to 48 x 48, bilinear), DeiT's (resize
    # to 56 x 56, centre crop), CLIP's (shortest edge to 48 keeping the aspect ratio, centre crop).
    vit16 = json.loads((OUT / "vit16_tiny" / "preprocessor_config.json").read_text())
    configs = {
        "vit16": vit16,
        "deit": {**vit16, "size": {"height": 56, "width": 56}, "resample": 3, "do_center_crop": True,
                 "crop_size": {"height": 48, "width": 48}},
        "clip": {**vit16, "size": {"shortest_edge": 48}, "resample": 3, "do_center_crop": True,
                 "crop_size": {"height": 48, "width": 48}},
    }
    processors = {}
    for pname, config in configs.items():
        (out / "processors" / pname).mkdir(parents=True)
        (out / "processors" / pname / "preprocessor_config.json").write_text(json.dumps(config, indent=1))
        processors[pname] = ViTImageProcessorPil(**{k: v for k, v in config.items() if k != "image_processor_type"})
    for name, (w, h) in RESIZE_IMAGES.items():
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([255 * x / w, 128 + 100 * np.sin(x / 3 + y / 5), 255 * y / h], -1)
        arr = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
        img.save(out / "inputs" / f"{name}.png")
        for fname, code in PIL_FILTERS.items():
            for tw, th in [(48, 48), (23, 41)]:
                pil[f"{name}.{fname}.{tw}x{th}"] = torch.from_numpy(np.asarray(img.resize((tw, th), resample=code)).copy())
        for pname, processor in processors.items():
            px = processor(img, return_tensors="np")["pixel_values"][0]
            processed[f"{pname}.{name}"] = torch.from_numpy(np.ascontiguousarray(px, dtype=np.float32))
    save_file(pil, out / "pil.safetensors")
    save_file(processed, out / "processor.safetensors")
    (out / "inputs.json").write_text(json.dumps({
        "images": {k: list(v) for k, v in RESIZE_IMAGES.items()}, "filters": PIL_FILTERS,
        "targets": [[48, 48], [23, 41]], "processors": sorted(configs),
        "versions": {"transformers": __import__("transformers").__version__,
                     "pillow": __import__("PIL").__version__}},
        indent=1))


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
        cap.hook_linear(model.encoder.layer[l].attention.self.value, cap.v, l)
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
        json.dumps({"sentences": MINILM_SENTENCES, "ids": ids_all, "layers": layers,
                    "tokens": [tok.convert_ids_to_tokens(ids) for ids in ids_all]}, indent=1))


# ---------------------------------------------------------------------------------------------------
# Llama-family decoders: one fixture per family, each exercising what sets that family apart.

DECODER_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention is all you need!",
    "A tiny decoder, seeded: grouped keys and rotated queries.",
    "Hello world",
    "Caf\u00e9 na\u00efve \u2014 bytes outside the training text.",
]


def byte_level_tokenizer(out: Path, bos: str | None):
    """A byte-level BPE tokenizer.json as Llama 3 and Qwen ship (BOS added by the post-processor when
    `bos` is given, as Llama 3; Qwen adds none)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = [t for t in [bos, "<|end_of_text|>"] if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, min_frequency=1, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAIN_TEXT, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(str(out / "tokenizer.json"))
    return tok


def metaspace_tokenizer(out: Path):
    """A SentencePiece-converted BPE tokenizer.json as Llama 2 and Mistral ship: Metaspace
    pre-tokenizer, byte fallback (<0x..> tokens) for characters outside the vocabulary, <s> as BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=420, min_frequency=1, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(TRAIN_TEXT, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    tok.save(str(out / "tokenizer.json"))
    return tok


def randomize_decoder(model: torch.nn.Module, seed: int) -> None:
    """Seeded weights: norms near 1, biases small, matrices large enough for peaked attention."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.3 * noise)


def decoder_fixture(name: str, model_type: str, tokenizer: str, seed: int, half: str | None,
                    shard: str | None, **config):
    """One Llama-family fixture. `half` ("bfloat16"/"float16") stores the weights in half precision;
    the reference then runs in f32 on exactly those rounded weights, as attn-extract computes."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    out = fresh(OUT / name)
    tok = byte_level_tokenizer(out, config.pop("bos", None)) if tokenizer == "byte_level" \
        else metaspace_tokenizer(out)
    cfg = AutoConfig.for_model(model_type, vocab_size=tok.get_vocab_size(), **config)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    randomize_decoder(model, seed)
    model.eval()
    if half:
        model = model.to(getattr(torch, half))
    save_kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(out, safe_serialization=True, **save_kwargs)
    # The reference is the checkpoint as transformers loads it in f32: the exact values of half-precision
    # weights, and rotary frequencies computed afresh (a `.to(float32)` would keep bf16-rounded ones).
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    modeling = __import__(type(model).__module__, fromlist=["apply_rotary_pos_emb"])
    inner = model.model
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    pre, rot = {}, {}

    def hook_rotary(_m, _inp, out):
        rot["cos"], rot["sin"] = out

    handles = [inner.rotary_emb.register_forward_hook(hook_rotary)]
    for l, layer in enumerate(inner.layers):
        att = layer.self_attn
        # Qwen3 normalizes each head before the rotation: capture after its q/k norms.
        qm = getattr(att, "q_norm", None) or att.q_proj
        km = getattr(att, "k_norm", None) or att.k_proj

        def hook(kind, l, n):
            def fn(_m, _inp, out):
                pre[(kind, l)] = out.detach()[0].reshape(out.shape[1], n, head_dim).clone()
            return fn

        handles.append(qm.register_forward_hook(hook("q", l, heads)))
        handles.append(km.register_forward_hook(hook("k", l, kv_heads)))
        handles.append(att.v_proj.register_forward_hook(hook("v", l, kv_heads)))
    tensors, ids_all = {}, []
    for i, s in enumerate(DECODER_SENTENCES):
        ids = torch.tensor([tok.encode(s).ids])
        with torch.no_grad():
            o = inner(input_ids=ids, output_attentions=True)
        for l in range(cfg.num_hidden_layers):
            q, k = pre[("q", l)], pre[("k", l)]  # [len, heads, d]
            q_rot, k_rot = modeling.apply_rotary_pos_emb(
                q.transpose(0, 1)[None], k.transpose(0, 1)[None], rot["cos"], rot["sin"])
            flat = lambda t: t[0].transpose(0, 1).reshape(t.shape[2], -1).float().contiguous()
            tensors[f"s{i}.q.{l}"] = flat(q_rot)
            tensors[f"s{i}.k.{l}"] = flat(k_rot)
            tensors[f"s{i}.qpre.{l}"] = q.reshape(q.shape[0], -1).float().contiguous()
            tensors[f"s{i}.kpre.{l}"] = k.reshape(k.shape[0], -1).float().contiguous()
            tensors[f"s{i}.attn.{l}"] = o.attentions[l][0].float().contiguous()
            tensors[f"s{i}.v.{l}"] = pre[("v", l)].reshape(q.shape[0], -1).float().contiguous()
        tensors[f"s{i}.ids"] = ids[0].to(torch.int64)
        ids_all.append(ids[0].tolist())
    for h in handles:
        h.remove()
    save_file(tensors, out / "expected.safetensors")
    (out / "inputs.json").write_text(json.dumps({
        "sentences": DECODER_SENTENCES, "ids": ids_all,
        "tokens": [tok.encode(s).tokens for s in DECODER_SENTENCES],
        "special": [tok.encode(s).special_tokens_mask for s in DECODER_SENTENCES],
        "transformers": transformers.__version__, "torch": torch.__version__,
    }, indent=1))


def decoder_fixtures():
    common = dict(hidden_size=48, num_hidden_layers=3, intermediate_size=37, max_position_embeddings=64,
                  rms_norm_eps=1e-5, tie_word_embeddings=False)
    # Llama 3 shape: GQA ratio 3, explicit head_dim that is not hidden / heads, llama3 rope scaling whose
    # wavelength bands all occur at this head_dim, a non-default theta, q/k/v/o biases, tied embeddings,
    # byte-level BPE with a BOS added by the post-processor.
    decoder_fixture(
        "llama_tiny", "llama", "byte_level", seed=41, half=None, shard=None, bos="<|begin_of_text|>",
        **{**common, "tie_word_embeddings": True}, num_attention_heads=6, num_key_value_heads=2,
        head_dim=10, attention_bias=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 5000.0, "factor": 4.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    # Mistral: a sliding window shorter than every test sentence; Llama 2 style tokenizer with byte
    # fallback; bf16 weights in a sharded checkpoint.
    decoder_fixture(
        "mistral_tiny", "mistral", "metaspace", seed=42, half="bfloat16", shard="40KB", **common,
        num_attention_heads=6, num_key_value_heads=2, sliding_window=5,
        rope_parameters={"rope_type": "default", "rope_theta": 20000.0})
    # Qwen2: q/k/v biases, a sliding window on the layers from max_window_layers on, f16 weights.
    decoder_fixture(
        "qwen2_tiny", "qwen2", "byte_level", seed=43, half="float16", shard=None, **common,
        num_attention_heads=6, num_key_value_heads=2, use_sliding_window=True, sliding_window=4,
        max_window_layers=1, rope_parameters={"rope_type": "default", "rope_theta": 1000.0})
    # Qwen3: per-head q/k RMSNorm before the rotation, explicit head_dim, bf16 weights.
    decoder_fixture(
        "qwen3_tiny", "qwen3", "byte_level", seed=44, half="bfloat16", shard=None, **common,
        num_attention_heads=6, num_key_value_heads=2, head_dim=12,
        rope_parameters={"rope_type": "default", "rope_theta": 3000.0})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minilm", help="directory of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json)")
    ap.add_argument("--only", choices=["encoders", "decoders", "resize"],
                    help="build only BERT/GPT-2/ViT (encoders), only the Llama-family fixtures (decoders) "
                         "or only the image resizing references (resize)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "encoders"):
        bert_fixture()
        gpt2_fixture()
        # Sizes keep the conv weights (hidden x 3 x patch x patch) and so the fixtures small.
        vit_fixture("vit16_tiny", patch=16, image_size=48, hidden=32, with_preprocessor=True, classification=True)
        vit_fixture("vit32_tiny", patch=32, image_size=64, hidden=24, with_preprocessor=False, classification=False)
    if args.only in (None, "decoders"):
        decoder_fixtures()
    if args.only in (None, "resize"):
        resize_fixture()
    if args.minilm:
        minilm_reference(args.minilm)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"fixtures written to {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
