#!/usr/bin/env python3
"""Runs the Python peer tools of the attnviz comparison on .npy datasets written by `compare`.

Usage: run_peers.py MANIFEST.json
The manifest lists datasets ({"name", "n", "file", "metric", "seed"}), the output dimensions, the tools
to skip, and the output folder. Each embedding is written as <out>/<name>_<n>__<method><dims>d__<tool>.npy
and every timing goes into <out>/peer_timings.json (list of records), so that `compare` scores all
embeddings with one evaluator. Thread pools are pinned by the caller's environment (OMP_NUM_THREADS,
NUMBA_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS).
"""
import json
import os
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def main():
    with open(sys.argv[1]) as f:
        man = json.load(f)
    out = man["out"]
    os.makedirs(out, exist_ok=True)
    threads = int(man.get("threads", 2))
    dims_list = man.get("dims", [2, 3])
    skip = set(man.get("skip", []))
    records = []

    def record(ds, method, dims, tool, secs, emb, note=""):
        fname = f"{ds['name']}_{ds['n']}__{method}{dims}d__{tool}.npy"
        np.save(os.path.join(out, fname), np.ascontiguousarray(emb, dtype=np.float32))
        records.append(dict(dataset=ds["name"], n=ds["n"], method=method, dims=dims, tool=tool,
                            time_s=secs, file=fname, note=note))
        print(f"  {tool:>24} {method}{dims}d {ds['name']} n={ds['n']}: {secs:.2f} s {note}", flush=True)
        # Written after every fit so that a run cut short still leaves its measurements.
        with open(os.path.join(out, "peer_timings.json"), "w") as f:
            json.dump(records, f, indent=1)

    def timed(fn):
        t0 = time.perf_counter()
        r = fn()
        return time.perf_counter() - t0, r

    import sklearn
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE as SkTSNE
    import openTSNE
    import umap

    print(f"peers: openTSNE {openTSNE.__version__}, umap-learn {umap.__version__}, "
          f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, threads {threads}", flush=True)
    umap_cold_done = set()
    tsne_warm = set()
    for ds in man["datasets"]:
        x = np.load(ds["file"]).astype(np.float32)
        metric = ds["metric"]
        seed = int(ds.get("seed", 0))
        for dims in dims_list:
            if "sklearn-pca" not in skip:
                secs, emb = timed(lambda: PCA(n_components=dims, random_state=seed).fit_transform(x))
                record(ds, "pca", dims, "sklearn", secs, emb)
            if "umap-learn" not in skip:
                def run_umap(seeded):
                    kw = dict(n_components=dims, n_neighbors=15, min_dist=0.1, metric=metric)
                    if seeded:
                        # A seed makes umap-learn deterministic, which also makes its SGD single-threaded.
                        kw["random_state"] = seed
                    else:
                        kw["n_jobs"] = threads
                    return umap.UMAP(**kw).fit_transform(x)
                key = (dims, metric)
                if key not in umap_cold_done:
                    # The first fit of a process pays numba's JIT compilation: report it as "cold".
                    secs, emb = timed(lambda: run_umap(True))
                    record(ds, "umap", dims, "umap-learn-cold", secs, emb, "first call, incl. JIT")
                    umap_cold_done.add(key)
                    # The unseeded (parallel) path compiles other numba functions: warm it up too,
                    # on a small slice, so that no warm timing below includes compilation.
                    if "umap-learn-parallel" not in skip:
                        xs = x[: min(len(x), 500)]
                        umap.UMAP(n_components=dims, metric=metric, n_jobs=threads).fit_transform(xs)
                secs, emb = timed(lambda: run_umap(True))
                record(ds, "umap", dims, "umap-learn", secs, emb, "warm, random_state set")
                if "umap-learn-parallel" not in skip:
                    secs, emb = timed(lambda: run_umap(False))
                    record(ds, "umap", dims, "umap-learn-par", secs, emb, f"warm, no seed, n_jobs={threads}")
            if "opentsne" not in skip:
                if (dims, metric) not in tsne_warm:
                    # openTSNE's first fit in a process pays one-off setup (imports, FFT plans, kNN
                    # index code): warm it up on a small slice so that timings are steady-state.
                    xs = x[: min(len(x), 500)]
                    openTSNE.TSNE(n_components=dims, perplexity=30, metric=metric, n_jobs=threads,
                                  random_state=seed, negative_gradient_method="fft" if dims <= 2 else "bh",
                                  n_iter=50, early_exaggeration_iter=10).fit(xs)
                    tsne_warm.add((dims, metric))
                # FIt-SNE interpolation only exists for up to 2 output dims; 3D uses Barnes-Hut.
                grad = "fft" if dims <= 2 else "bh"
                t = openTSNE.TSNE(n_components=dims, perplexity=30, metric=metric, n_jobs=threads,
                                  random_state=seed, negative_gradient_method=grad, verbose=False)
                secs, emb = timed(lambda: np.asarray(t.fit(x)))
                record(ds, "tsne", dims, "openTSNE", secs, emb, grad)
            if "sklearn-tsne" not in skip and ds["n"] <= int(man.get("sklearn_tsne_max_n", 10000)):
                t = SkTSNE(n_components=dims, perplexity=30, metric=metric, init="pca",
                           random_state=seed, n_jobs=threads)
                secs, emb = timed(lambda: t.fit_transform(x))
                record(ds, "tsne", dims, "sklearn", secs, emb, "barnes_hut")


if __name__ == "__main__":
    main()
