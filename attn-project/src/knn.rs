//! k-nearest-neighbour graphs shared by t-SNE and UMAP.
//!
//! - [`exact_knn`]: blocked brute force (dot products against tiles of rows that stay in cache),
//!   parallel over blocks of query rows. O(n² d), exact.
//! - [`approximate_knn`]: random-projection forest for the initial graph, refined by NN-descent.
//!   Seeded; bit-identical for any number of threads.
//! - [`knn`]: picks exact up to [`EXACT_KNN_MAX_N`] points, approximate above.

use std::collections::BinaryHeap;

use attn_types::{Matrix, Metric};
use nalgebra::{DMatrixView, DMatrixViewMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::ProjectError;
use crate::util::{check_data, dot, hash4, prepare_rows, sq_dist};

/// [`knn`] uses the exact search up to this many points and NN-descent above. Chosen where the
/// O(n²) brute force stops being cheaper than NN-descent at the t-SNE neighbourhood size (k = 90,
/// d = 64); see the crate README for the measurements.
pub const EXACT_KNN_MAX_N: usize = 20_000;

/// The `k` nearest neighbours of every point, self excluded, sorted by ascending distance.
///
/// Neighbour `j` of point `i` is `indices[i * k + j]` at distance `distances[i * k + j]` (in the
/// graph's [`Metric`]: `1 - cos` for cosine, plain Euclidean distance for Euclidean).
#[derive(Debug, Clone, PartialEq)]
pub struct KnnGraph {
    /// Number of points.
    pub n: usize,
    /// Neighbours per point.
    pub k: usize,
    /// Metric the distances are in.
    pub metric: Metric,
    /// `n * k` neighbour indices.
    pub indices: Vec<u32>,
    /// `n * k` distances, ascending per point.
    pub distances: Vec<f32>,
}

impl KnnGraph {
    /// Neighbour indices of point `i`.
    pub fn neighbors(&self, i: usize) -> &[u32] {
        &self.indices[i * self.k..(i + 1) * self.k]
    }

    /// Neighbour distances of point `i`.
    pub fn neighbor_distances(&self, i: usize) -> &[f32] {
        &self.distances[i * self.k..(i + 1) * self.k]
    }

    /// Checks the graph's internal consistency (array lengths, index range, no self loops), as
    /// needed before fitting on a graph built elsewhere.
    pub fn validate(&self) -> Result<(), ProjectError> {
        let bad = |reason: String| Err(ProjectError::InvalidInput(format!("kNN graph: {reason}")));
        if self.k == 0 || self.n < 2 {
            return bad(format!(
                "needs n >= 2 and k >= 1, got n = {}, k = {}",
                self.n, self.k
            ));
        }
        if self.indices.len() != self.n * self.k || self.distances.len() != self.n * self.k {
            return bad(format!(
                "arrays must hold n * k = {} entries",
                self.n * self.k
            ));
        }
        for i in 0..self.n {
            for (&j, &d) in self.neighbors(i).iter().zip(self.neighbor_distances(i)) {
                if j as usize >= self.n || j as usize == i {
                    return bad(format!("point {i} has invalid neighbour {j}"));
                }
                if !d.is_finite() || d < 0.0 {
                    return bad(format!("point {i} has invalid distance {d}"));
                }
            }
        }
        Ok(())
    }
}

fn check_k(n: usize, k: usize) -> Result<(), ProjectError> {
    if k == 0 || k >= n {
        return Err(ProjectError::InvalidParam {
            name: "k",
            reason: format!("must be in 1..{n} for {n} points, got {k}"),
        });
    }
    Ok(())
}

/// kNN graph, exact for `n <= EXACT_KNN_MAX_N` and approximate (NN-descent, `seed`) above.
///
/// Zero rows under the cosine metric are at distance 1 from every point. Fails on fewer than two
/// points, non-finite values (naming the row), or `k` outside `1..n`.
pub fn knn(data: &Matrix, k: usize, metric: Metric, seed: u64) -> Result<KnnGraph, ProjectError> {
    if data.rows() <= EXACT_KNN_MAX_N {
        exact_knn(data, k, metric)
    } else {
        approximate_knn(data, k, metric, seed)
    }
}

/// Query rows per parallel task of the exact search.
const QUERY_BLOCK: usize = 64;
/// Shapes at or below this use plain dot products instead of SGEMM.
const GEMM_MIN: usize = 5;
/// Candidate rows per SGEMM call of the exact search.
const TILE: usize = 2048;

/// Exact kNN by blocked brute force: O(n² d) time, O(64 n) memory per task. Ties are broken by
/// index.
pub fn exact_knn(data: &Matrix, k: usize, metric: Metric) -> Result<KnnGraph, ProjectError> {
    check_data(data)?;
    let (n, d) = data.shape();
    check_k(n, k)?;
    let rows = prepare_rows(data, metric);
    // Euclidean ranks use |a|² + |b|² - 2ab (one dot product per pair); the final distances of the
    // k winners are recomputed directly, so cancellation does not leak into the output.
    let sq_norms: Vec<f32> = rows.chunks_exact(d).map(|r| dot(r, r)).collect();
    let mut indices = vec![0u32; n * k];
    let mut distances = vec![0f32; n * k];
    indices
        .par_chunks_mut(QUERY_BLOCK * k)
        .zip(distances.par_chunks_mut(QUERY_BLOCK * k))
        .enumerate()
        .for_each(|(b, (idx_out, dist_out))| {
            let q0 = b * QUERY_BLOCK;
            let nq = idx_out.len() / k;
            // Inner products of the block against a tile of candidates by one SGEMM
            // (matrixmultiply: register-blocked, runtime-detected AVX/FMA, single-threaded, so the
            // values do not depend on the thread count), written straight into the row buffers.
            let mut buf = vec![0f32; nq * n];
            let q = DMatrixView::from_slice_with_strides(&rows[q0 * d..(q0 + nq) * d], nq, d, d, 1);
            for t0 in (0..n).step_by(TILE) {
                let t1 = (t0 + TILE).min(n);
                let c =
                    DMatrixView::from_slice_with_strides(&rows[t0 * d..t1 * d], d, t1 - t0, 1, d);
                if d > GEMM_MIN && nq > GEMM_MIN && t1 - t0 > GEMM_MIN {
                    let mut out = DMatrixViewMut::from_slice_with_strides_mut(
                        &mut buf[t0..],
                        nq,
                        t1 - t0,
                        n,
                        1,
                    );
                    out.gemm(1.0, &q, &c, 0.0);
                } else {
                    // nalgebra only hands shapes above 5 to matrixmultiply; its fallback for
                    // small shapes mishandles strided output views, so small cases are done here.
                    for qi in 0..nq {
                        let qrow = &rows[(q0 + qi) * d..(q0 + qi + 1) * d];
                        for j in t0..t1 {
                            buf[qi * n + j] = dot(qrow, &rows[j * d..(j + 1) * d]);
                        }
                    }
                }
            }
            for (qi, row) in buf.chunks_exact_mut(n).enumerate() {
                let nq2 = sq_norms[q0 + qi];
                for (o, nj) in row.iter_mut().zip(&sq_norms) {
                    *o = match metric {
                        Metric::Cosine => 1.0 - *o,
                        Metric::Euclidean => nq2 + nj - 2.0 * *o,
                    };
                }
            }
            let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k + 1);
            let mut top: Vec<Candidate> = Vec::with_capacity(k);
            for qi in 0..nq {
                let i = q0 + qi;
                // The k smallest (value, index) pairs through a max-heap of size k: past the first
                // few hundred candidates nearly every one fails the single comparison with the
                // current k-th, where selecting from a copy of the whole row touched each one
                // several times. Ties go to the lower index, so the set is the same as a full sort's.
                heap.clear();
                for (j, &v) in buf[qi * n..(qi + 1) * n].iter().enumerate() {
                    if j == i {
                        continue;
                    }
                    let c = Candidate(v, j as u32);
                    if heap.len() < k {
                        heap.push(c);
                    } else if let Some(mut worst) = heap.peek_mut()
                        && c < *worst
                    {
                        *worst = c;
                    }
                }
                top.clear();
                top.extend(heap.drain());
                let qrow = &rows[i * d..(i + 1) * d];
                for c in top.iter_mut() {
                    let r = &rows[c.1 as usize * d..(c.1 as usize + 1) * d];
                    c.0 = match metric {
                        Metric::Cosine => (1.0 - dot(qrow, r)).max(0.0),
                        Metric::Euclidean => sq_dist(qrow, r).sqrt(),
                    };
                }
                top.sort_unstable();
                for (s, c) in top.iter().enumerate() {
                    idx_out[qi * k + s] = c.1;
                    dist_out[qi * k + s] = c.0;
                }
            }
        });
    Ok(KnnGraph {
        n,
        k,
        metric,
        indices,
        distances,
    })
}

/// A kNN candidate `(rank value, index)`, ordered by value (IEEE total order), then index.
#[derive(Clone, Copy)]
struct Candidate(f32, u32);

// Equality agrees with `Ord` (total order: -0.0 != 0.0, NaN == NaN), unlike a derived f32 `==`.
impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// Fraction of the exact graph's neighbours that the approximate graph found (mean over points).
/// Returns 0 when the graphs disagree on `n` or `k`.
pub fn knn_recall(approx: &KnnGraph, exact: &KnnGraph) -> f32 {
    if approx.n != exact.n || approx.k != exact.k || approx.n == 0 || approx.k == 0 {
        return 0.0;
    }
    let hits: usize = (0..exact.n)
        .into_par_iter()
        .with_min_len(256)
        .map(|i| {
            let a = approx.neighbors(i);
            exact.neighbors(i).iter().filter(|j| a.contains(j)).count()
        })
        .sum();
    hits as f32 / (exact.n * exact.k) as f32
}

/// Points per parallel task in NN-descent (each task owns a stamp array of `n` entries).
const ND_CHUNK: usize = 1024;
/// Maximum NN-descent iterations.
const ND_MAX_ITERS: usize = 12;
/// NN-descent stops when fewer than `ND_DELTA * n * k` neighbour lists changed in an iteration.
const ND_DELTA: f64 = 0.001;

/// Prepared rows plus the rank distance: `1 - cos` (rows normalized) or squared Euclidean.
struct Space<'a> {
    rows: &'a [f32],
    d: usize,
    metric: Metric,
}

impl Space<'_> {
    #[inline]
    fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.d..(i + 1) * self.d]
    }
    #[inline]
    fn dist(&self, i: usize, j: usize) -> f32 {
        match self.metric {
            Metric::Cosine => 1.0 - dot(self.row(i), self.row(j)),
            Metric::Euclidean => sq_dist(self.row(i), self.row(j)),
        }
    }
}

/// Sorted, bounded neighbour list of one point inside the flat NN-descent arrays.
struct ListMut<'a> {
    dist: &'a mut [f32],
    idx: &'a mut [u32],
    new: &'a mut [bool],
}

impl ListMut<'_> {
    /// Inserts `(d, j)` if it beats the current worst; the caller guarantees `j` is not present.
    #[inline]
    fn push(&mut self, d: f32, j: u32) -> bool {
        let k = self.dist.len();
        let worse = |a: f32, ai: u32, b: f32, bi: u32| a > b || (a == b && ai > bi);
        if !worse(self.dist[k - 1], self.idx[k - 1], d, j) {
            return false;
        }
        let mut p = k - 1;
        while p > 0 && worse(self.dist[p - 1], self.idx[p - 1], d, j) {
            self.dist[p] = self.dist[p - 1];
            self.idx[p] = self.idx[p - 1];
            self.new[p] = self.new[p - 1];
            p -= 1;
        }
        self.dist[p] = d;
        self.idx[p] = j;
        self.new[p] = true;
        true
    }
}

/// Approximate kNN: a random-projection forest seeds every point's list with its leaf-mates, then
/// NN-descent ("a neighbour of a neighbour is likely a neighbour") refines it until fewer than
/// 0.1% of the entries change. Each point's list is only written by the task owning that point and
/// all random choices are hashes of `(seed, iteration, point)`, so the result is identical for any
/// number of threads. Typical recall is above 0.95 (see the tests and README).
pub fn approximate_knn(
    data: &Matrix,
    k: usize,
    metric: Metric,
    seed: u64,
) -> Result<KnnGraph, ProjectError> {
    check_data(data)?;
    let (n, d) = data.shape();
    check_k(n, k)?;
    let rows = prepare_rows(data, metric);
    let space = Space {
        rows: &rows,
        d,
        metric,
    };

    let mut dist = vec![f32::INFINITY; n * k];
    let mut idx = vec![u32::MAX; n * k];
    let mut new = vec![true; n * k];

    // --- Random-projection forest: leaf ids per point and tree, leaf members as CSR per tree.
    let n_trees = (4 + (n as f64).powf(0.25).round() as usize / 2).min(16);
    let leaf_size = (k + 1).clamp(16, 256);
    let forest: Vec<Forestree> = (0..n_trees)
        .into_par_iter()
        .map(|t| build_rp_tree(&space, n, leaf_size, hash4(seed, 0x5250, t as u64, 0)))
        .collect();

    // --- Initial lists from leaf-mates, then random fill for points with too few candidates.
    for_each_list(&mut dist, &mut idx, &mut new, k, n, |i, list, stamp| {
        stamp[i] = i as u32 + 1;
        for tree in &forest {
            let leaf = tree.leaf_of[i] as usize;
            for &j in &tree.members[tree.offsets[leaf] as usize..tree.offsets[leaf + 1] as usize] {
                if stamp[j as usize] != i as u32 + 1 {
                    stamp[j as usize] = i as u32 + 1;
                    list.push(space.dist(i, j as usize), j);
                }
            }
        }
        let mut attempt = 0u64;
        while list.idx[k - 1] == u32::MAX {
            // Random distinct points; after many misses fall back to a sweep so this always ends.
            let j = if attempt < 4 * k as u64 + 64 {
                (hash4(seed, 0x46494c4c, i as u64, attempt) % n as u64) as usize
            } else {
                (i + 1 + (attempt as usize - (4 * k + 64))) % n
            };
            attempt += 1;
            if stamp[j] != i as u32 + 1 {
                stamp[j] = i as u32 + 1;
                list.push(space.dist(i, j), j as u32);
            }
        }
        0
    });
    drop(forest);

    // --- NN-descent.
    // At least 24 candidates even for small k: recall on unclustered data needs the wider join.
    let max_cand = k.clamp(24, 48);
    for iter in 0..ND_MAX_ITERS {
        let (newc, oldc) = sample_candidates(&idx, &mut new, n, k, max_cand, seed, iter as u64);
        let inv_new = newc.inverse(n);
        let inv_old = oldc.inverse(n);
        let updates = for_each_list(&mut dist, &mut idx, &mut new, k, n, |u, list, stamp| {
            let mark = u as u32 + 1;
            stamp[u] = mark;
            for &j in list.idx.iter() {
                stamp[j as usize] = mark;
            }
            let mut changed = 0usize;
            let mut consider = |v: u32, list: &mut ListMut<'_>, stamp: &mut [u32]| {
                if stamp[v as usize] != mark {
                    stamp[v as usize] = mark;
                    if list.push(space.dist(u, v as usize), v) {
                        changed += 1;
                    }
                }
            };
            for &j in inv_new.get(u) {
                consider(j, list, stamp);
                for &v in newc.get(j as usize).iter().chain(oldc.get(j as usize)) {
                    consider(v, list, stamp);
                }
            }
            for &j in inv_old.get(u) {
                for &v in newc.get(j as usize) {
                    consider(v, list, stamp);
                }
            }
            changed
        });
        if (updates as f64) <= ND_DELTA * (n * k) as f64 {
            break;
        }
    }

    // Rank distances -> metric units; lists are already sorted ascending with index tie-breaks.
    for v in dist.iter_mut() {
        *v = match metric {
            Metric::Cosine => v.max(0.0),
            Metric::Euclidean => v.max(0.0).sqrt(),
        };
    }
    Ok(KnnGraph {
        n,
        k,
        metric,
        indices: idx,
        distances: dist,
    })
}

/// Runs `f(point, list, stamp)` over all points in parallel chunks of [`ND_CHUNK`] (each chunk with
/// its own zeroed stamp array) and returns the sum of `f`'s results in chunk order.
fn for_each_list<F>(
    dist: &mut [f32],
    idx: &mut [u32],
    new: &mut [bool],
    k: usize,
    n: usize,
    f: F,
) -> usize
where
    F: Fn(usize, &mut ListMut<'_>, &mut [u32]) -> usize + Sync,
{
    let counts: Vec<usize> = dist
        .par_chunks_mut(ND_CHUNK * k)
        .zip(idx.par_chunks_mut(ND_CHUNK * k))
        .zip(new.par_chunks_mut(ND_CHUNK * k))
        .enumerate()
        .map(|(c, ((dc, ic), nc))| {
            let mut stamp = vec![0u32; n];
            let mut total = 0;
            for (o, ((ds, is), ns)) in dc
                .chunks_mut(k)
                .zip(ic.chunks_mut(k))
                .zip(nc.chunks_mut(k))
                .enumerate()
            {
                let mut list = ListMut {
                    dist: ds,
                    idx: is,
                    new: ns,
                };
                total += f(c * ND_CHUNK + o, &mut list, &mut stamp);
            }
            total
        })
        .collect();
    counts.into_iter().sum()
}

/// One random-projection tree: the leaf of every point and each leaf's members.
struct Forestree {
    leaf_of: Vec<u32>,
    offsets: Vec<u32>,
    members: Vec<u32>,
}

/// Builds one RP tree: each node splits its points by the hyperplane equidistant from two random
/// members (through the origin for cosine, where rows are normalized), until at most `leaf_size`
/// points remain. A degenerate split (e.g. duplicates) falls back to halving, so it always ends.
fn build_rp_tree(space: &Space<'_>, n: usize, leaf_size: usize, seed: u64) -> Forestree {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = space.d;
    let mut perm: Vec<u32> = (0..n as u32).collect();
    let mut scratch: Vec<u32> = Vec::with_capacity(n);
    let mut normal = vec![0f32; d];
    let mut leaves: Vec<(usize, usize)> = Vec::new();
    let mut stack = vec![(0usize, n)];
    while let Some((s, e)) = stack.pop() {
        let len = e - s;
        if len <= leaf_size {
            leaves.push((s, e));
            continue;
        }
        // Two distinct positions of the node.
        let ia = rng.random_range(0..len);
        let mut ib = rng.random_range(0..len - 1);
        if ib >= ia {
            ib += 1;
        }
        let (a, b) = (perm[s + ia] as usize, perm[s + ib] as usize);
        let (ra, rb) = (space.row(a), space.row(b));
        for ((o, x), y) in normal.iter_mut().zip(ra).zip(rb) {
            *o = x - y;
        }
        let offset = match space.metric {
            Metric::Cosine => 0.0,
            Metric::Euclidean => -0.5 * (dot(&normal, ra) + dot(&normal, rb)),
        };
        scratch.clear();
        let mut left = s;
        for p in s..e {
            let i = perm[p];
            let m = dot(&normal, space.row(i as usize)) + offset;
            let go_left = if m == 0.0 {
                rng.random::<bool>()
            } else {
                m > 0.0
            };
            if go_left {
                perm[left] = i;
                left += 1;
            } else {
                scratch.push(i);
            }
        }
        perm[left..e].copy_from_slice(&scratch);
        let mid = if left == s || left == e {
            s + len / 2
        } else {
            left
        };
        stack.push((mid, e));
        stack.push((s, mid));
    }
    let mut leaf_of = vec![0u32; n];
    let mut offsets = Vec::with_capacity(leaves.len() + 1);
    offsets.push(0u32);
    let mut members = Vec::with_capacity(n);
    for (l, &(s, e)) in leaves.iter().enumerate() {
        for &i in &perm[s..e] {
            leaf_of[i as usize] = l as u32;
            members.push(i);
        }
        offsets.push(members.len() as u32);
    }
    Forestree {
        leaf_of,
        offsets,
        members,
    }
}

/// Candidate sets in compressed-row form.
struct Csr {
    offsets: Vec<u32>,
    items: Vec<u32>,
}

impl Csr {
    #[inline]
    fn get(&self, i: usize) -> &[u32] {
        &self.items[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The transposed relation: row `v` lists every `i` whose row contains `v`, in ascending `i`.
    fn inverse(&self, n: usize) -> Csr {
        let mut counts = vec![0u32; n + 1];
        for &v in &self.items {
            counts[v as usize + 1] += 1;
        }
        for i in 0..n {
            counts[i + 1] += counts[i];
        }
        let mut fill = counts.clone();
        let mut items = vec![0u32; self.items.len()];
        for i in 0..n {
            for &v in self.get(i) {
                items[fill[v as usize] as usize] = i as u32;
                fill[v as usize] += 1;
            }
        }
        Csr {
            offsets: counts,
            items,
        }
    }
}

/// Bounded max-heaps of `(priority, id)`, `cap` per point, in flat arrays.
struct CandHeaps {
    cap: usize,
    len: Vec<u32>,
    prio: Vec<u64>,
    ids: Vec<u32>,
}

impl CandHeaps {
    fn new(n: usize, cap: usize) -> Self {
        Self {
            cap,
            len: vec![0; n],
            prio: vec![0; n * cap],
            ids: vec![0; n * cap],
        }
    }

    /// Keeps the `cap` smallest priorities of point `i`.
    fn push(&mut self, i: usize, p: u64, id: u32) {
        let base = i * self.cap;
        let len = self.len[i] as usize;
        let (pr, ids) = (
            &mut self.prio[base..base + self.cap],
            &mut self.ids[base..base + self.cap],
        );
        if len < self.cap {
            // Sift up.
            let mut c = len;
            while c > 0 {
                let parent = (c - 1) / 2;
                if pr[parent] >= p {
                    break;
                }
                pr[c] = pr[parent];
                ids[c] = ids[parent];
                c = parent;
            }
            pr[c] = p;
            ids[c] = id;
            self.len[i] += 1;
        } else if p < pr[0] {
            // Replace the root and sift down.
            let mut c = 0;
            loop {
                let (l, r) = (2 * c + 1, 2 * c + 2);
                let mut m = c;
                let mut mp = p;
                if l < len && pr[l] > mp {
                    m = l;
                    mp = pr[l];
                }
                if r < len && pr[r] > mp {
                    m = r;
                }
                if m == c {
                    break;
                }
                pr[c] = pr[m];
                ids[c] = ids[m];
                c = m;
            }
            pr[c] = p;
            ids[c] = id;
        }
    }

    fn into_csr(self, n: usize) -> Csr {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        let mut items = Vec::new();
        for i in 0..n {
            let base = i * self.cap;
            items.extend_from_slice(&self.ids[base..base + self.len[i] as usize]);
            offsets.push(items.len() as u32);
        }
        Csr { offsets, items }
    }
}

/// NN-descent sampling step: every point gets up to `max_cand` "new" candidates (its unexplored
/// neighbours and the points that list it as an unexplored neighbour) and up to `max_cand` "old"
/// ones, chosen by seeded hash priorities; sampled new neighbours are then marked explored.
/// Sequential on purpose: it is O(n k log max_cand) and keeps the result thread-independent.
fn sample_candidates(
    idx: &[u32],
    new: &mut [bool],
    n: usize,
    k: usize,
    max_cand: usize,
    seed: u64,
    iter: u64,
) -> (Csr, Csr) {
    let mut newh = CandHeaps::new(n, max_cand);
    let mut oldh = CandHeaps::new(n, max_cand);
    for i in 0..n {
        for s in 0..k {
            let j = idx[i * k + s];
            if j == u32::MAX {
                continue;
            }
            let (lo, hi) = if (i as u32) < j {
                (i as u32, j)
            } else {
                (j, i as u32)
            };
            let p = hash4(seed, iter, lo as u64, hi as u64);
            let heap = if new[i * k + s] { &mut newh } else { &mut oldh };
            heap.push(i, p, j);
            heap.push(j as usize, p, i as u32);
        }
    }
    let newc = newh.into_csr(n);
    let oldc = oldh.into_csr(n);
    let mut stamp = vec![0u32; n];
    for i in 0..n {
        for &j in newc.get(i) {
            stamp[j as usize] = i as u32 + 1;
        }
        for s in 0..k {
            let j = idx[i * k + s];
            if j != u32::MAX && new[i * k + s] && stamp[j as usize] == i as u32 + 1 {
                new[i * k + s] = false;
            }
        }
    }
    (newc, oldc)
}
