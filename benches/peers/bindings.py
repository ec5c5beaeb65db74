#!/usr/bin/env python3
"""The Python bindings against the Rust library they wrap, in one run.

Usage: bindings.py COMPARE_DIR [--repeats R]

COMPARE_DIR is what `compare` (benches/src/bin/compare.rs) just wrote: the data sets as .npy, its own
in-process fits of attnviz's t-SNE, UMAP and PCA (`results.json`, `emb/*__attnviz.npy`).
For every such fit this calls `attnviz.project` on the same file with the same settings R times (30
for fits under 0.1 s) and
reports, per fit: the Rust driver's time, the Python call's median time, the library's fit time
inside that call (`fit_seconds`), the bindings' own share ((call - fit) / fit), and whether the
coordinates equal the Rust driver's bit for bit. Writes COMPARE_DIR/bindings.md and bindings.json.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

import attnviz

# The metric of each of compare's data sets (benches/src/lib.rs).
METRICS = {"mixture": "cosine", "manifold": "euclidean"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with open(os.path.join(args.dir, "results.json")) as f:
        results = json.load(f)
    rows = [r for r in results["results"] if r["tool"] == "attnviz"]
    out = []
    for r in rows:
        x = np.load(os.path.join(args.dir, f"{r['dataset']}_{r['n']}.npy"))
        rust = np.load(os.path.join(args.dir, "emb", f"{r['dataset']}_{r['n']}__{r['method']}{r['dims']}d__attnviz.npy"))
        calls, fits = [], []
        # Fits of milliseconds (PCA) are repeated 30 times: their medians need more than 3 runs.
        repeats = args.repeats if r["time_s"] > 0.1 else 30
        for _ in range(repeats):
            t0 = time.perf_counter()
            y, info = attnviz.project(x, r["method"], r["dims"], seed=0, metric=METRICS[r["dataset"]],
                                      return_info=True)
            calls.append(time.perf_counter() - t0)
            fits.append(info["fit_seconds"])
        call, fit = statistics.median(calls), statistics.median(fits)
        out.append(dict(dataset=r["dataset"], n=r["n"], method=r["method"], dims=r["dims"],
                        rust_driver_s=r["time_s"], python_call_s=call, python_fit_s=fit,
                        calls_s=calls, bindings_share=(call - fit) / fit,
                        python_vs_rust=call / r["time_s"], identical=bool(np.array_equal(y, rust))))
        print(f"  {r['method']}{r['dims']}d {r['dataset']} n={r['n']}: rust {r['time_s']:.3f} s, "
              f"python {call:.3f} s (fit {fit:.3f} s, bindings {100 * (call - fit) / fit:+.2f}%), "
              f"identical {out[-1]['identical']}", flush=True)
    with open(os.path.join(args.dir, "bindings.json"), "w") as f:
        json.dump(dict(attnviz=attnviz.__version__, python=sys.version.split()[0],
                       numpy=np.__version__, repeats=args.repeats, rows=out), f, indent=1)
    lines = [
        "| data | n | method | Rust driver (s) | `attnviz.project` (s, median) | of which the fit (s) | bindings' share | Python / Rust | same coordinates |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in out:
        lines.append(f"| {o['dataset']} | {o['n']} | {o['method']} {o['dims']}D | {o['rust_driver_s']:.3f} | "
                     f"{o['python_call_s']:.3f} | {o['python_fit_s']:.3f} | {100 * o['bindings_share']:+.2f}% | "
                     f"{o['python_vs_rust']:.3f} | {'yes' if o['identical'] else 'NO'} |")
    with open(os.path.join(args.dir, "bindings.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
