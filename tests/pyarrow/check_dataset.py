#!/usr/bin/env python3
"""Check that an attnviz dataset directory is readable by pyarrow with the documented schemas.

Usage: check_dataset.py DATASET_DIR [EXPECT_JSON]

Without EXPECT_JSON only the structure is checked (files, columns, Arrow types, key-value metadata,
attention rows summing to 1). With it, values are compared too; the sidecar (written by
attn-store/tests/pyarrow.rs) looks like:

  {"schema_version": int, "model_id": str, "head_dim": int, "tokens": [{"text", "seq_id", "position", ...}],
   "heads": [{"dir": "L00H01", "query": [[...]], "key": [[...]], "normalized": bool,
              "value_norms": [...] | null, "attention_rows": int,
              "projections": [{"file": "tsne_2d.parquet", "method": "tsne", "dims": 2,
                               "coords": [[...]]}]}]}

Exits 0 when every check passes, 1 with a list of failures otherwise.
"""

import json
import os
import struct
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FAILURES = []


def check(cond, msg):
    if not cond:
        FAILURES.append(msg)
    return cond


def f32(x):
    """Rounds a Python float to float32, as stored."""
    return struct.unpack("f", struct.pack("f", x))[0]


def kv(path):
    """The file's key-value metadata; its attnviz.* entries must also be the Arrow schema's metadata
    (what pyarrow, polars and arrow-rs readers show as the table's metadata)."""
    md = pq.read_metadata(path).metadata or {}
    footer = {k.decode(): v.decode() for k, v in md.items()}
    ours = lambda d: {k: v for k, v in d.items() if k.startswith("attnviz.")}
    schema = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
    check(ours(schema) == ours(footer),
          f"{path}: Arrow schema metadata {sorted(ours(schema))} differs from the footer's {sorted(ours(footer))}")
    return footer


def expect_schema(path, expected):
    """expected: {column: (predicate, description)}; returns the table."""
    table = pq.read_table(path)
    for name, (pred, desc) in expected.items():
        if check(name in table.schema.names, f"{path}: column {name} missing"):
            t = table.schema.field(name).type
            check(pred(t), f"{path}: column {name} has type {t}, expected {desc}")
    return table


def is_vec(d):
    return (
        lambda t: pa.types.is_fixed_size_list(t)
        and t.list_size == d
        and t.value_type == pa.float32(),
        f"fixed_size_list<float32>[{d}]",
    )


U32 = (lambda t: t == pa.uint32(), "uint32")
U16 = (lambda t: t == pa.uint16(), "uint16")
F32 = (lambda t: t == pa.float32(), "float")
BOOL = (lambda t: t == pa.bool_(), "bool")
STR = (lambda t: t == pa.string(), "string")


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    root = sys.argv[1]
    expect = None
    if len(sys.argv) == 3:
        with open(sys.argv[2]) as f:
            expect = json.load(f)

    with open(os.path.join(root, "meta.json")) as f:
        meta = json.load(f)
    # The data model version the writer stamps on meta.json and every Parquet file (1 or 2; 2 stores
    # grouped-query keys once per key head), as the sidecar states it when there is one.
    version = expect["schema_version"] if expect else meta.get("schema_version")
    check(version in (1, 2) and meta.get("schema_version") == version,
          f"meta.json: schema_version {meta.get('schema_version')}, expected {version}")
    d = meta["model"]["head_dim"]
    if expect:
        check(meta["model"]["id"] == expect["model_id"], "meta.json: model.id differs")
        check(d == expect["head_dim"], "meta.json: model.head_dim differs")

    tokens = expect_schema(
        os.path.join(root, "tokens.parquet"),
        {
            "token_index": U32, "seq_id": U32, "position": U32, "seq_len": U32, "text": STR,
            "is_special": BOOL, "patch_row": U16, "patch_col": U16, "is_cls": BOOL,
            "offset_start": U32, "offset_end": U32,
        },
    )
    n = tokens.num_rows
    check(tokens["token_index"].to_pylist() == list(range(n)), "tokens.parquet: token_index not 0..n")
    if expect:
        got = tokens.to_pylist()
        check(len(got) == len(expect["tokens"]), "tokens.parquet: row count differs")
        for i, (g, e) in enumerate(zip(got, expect["tokens"])):
            for key, value in e.items():
                check(g[key] == value, f"tokens.parquet row {i}: {key} = {g[key]!r}, expected {value!r}")

    head_dirs = sorted(os.listdir(os.path.join(root, "heads")))
    for name in head_dirs:
        hd = os.path.join(root, "heads", name)
        for dirpath, _, files in os.walk(hd):
            for fn in files:
                check(not fn.endswith(".tmp"), f"{dirpath}/{fn}: leftover temporary file")
        vp = os.path.join(hd, "vectors.parquet")
        if os.path.exists(vp):
            meta_kv = kv(vp)
            names = pq.read_schema(vp).names
            # Grouped-query datasets keep a query head's keys in its key head's file.
            shared = "key" not in names
            cols = {"token_index": U32, "query": is_vec(d), "query_norm": F32}
            if shared:
                key_head = json.loads(meta_kv.get("attnviz.key_head", "null"))
                if check(key_head is not None, f"{vp}: no key column and no attnviz.key_head"):
                    kp = os.path.join(root, "key_heads", f"L{key_head['layer']:02}K{key_head['head']:02}.parquet")
                    if check(os.path.exists(kp), f"{vp}: its key file {kp} is missing"):
                        kt = expect_schema(kp, {"token_index": U32, "key": is_vec(d), "key_norm": F32})
                        check(kt.num_rows == n, f"{kp}: {kt.num_rows} rows, {n} tokens")
                        check(json.loads(kv(kp).get("attnviz.key_head", "null")) == key_head,
                              f"{kp}: attnviz.key_head differs from {vp}'s")
            else:
                cols.update({"key": is_vec(d), "key_norm": F32})
            normalized = "query_normalized" in names
            if normalized:
                cols["query_normalized"] = is_vec(d)
                if not shared:
                    cols["key_normalized"] = is_vec(d)
                rec = json.loads(meta_kv.get("attnviz.normalization", "null"))
                check(rec is not None and "scale" in rec["params"] and "pairs" in rec["diagnostics"],
                      f"{vp}: attnviz.normalization metadata incomplete")
            head = json.loads(meta_kv.get("attnviz.head", "null"))
            check(head is not None and name == f"L{head['layer']:02}H{head['head']:02}",
                  f"{vp}: attnviz.head {head} does not match folder {name}")
            check(meta_kv.get("attnviz.schema_version") == str(version), f"{vp}: attnviz.schema_version")
            vt = expect_schema(vp, cols)
            check(vt.num_rows == n, f"{vp}: {vt.num_rows} rows, {n} tokens")
        ap = os.path.join(hd, "attention.parquet")
        if os.path.exists(ap):
            at = expect_schema(ap, {"seq_id": U32, "seq_len": U32, "query_pos": U32, "key_pos": U32,
                                    "weight": F32})
            sums = at.group_by(["seq_id", "query_pos"]).aggregate([("weight", "sum")])
            worst = pc.max(pc.abs(pc.subtract(sums["weight_sum"], 1.0))).as_py()
            check(worst is None or worst < 1e-5, f"{ap}: attention rows sum to 1 +- {worst}")
        np_ = os.path.join(hd, "value_norms.parquet")
        if os.path.exists(np_):
            expect_schema(np_, {"token_index": U32, "value_norm": F32})
        pdir = os.path.join(hd, "projections")
        for fn in sorted(os.listdir(pdir)) if os.path.isdir(pdir) else []:
            pp = os.path.join(pdir, fn)
            pt = expect_schema(pp, {"token_index": U32, "is_key": BOOL, "x": F32, "y": F32, "z": F32})
            rec = json.loads(kv(pp).get("attnviz.projection", "null"))
            if check(rec is not None, f"{pp}: attnviz.projection metadata missing"):
                spec = rec["spec"]
                check(fn == f"{spec['method']}_{spec['dims']}d.parquet", f"{pp}: spec {spec} vs file name")
                check(pt.num_rows == 2 * n, f"{pp}: {pt.num_rows} rows, expected 2n = {2 * n}")
                check(pc.sum(pt["is_key"]).as_py() == n, f"{pp}: is_key should be true on n rows")
                zs = pt["z"].null_count
                check(zs == (pt.num_rows if spec["dims"] == 2 else 0), f"{pp}: {zs} null z for {spec['dims']}d")

    if expect:
        check(head_dirs == [h["dir"] for h in expect["heads"]], f"heads: {head_dirs}")
        for h in expect["heads"]:
            hd = os.path.join(root, "heads", h["dir"])
            vt = pq.read_table(os.path.join(hd, "vectors.parquet"))
            for col in ("query", "key"):
                got = vt[col].to_pylist()
                want = [[f32(x) for x in row] for row in h[col]]
                check(got == want, f"{hd}/vectors.parquet: {col} values differ")
            check(("query_normalized" in vt.schema.names) == h["normalized"], f"{hd}: normalized columns")
            if h.get("attention_rows") is not None:
                at = pq.read_table(os.path.join(hd, "attention.parquet"))
                check(at.num_rows == h["attention_rows"], f"{hd}/attention.parquet: {at.num_rows} rows")
            if h.get("value_norms") is not None:
                got = pq.read_table(os.path.join(hd, "value_norms.parquet"))["value_norm"].to_pylist()
                check(got == [f32(x) for x in h["value_norms"]], f"{hd}/value_norms.parquet: values differ")
            for p in h.get("projections", []):
                pt = pq.read_table(os.path.join(hd, "projections", p["file"])).to_pylist()
                rows = len(pt) // 2
                for r in pt:
                    j = r["token_index"] + (rows if r["is_key"] else 0)
                    want = [f32(x) for x in p["coords"][j]]
                    got = [r["x"], r["y"]] + ([r["z"]] if p["dims"] == 3 else [])
                    check(got == want, f"{hd}/projections/{p['file']}: point {j}: {got} vs {want}")

    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed:", file=sys.stderr)
        for f in FAILURES:
            print("  " + f, file=sys.stderr)
        return 1
    print(f"ok: {root}: {n} tokens, {len(head_dirs)} heads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
