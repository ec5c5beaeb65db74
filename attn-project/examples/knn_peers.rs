//! Measures `petal-neighbors`' ball tree against the crate's own searches, for the issue "use it
//! where it wins, otherwise remove it" (figures in the crate README, "kNN: the ball tree
//! (petal-neighbors) measured").
//!
//! ```sh
//! cargo run --release -p attn-project --features knn-peers --example knn_peers            # median of 5 runs, 2 threads
//! cargo run --release -p attn-project --features knn-peers --example knn_peers -- --runs 3 --threads 2
//! ```
//!
//! (a) Input space, n = 10,000, cosine: the synthetic attention head of the crate's tests
//! (`src/attention/synthetic.rs`, joint queries + centred keys, d = 32) and a seeded anisotropic
//! Gaussian mixture with a shared offset at d = 32 and 64; k = 15 and 90. `exact_knn` (= `knn` at
//! this size) and `approximate_knn` against the ball tree built on L2-normalized rows (Euclidean
//! order = cosine order) and queried for all n points in parallel with rayon. Recall against
//! `exact_knn`.
//!
//! (b) Layout space: 2-D and 3-D t-SNE layouts of a synthetic head of 11,356 points (the size of a
//! MiniLM head's joint set), scaled to unit extent as the viewer's cells are. All-points k = 10
//! (what `quality` would need), 1,000 sampled queries k = 10 (what `quality_sampled` does in the
//! pipeline), one nearest-point query (picking under the mouse), radius queries at eps = 0.05
//! (cluster counting at attn-viz-core's default eps; all points, and 300 "search matches"):
//! ball tree against a plain brute-force loop, parallel over queries where the work is.

#[path = "../src/attention/synthetic.rs"]
#[allow(dead_code, missing_docs)]
mod synthetic;

use std::collections::HashSet;
use std::time::Instant;

use attn_project::{KnnGraph, Tsne, approximate_knn, exact_knn, knn_recall, quality_sampled};
use attn_types::{Matrix, Metric};
use ndarray::{ArrayView1, ArrayView2};
use petal_neighbors::BallTree;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// Median wall time (s) of `runs` calls of `f`, and the last result.
fn timed<R>(runs: usize, mut f: impl FnMut() -> R) -> (f64, R) {
    let mut times = Vec::with_capacity(runs);
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        times.push(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    times.sort_by(f64::total_cmp);
    (times[runs / 2], out.expect("runs >= 1"))
}

/// A seeded mixture like a head's joint set: 40 clusters of Zipf-like sizes, each with its own
/// 6-dimensional spread, isotropic noise, and a shared offset (as raw keys have), `n x d`.
fn mixture(n: usize, d: usize, seed: u64) -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = |rng: &mut ChaCha8Rng| -> f32 { StandardNormal.sample(rng) };
    const C: usize = 40;
    const R: usize = 6;
    let offset: Vec<f32> = (0..d).map(|_| 0.35 * g(&mut rng)).collect();
    let centres: Vec<Vec<f32>> = (0..C)
        .map(|_| (0..d).map(|_| g(&mut rng)).collect())
        .collect();
    let dirs: Vec<Vec<f32>> = (0..C * R)
        .map(|_| (0..d).map(|_| 0.5 * g(&mut rng)).collect())
        .collect();
    let weights: Vec<f64> = (1..=C).map(|c| 1.0 / c as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut v = Vec::with_capacity(n * d);
    for _ in 0..n {
        let mut u = rng.random::<f64>() * total;
        let mut c = 0;
        while c + 1 < C && u >= weights[c] {
            u -= weights[c];
            c += 1;
        }
        let a: Vec<f32> = (0..R).map(|_| g(&mut rng)).collect();
        for t in 0..d {
            let low: f32 = (0..R).map(|r| a[r] * dirs[c * R + r][t]).sum();
            v.push(offset[t] + centres[c][t] + low + 0.3 * g(&mut rng));
        }
    }
    Matrix::from_vec(n, d, v).expect("shape")
}

/// Rows scaled to unit L2 norm (zero rows stay zero), as `prepare_rows` does for cosine.
fn normalized(m: &Matrix) -> Vec<f32> {
    let mut v = m.as_slice().to_vec();
    for r in v.chunks_exact_mut(m.cols()) {
        let s = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        if s > 0.0 {
            r.iter_mut().for_each(|x| *x /= s);
        }
    }
    v
}

/// The `k` nearest of every row (self excluded) by a ball tree built on `rows` (`n x d`).
fn tree_knn(rows: &[f32], n: usize, d: usize, k: usize) -> Vec<u32> {
    let view = ArrayView2::from_shape((n, d), rows).expect("shape");
    let tree = BallTree::euclidean(view).expect("non-empty");
    (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let (idx, _) = tree.query(&view.row(i), k + 1);
            let mut out: Vec<u32> = idx
                .into_iter()
                .filter(|&j| j != i)
                .map(|j| j as u32)
                .collect();
            out.truncate(k);
            out
        })
        .collect()
}

/// Recall of per-row neighbour lists `got` (`n x k`) against `exact`: by index, and tie-aware (a
/// neighbour also counts when its cosine distance, in f64 on the normalized `rows`, is within
/// 1e-5 of the exact k-th distance: the synthetic head has exact duplicates, the `[CLS]` tokens).
fn recall(got: &[u32], exact: &KnnGraph, rows: &[f32], d: usize) -> (f64, f64) {
    let k = exact.k;
    let (mut hits, mut tied) = (0usize, 0usize);
    for i in 0..exact.n {
        let want: HashSet<u32> = exact.neighbors(i).iter().copied().collect();
        let kth = f64::from(exact.neighbor_distances(i)[k - 1]);
        let ri = &rows[i * d..(i + 1) * d];
        for &j in &got[i * k..(i + 1) * k] {
            if want.contains(&j) {
                hits += 1;
                tied += 1;
            } else {
                let rj = &rows[j as usize * d..(j as usize + 1) * d];
                let cos: f64 = ri
                    .iter()
                    .zip(rj)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                if 1.0 - cos <= kth + 1e-5 {
                    tied += 1;
                }
            }
        }
    }
    let all = (exact.n * k) as f64;
    (hits as f64 / all, tied as f64 / all)
}

fn sq(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Brute-force `k` nearest (self excluded) of each query in `queries`, parallel over queries.
fn brute_knn(p: &[f32], e: usize, queries: &[usize], k: usize) -> Vec<u32> {
    let n = p.len() / e;
    queries
        .par_iter()
        .map_init(
            || Vec::with_capacity(n),
            |buf: &mut Vec<(f32, u32)>, &i| {
                let q = &p[i * e..(i + 1) * e];
                buf.clear();
                buf.extend(
                    (0..n)
                        .filter(|&j| j != i)
                        .map(|j| (sq(q, &p[j * e..(j + 1) * e]), j as u32)),
                );
                let cmp = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                buf.select_nth_unstable_by(k - 1, cmp);
                buf[..k].sort_unstable_by(cmp);
                buf[..k].iter().map(|x| x.1).collect::<Vec<u32>>()
            },
        )
        .flatten_iter()
        .collect()
}

/// Ball-tree `k` nearest (self excluded) of each query, tree build included.
fn tree_knn_queries(p: &[f32], e: usize, queries: &[usize], k: usize) -> Vec<u32> {
    let n = p.len() / e;
    let view = ArrayView2::from_shape((n, e), p).expect("shape");
    let tree = BallTree::euclidean(view).expect("non-empty");
    queries
        .par_iter()
        .flat_map_iter(|&i| {
            let (idx, _) = tree.query(&view.row(i), k + 1);
            let mut out: Vec<u32> = idx
                .into_iter()
                .filter(|&j| j != i)
                .map(|j| j as u32)
                .collect();
            out.truncate(k);
            out
        })
        .collect()
}

/// Fraction of per-query neighbours in `a` that are no farther than the k-th of `b` (the exact
/// brute-force lists, ascending), i.e. recall counting ties (duplicate points) as hits.
fn overlap(p: &[f32], e: usize, queries: &[usize], a: &[u32], b: &[u32], k: usize) -> f64 {
    let d = |i: usize, j: u32| {
        sq(
            &p[i * e..(i + 1) * e],
            &p[j as usize * e..(j as usize + 1) * e],
        )
    };
    let hits: usize = queries
        .iter()
        .zip(a.chunks(k).zip(b.chunks(k)))
        .map(|(&i, (x, y))| {
            let kth = d(i, y[k - 1]);
            x.iter().filter(|&&j| d(i, j) <= kth).count()
        })
        .sum();
    hits as f64 / a.len() as f64
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        parent[i as usize] = parent[parent[i as usize] as usize];
        i = parent[i as usize];
    }
    i
}

/// Connected components of the eps-graph given by each point's eps-neighbour list.
fn components(lists: &[Vec<u32>]) -> usize {
    let mut parent: Vec<u32> = (0..lists.len() as u32).collect();
    for (i, l) in lists.iter().enumerate() {
        for &j in l {
            let (a, b) = (find(&mut parent, i as u32), find(&mut parent, j));
            if a != b {
                parent[a.max(b) as usize] = a.min(b);
            }
        }
    }
    (0..lists.len() as u32)
        .filter(|&i| find(&mut parent, i) == i)
        .count()
}

fn brute_radius(p: &[f32], e: usize, eps: f32) -> Vec<Vec<u32>> {
    let n = p.len() / e;
    let eps2 = eps * eps;
    (0..n)
        .into_par_iter()
        .with_min_len(64)
        .map(|i| {
            let q = &p[i * e..(i + 1) * e];
            (0..n)
                .filter(|&j| j != i && sq(q, &p[j * e..(j + 1) * e]) <= eps2)
                .map(|j| j as u32)
                .collect()
        })
        .collect()
}

fn tree_radius(p: &[f32], e: usize, eps: f32) -> Vec<Vec<u32>> {
    let n = p.len() / e;
    let view = ArrayView2::from_shape((n, e), p).expect("shape");
    let tree = BallTree::euclidean(view).expect("non-empty");
    (0..n)
        .into_par_iter()
        .with_min_len(64)
        .map(|i| {
            let mut l: Vec<u32> = tree
                .query_radius(&view.row(i), eps)
                .into_iter()
                .filter(|&j| j != i)
                .map(|j| j as u32)
                .collect();
            l.sort_unstable();
            l
        })
        .collect()
}

/// Sequential variants for small point sets (a few hundred search matches: one thread).
fn brute_radius_seq(p: &[f32], e: usize, eps: f32) -> usize {
    let n = p.len() / e;
    let eps2 = eps * eps;
    let lists: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            let q = &p[i * e..(i + 1) * e];
            (i + 1..n)
                .filter(|&j| sq(q, &p[j * e..(j + 1) * e]) <= eps2)
                .map(|j| j as u32)
                .collect()
        })
        .collect();
    components(&lists)
}

fn tree_radius_seq(p: &[f32], e: usize, eps: f32) -> usize {
    let n = p.len() / e;
    let view = ArrayView2::from_shape((n, e), p).expect("shape");
    let tree = BallTree::euclidean(view).expect("non-empty");
    let lists: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            tree.query_radius(&view.row(i), eps)
                .into_iter()
                .filter(|&j| j > i)
                .map(|j| j as u32)
                .collect()
        })
        .collect();
    components(&lists)
}

/// Coordinates centred and scaled so that the largest axis extent is 1 (a viewer cell's units).
fn unit_extent(m: &Matrix) -> Vec<f32> {
    let e = m.cols();
    let mut lo = vec![f32::INFINITY; e];
    let mut hi = vec![f32::NEG_INFINITY; e];
    for r in m.iter_rows() {
        for t in 0..e {
            lo[t] = lo[t].min(r[t]);
            hi[t] = hi[t].max(r[t]);
        }
    }
    let ext = (0..e)
        .map(|t| hi[t] - lo[t])
        .fold(0f32, f32::max)
        .max(1e-12);
    let mut v = m.as_slice().to_vec();
    for r in v.chunks_exact_mut(e) {
        for t in 0..e {
            r[t] = (r[t] - lo[t]) / ext;
        }
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let runs = opt("--runs", 5).max(1);
    let threads = opt("--threads", 2).max(1);
    let skip_input = args.iter().any(|a| a == "--layouts-only");
    let skip_layouts = args.iter().any(|a| a == "--input-only");
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("thread pool");
    println!("median of {runs} runs, {threads} rayon threads; times in seconds unless marked");

    // (a) Input space.
    if !skip_input {
        let n = 10_000;
        let head32 = synthetic::head(n / 2, false, 11).joint().slice_rows(0, n);
        let sets = [
            ("head d=32", head32),
            ("mixture d=32", mixture(n, 32, 21)),
            ("mixture d=64", mixture(n, 64, 22)),
        ];
        println!(
            "\n(a) input space, n = {n}, cosine\n| data | k | exact_knn | approximate_knn (recall) | ball tree build+query (recall by index; counting ties) | tree / exact |"
        );
        println!("| --- | --- | --- | --- | --- | --- |");
        for (name, data) in &sets {
            let d = data.cols();
            for k in [15usize, 90] {
                let (t_exact, exact) =
                    timed(runs, || exact_knn(data, k, Metric::Cosine).expect("knn"));
                let (t_approx, approx) = timed(runs, || {
                    approximate_knn(data, k, Metric::Cosine, 7).expect("knn")
                });
                let (t_tree, tree) = timed(runs, || {
                    let rows = normalized(data);
                    tree_knn(&rows, n, d, k)
                });
                let (by_index, tie_aware) = recall(&tree, &exact, &normalized(data), d);
                println!(
                    "| {name} | {k} | {t_exact:.3} | {t_approx:.3} ({:.4}) | {t_tree:.3} ({by_index:.4}; ties {tie_aware:.4}) | {:.1}x |",
                    knn_recall(&approx, &exact),
                    t_tree / t_exact
                );
            }
        }
    }

    // (b) Layout space.
    if !skip_layouts {
        let n = 11_356;
        let head = synthetic::head(n / 2, false, 12).joint().slice_rows(0, n);
        println!(
            "\n(b) layout space, n = {n}: t-SNE layouts of a synthetic head, unit extent\n| layout | query | brute force | ball tree | tree / brute | check |"
        );
        println!("| --- | --- | --- | --- | --- | --- |");
        for dims in [2usize, 3] {
            let t = Instant::now();
            let fit = Tsne::params()
                .dims(dims as u8)
                .seed(7)
                .check()
                .expect("params")
                .fit(&head)
                .expect("t-SNE");
            eprintln!("t-SNE {dims}-D layout: {:.1} s", t.elapsed().as_secs_f64());
            let p = unit_extent(&fit.coords);
            let e = dims;
            let label = format!("{dims}-D");

            let all: Vec<usize> = (0..n).collect();
            let (tb, b) = timed(runs, || brute_knn(&p, e, &all, 10));
            let (tt, tr) = timed(runs, || tree_knn_queries(&p, e, &all, 10));
            println!(
                "| {label} | all {n} points, k = 10 | {tb:.4} | {tt:.4} | {:.2}x | recall {:.4} |",
                tt / tb,
                overlap(&p, e, &all, &tr, &b, 10)
            );

            let mut rng = ChaCha8Rng::seed_from_u64(5);
            let mut sample: Vec<usize> = (0..1000).map(|_| rng.random_range(0..n)).collect();
            sample.sort_unstable();
            let (tb, b) = timed(runs, || brute_knn(&p, e, &sample, 10));
            let (tt, tr) = timed(runs, || tree_knn_queries(&p, e, &sample, 10));
            let (tq, q) = timed(runs, || {
                quality_sampled(&head, &fit.coords, 10, Metric::Cosine, 1000).expect("quality")
            });
            println!(
                "| {label} | 1,000 queries, k = 10 (tree build incl.) | {tb:.4} | {tt:.4} | {:.2}x | recall {:.4}; whole quality_sampled: {tq:.3} s (T = {:.4}) |",
                tt / tb,
                overlap(&p, e, &sample, &tr, &b, 10),
                q.trustworthiness
            );

            // Picking: one nearest point to a mouse position, one thread.
            let mice: Vec<f32> = (0..2000 * e)
                .map(|_| rng.random_range(0.0f32..1.0))
                .collect();
            let (tb, bi) = timed(runs, || {
                mice.chunks_exact(e)
                    .map(|m| {
                        let mut best = (f32::INFINITY, 0usize);
                        for (j, r) in p.chunks_exact(e).enumerate() {
                            let d = sq(m, r);
                            if d < best.0 {
                                best = (d, j);
                            }
                        }
                        best.1
                    })
                    .collect::<Vec<_>>()
            });
            let view = ArrayView2::from_shape((n, e), &p[..]).expect("shape");
            let (t_build, tree) = timed(runs, || BallTree::euclidean(view).expect("non-empty"));
            let (tt, ti) = timed(runs, || {
                mice.chunks_exact(e)
                    .map(|m| tree.query_nearest(&ArrayView1::from(m)).0)
                    .collect::<Vec<_>>()
            });
            // Same point, or another at exactly the same distance (duplicates).
            let at = |m: &[f32], j: usize| sq(m, &p[j * e..(j + 1) * e]);
            let same = mice
                .chunks_exact(e)
                .zip(bi.iter().zip(&ti))
                .filter(|(m, (a, b))| a == b || at(m, **a) == at(m, **b))
                .count();
            let close = mice
                .chunks_exact(e)
                .zip(bi.iter().zip(&ti))
                .filter(|(m, (a, b))| (at(m, **b) - at(m, **a)).abs() <= 1e-6 * at(m, **a))
                .count();
            println!(
                "| {label} | one nearest point (picking), per query | {:.1} µs | {:.2} µs (+ build {:.1} ms) | {:.3}x | same {same}/2000, within f32 rounding {close}/2000 |",
                tb / 2000.0 * 1e6,
                tt / 2000.0 * 1e6,
                t_build * 1e3,
                tt / tb
            );

            // Cluster counting at eps = 0.05: all points (parallel), then 300 matches (one thread).
            let eps = 0.05f32;
            let (tb, bl) = timed(runs, || brute_radius(&p, e, eps));
            let (tt, tl) = timed(runs, || tree_radius(&p, e, eps));
            let pairs: usize = bl.iter().map(Vec::len).sum();
            println!(
                "| {label} | radius eps = {eps}, all points ({} pairs) + components | {tb:.4} | {tt:.4} | {:.2}x | clusters {} / {} |",
                pairs / 2,
                tt / tb,
                components(&bl),
                components(&tl)
            );
            let m = 300;
            let mut idx: Vec<usize> = (0..n).collect();
            for i in 0..m {
                let j = rng.random_range(i..n);
                idx.swap(i, j);
            }
            let matches: Vec<f32> = idx[..m]
                .iter()
                .flat_map(|&i| p[i * e..(i + 1) * e].iter().copied())
                .collect();
            let reps = 200;
            let (tb, cb) = timed(runs, || {
                (0..reps).map(|_| brute_radius_seq(&matches, e, eps)).last()
            });
            let (tt, ct) = timed(runs, || {
                (0..reps).map(|_| tree_radius_seq(&matches, e, eps)).last()
            });
            println!(
                "| {label} | {m} search matches, eps = {eps}, cluster count | {:.1} µs | {:.1} µs (build incl.) | {:.2}x | clusters {} / {} |",
                tb / reps as f64 * 1e6,
                tt / reps as f64 * 1e6,
                tt / tb,
                cb.unwrap_or(0),
                ct.unwrap_or(0)
            );
        }
    }
}
