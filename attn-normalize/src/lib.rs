#![doc = include_str!("../README.md")]

mod error;
mod objective;
mod pairs;
mod stats;

use attn_types::{
    HeadDiagnostics, HeadVectors, Matrix, NormalizationParams, NormalizedHead, TokenTable,
};
use rayon::prelude::*;

pub use error::NormalizeError;
pub use objective::NearScope;

/// This crate's version, recorded in dataset provenance.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub use stats::spearman;

use objective::{Objective, centroid};
use pairs::{PairSet, build_pairs};

/// Entry point of the normalizer; see [`Normalizer::params`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Normalizer;

impl Normalizer {
    /// The default parameters, to adjust with the setters and validate with
    /// [`NormalizerParams::check`].
    pub fn params() -> NormalizerParams {
        NormalizerParams::default()
    }
}

/// Unchecked normalization parameters (a builder). Defaults: translate and scale on, bidirectional
/// pairs, near percentile 20 taken per query, flat tolerance 0.002, at most 200,000 pairs (queries
/// subsampled beyond), seed 0, scale searched in `[0.2, 5]` (the range of the research code's grid).
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizerParams {
    translate: bool,
    scale: bool,
    causal: bool,
    window: Option<usize>,
    near_percentile: f32,
    max_pairs: usize,
    seed: u64,
    scale_min: f32,
    scale_max: f32,
    near_scope: NearScope,
    flat_tolerance: f32,
}

impl Default for NormalizerParams {
    fn default() -> Self {
        Self {
            translate: true,
            scale: true,
            causal: false,
            window: None,
            near_percentile: 20.0,
            max_pairs: 200_000,
            seed: 0,
            scale_min: 0.2,
            scale_max: 5.0,
            near_scope: NearScope::default(),
            flat_tolerance: 0.002,
        }
    }
}

impl NormalizerParams {
    /// Whether to translate keys so the key centroid lands on the query centroid (default true).
    pub fn translate(mut self, on: bool) -> Self {
        self.translate = on;
        self
    }

    /// Whether to search the query/key scale `c` (default true); off means `c = 1`.
    pub fn scale(mut self, on: bool) -> Self {
        self.scale = on;
        self
    }

    /// Whether queries only see keys at or before their position (decoders such as GPT-2; default
    /// false). Decides which query-key pairs the statistics use.
    pub fn causal(mut self, on: bool) -> Self {
        self.causal = on;
        self
    }

    /// A sliding window (with [`Self::causal`], as Mistral's or Qwen2's window layers): keys
    /// `window` or more positions before the query are left out of the pairs, as the model masks
    /// them (default none).
    pub fn window(mut self, window: Option<usize>) -> Self {
        self.window = window;
        self
    }

    /// Percentile `p` in `(0, 100]` of each query's distances to its keys (or of all the head's
    /// query-key distances, see [`Self::near_scope`]): keys below it get weight `(t - d)^2` in the
    /// scale objective, the rest none (default 20, the research code's low percentile).
    pub fn near_percentile(mut self, p: f32) -> Self {
        self.near_percentile = p;
        self
    }

    /// Where the near-pair threshold is taken: per query (default) or over the whole head.
    pub fn near_scope(mut self, scope: NearScope) -> Self {
        self.near_scope = scope;
        self
    }

    /// Tolerance `eps >= 0` of the scale search (default 0.002): the chosen `c` is the one closest to
    /// 1 (in `|ln c|`) whose objective is within `eps` of the best found, so flat tails do not push
    /// `c` to the search bound and heads that cannot be improved by more than `eps` keep `c = 1`.
    pub fn flat_tolerance(mut self, eps: f32) -> Self {
        self.flat_tolerance = eps;
        self
    }

    /// Most query-key pairs used per head (default 200,000, at least 2); beyond it pairs are
    /// subsampled by a seeded hash.
    pub fn max_pairs(mut self, n: usize) -> Self {
        self.max_pairs = n;
        self
    }

    /// Seed of the pair subsampling (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Range `[min, max]` searched for the scale `c` (default `[0.2, 5]`, the span of the research code's
    /// grid `{0.2, .., 5}`), `0 < min < max`. Wider ranges let heads reach scales around 10 at which the
    /// translated keys `(k - mean k)/c + c mean(q)` collapse onto one direction under the cosine metric
    /// (seen on MiniLM: such heads projected as a dot plus a line).
    pub fn scale_range(mut self, min: f32, max: f32) -> Self {
        self.scale_min = min;
        self.scale_max = max;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<NormalizerValidParams, NormalizeError> {
        let p = self.near_percentile;
        if !(p.is_finite() && p > 0.0 && p <= 100.0) {
            return Err(NormalizeError::InvalidParam {
                param: "near_percentile",
                reason: format!("{p} is not in (0, 100]"),
            });
        }
        let eps = self.flat_tolerance;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(NormalizeError::InvalidParam {
                param: "flat_tolerance",
                reason: format!("{eps} is not a finite non-negative number"),
            });
        }
        if self.max_pairs < 2 || self.max_pairs > (1 << 31) {
            return Err(NormalizeError::InvalidParam {
                param: "max_pairs",
                reason: format!("{} is not in [2, 2^31]", self.max_pairs),
            });
        }
        if self.window == Some(0) {
            return Err(NormalizeError::InvalidParam {
                param: "window",
                reason: "a window must hold at least 1 position".into(),
            });
        }
        let (lo, hi) = (self.scale_min, self.scale_max);
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo < hi) {
            return Err(NormalizeError::InvalidParam {
                param: "scale_range",
                reason: format!("[{lo}, {hi}] must satisfy 0 < min < max, both finite"),
            });
        }
        Ok(NormalizerValidParams(self))
    }
}

/// Validated parameters: the normalizer itself.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizerValidParams(NormalizerParams);

impl NormalizerValidParams {
    /// Whether keys are translated.
    pub fn translate(&self) -> bool {
        self.0.translate
    }

    /// Whether the scale is searched.
    pub fn scale(&self) -> bool {
        self.0.scale
    }

    /// Whether pairs are causal.
    pub fn causal(&self) -> bool {
        self.0.causal
    }

    /// The sliding window of the pairs, if any.
    pub fn window(&self) -> Option<usize> {
        self.0.window
    }

    /// The same normalizer for a layer with another sliding window (`None`: none); `Some(0)` is
    /// taken as none, as it masks every key.
    pub fn with_window(&self, window: Option<usize>) -> Self {
        let mut params = self.0.clone();
        params.window = window.filter(|&w| w > 0);
        Self(params)
    }

    /// The near-pair percentile.
    pub fn near_percentile(&self) -> f32 {
        self.0.near_percentile
    }

    /// Tolerance of the scale search (see [`NormalizerParams::flat_tolerance`]).
    pub fn flat_tolerance(&self) -> f32 {
        self.0.flat_tolerance
    }

    /// Most query-key pairs used per head.
    pub fn max_pairs(&self) -> usize {
        self.0.max_pairs
    }

    /// Seed of the pair subsampling.
    pub fn seed(&self) -> u64 {
        self.0.seed
    }

    /// Range `(min, max)` searched for the scale `c`.
    pub fn scale_range(&self) -> (f32, f32) {
        (self.0.scale_min, self.0.scale_max)
    }

    /// Where the near-pair threshold is taken.
    pub fn near_scope(&self) -> NearScope {
        self.0.near_scope
    }

    fn pairs(&self, vectors: &HeadVectors, tokens: &TokenTable) -> Result<PairSet, NormalizeError> {
        check_head(vectors, Some(tokens))?;
        let keys = attn_types::AttendedKeys {
            causal: self.0.causal,
            window: self.0.window,
        };
        let pairs = build_pairs(tokens, keys, self.0.max_pairs, self.0.seed);
        if pairs.len() == 0 {
            return Err(NormalizeError::NoPairs {
                head: vectors.head(),
                tokens: tokens.len(),
                sequences: tokens.sequences().len(),
            });
        }
        Ok(pairs)
    }

    /// Normalizes one head: translates keys (if on), searches the scale `c` that makes the
    /// per-query distance-weighted correlation most negative, up to the flat tolerance (if on),
    /// applies both, and reports diagnostics.
    /// Row `i` of `vectors` must be token `i` of `tokens`.
    pub fn normalize(
        &self,
        vectors: &HeadVectors,
        tokens: &TokenTable,
    ) -> Result<NormalizedHead, NormalizeError> {
        let pairs = self.pairs(vectors, tokens)?;
        let near = f64::from(self.0.near_percentile);
        let c = if self.0.scale {
            let obj = Objective::new(
                vectors.queries(),
                vectors.keys(),
                &pairs,
                self.0.translate,
                near,
                self.0.near_scope,
            );
            let (lo, hi) = (
                f64::from(self.0.scale_min).ln(),
                f64::from(self.0.scale_max).ln(),
            );
            (obj.minimize(lo, hi, f64::from(self.0.flat_tolerance))
                .0
                .exp() as f32)
                .clamp(self.0.scale_min, self.0.scale_max)
        } else {
            1.0
        };
        let params = NormalizationParams {
            key_translation: if self.0.translate {
                key_translation(vectors, c)
            } else {
                Vec::new()
            },
            scale: c,
        };
        let normalized = apply(vectors, &params)?;
        let diagnostics = diagnostics_on(vectors, &normalized, &pairs, near, self.0.near_scope);
        Ok(NormalizedHead {
            vectors: normalized,
            params,
            diagnostics,
        })
    }

    /// [`Self::normalize`] for many heads in parallel (rayon); results in input order. The result
    /// does not depend on the number of threads.
    pub fn normalize_many(
        &self,
        heads: &[HeadVectors],
        tokens: &TokenTable,
    ) -> Vec<Result<NormalizedHead, NormalizeError>> {
        heads
            .par_iter()
            .map(|h| self.normalize(h, tokens))
            .collect()
    }

    /// The per-query distance-weighted correlation (the scale objective) of `vectors` as they are
    /// (`c = 1`, no translation, their own logits), on this configuration's pairs.
    pub fn weighted_correlation(
        &self,
        vectors: &HeadVectors,
        tokens: &TokenTable,
    ) -> Result<f32, NormalizeError> {
        let pairs = self.pairs(vectors, tokens)?;
        let obj = Objective::new(
            vectors.queries(),
            vectors.keys(),
            &pairs,
            false,
            f64::from(self.0.near_percentile),
            self.0.near_scope,
        );
        Ok(obj.eval(0.0) as f32)
    }

    /// Diagnostics comparing `before` with `after` (any transform of the same head, usually the
    /// output of [`Self::normalize`]) on this configuration's pairs. The logits every distance is
    /// ranked against are those of `before`; `after` must shift each query's logits by a constant
    /// at most (as [`apply`] does) for the "after" values to mean anything. `norm_gap` is taken
    /// from `before`.
    pub fn diagnostics(
        &self,
        before: &HeadVectors,
        after: &HeadVectors,
        tokens: &TokenTable,
    ) -> Result<HeadDiagnostics, NormalizeError> {
        check_head(after, Some(tokens))?;
        let pairs = self.pairs(before, tokens)?;
        Ok(diagnostics_on(
            before,
            after,
            &pairs,
            f64::from(self.0.near_percentile),
            self.0.near_scope,
        ))
    }
}

/// The key translation `t = c^2 mean(q) - mean(k)` that, applied as `k' = (k + t) / c` next to
/// `q' = c q`, puts the key centroid exactly on the query centroid (`c mean(q)`). For `c = 1` it is
/// the paper's `mean(q) - mean(k)`.
pub fn key_translation(vectors: &HeadVectors, scale: f32) -> Vec<f32> {
    let c2 = f64::from(scale) * f64::from(scale);
    let mq = centroid(vectors.queries());
    let mk = centroid(vectors.keys());
    mq.iter()
        .zip(&mk)
        .map(|(q, k)| (c2 * q - k) as f32)
        .collect()
}

/// Applies `params` to a head: `q' = c q`, `k' = (k + t) / c` (an empty `t` means no translation).
/// Every query's logits change by a constant only, so attention is unchanged.
pub fn apply(
    vectors: &HeadVectors,
    params: &NormalizationParams,
) -> Result<HeadVectors, NormalizeError> {
    check_head(vectors, None)?;
    let c = params.scale;
    if !(c.is_finite() && c > 0.0) {
        return Err(NormalizeError::InvalidParam {
            param: "scale",
            reason: format!("{c} is not a finite positive number"),
        });
    }
    let d = vectors.dim();
    let t = &params.key_translation;
    if !t.is_empty() && t.len() != d {
        return Err(NormalizeError::DimMismatch {
            head: vectors.head(),
            what: "key translation length vs head dim",
            expected: d,
            found: t.len(),
        });
    }
    if let Some(v) = t.iter().find(|v| !v.is_finite()) {
        return Err(NormalizeError::InvalidParam {
            param: "key_translation",
            reason: format!("holds the non-finite value {v}"),
        });
    }
    let rows = vectors.len();
    let mismatch = |_| NormalizeError::DimMismatch {
        head: vectors.head(),
        what: "normalized matrix size",
        expected: rows * d,
        found: 0,
    };
    HeadVectors::new(
        vectors.head(),
        params.normalize_queries(vectors.queries()),
        params.normalize_keys(vectors.keys()),
    )
    .map_err(mismatch)
}

/// Shape, emptiness and finiteness checks shared by every entry point.
fn check_head(v: &HeadVectors, tokens: Option<&TokenTable>) -> Result<(), NormalizeError> {
    let head = v.head();
    let (qr, qc) = v.queries().shape();
    let (kr, kc) = v.keys().shape();
    if kr != qr {
        return Err(NormalizeError::DimMismatch {
            head,
            what: "key rows vs query rows",
            expected: qr,
            found: kr,
        });
    }
    if kc != qc {
        return Err(NormalizeError::DimMismatch {
            head,
            what: "key dim vs query dim",
            expected: qc,
            found: kc,
        });
    }
    if qr == 0 || qc == 0 {
        return Err(NormalizeError::EmptyHead {
            head,
            rows: qr,
            cols: qc,
        });
    }
    if let Some(t) = tokens
        && t.len() != qr
    {
        return Err(NormalizeError::DimMismatch {
            head,
            what: "query rows vs token count",
            expected: t.len(),
            found: qr,
        });
    }
    for (matrix, m) in [("queries", v.queries()), ("keys", v.keys())] {
        if let Some(pos) = m.as_slice().iter().position(|x| !x.is_finite()) {
            return Err(NormalizeError::NonFinite {
                head,
                matrix,
                row: pos / qc,
                value: m.as_slice()[pos],
            });
        }
    }
    Ok(())
}

/// Mean over queries of the per-query Spearman correlations of cosine and of Euclidean distance
/// (between the vectors of `v`) vs the attention logits `q_i . k_j` of `orig` (same head, any
/// transform that shifts each query's logits by a constant gives the same ranks). Queries with fewer
/// than 3 keys, or an undefined correlation (constant ranks), are skipped; no query left gives 0.
fn rank_correlations(v: &HeadVectors, orig: &HeadVectors, pairs: &PairSet) -> (f32, f32) {
    let norms: Vec<f64> = [v.queries(), v.keys()]
        .iter()
        .flat_map(|m| {
            m.iter_rows()
                .map(|r| r.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt())
        })
        .collect();
    let nq = v.len();
    let (mut dots, mut cos, mut euc) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sc, mut nc, mut se, mut ne) = (0.0f64, 0usize, 0.0f64, 0usize);
    for &(qi, s, e) in &pairs.groups {
        if e - s < 3 {
            continue;
        }
        let i = qi as usize;
        dots.clear();
        cos.clear();
        euc.clear();
        let (q, qo) = (v.queries().row(i), orig.queries().row(i));
        for &j in &pairs.keys[s as usize..e as usize] {
            let j = j as usize;
            let (k, ko) = (v.keys().row(j), orig.keys().row(j));
            let (mut dt, mut ed) = (0.0f64, 0.0f64);
            for (&a, &b) in q.iter().zip(k) {
                let (a, b) = (f64::from(a), f64::from(b));
                dt += a * b;
                ed += (a - b) * (a - b);
            }
            let denom = norms[i] * norms[nq + j];
            // A zero vector has no direction: count it as orthogonal (cosine distance 1).
            cos.push(if denom > 0.0 { 1.0 - dt / denom } else { 1.0 });
            euc.push(ed.sqrt());
            dots.push(
                qo.iter()
                    .zip(ko)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum::<f64>(),
            );
        }
        // Rank the logits once for both correlations.
        let rd = stats::average_ranks(&dots);
        let rc = stats::pearson(&stats::average_ranks(&cos), &rd);
        if rc.is_finite() {
            sc += rc;
            nc += 1;
        }
        let re = stats::pearson(&stats::average_ranks(&euc), &rd);
        if re.is_finite() {
            se += re;
            ne += 1;
        }
    }
    let mean = |s: f64, n: usize| if n > 0 { (s / n as f64) as f32 } else { 0.0 };
    (mean(sc, nc), mean(se, ne))
}

fn diagnostics_on(
    before: &HeadVectors,
    after: &HeadVectors,
    pairs: &PairSet,
    near: f64,
    scope: NearScope,
) -> HeadDiagnostics {
    let (cb, eb) = rank_correlations(before, before, pairs);
    let (ca, ea) = rank_correlations(after, before, pairs);
    let wc = |v: &HeadVectors| {
        Objective::new(v.queries(), v.keys(), pairs, false, near, scope).eval(0.0) as f32
    };
    let mean_norm = |m: &Matrix| {
        m.row_norms().iter().map(|&x| f64::from(x)).sum::<f64>() / m.rows().max(1) as f64
    };
    HeadDiagnostics {
        spearman_cosine_before: cb,
        spearman_cosine_after: ca,
        spearman_euclidean_before: eb,
        spearman_euclidean_after: ea,
        weighted_corr_before: wc(before),
        weighted_corr_after: wc(after),
        norm_gap: (mean_norm(before.queries()) - mean_norm(before.keys())) as f32,
        pairs: pairs.len() as u64,
        fidelity_raw: None,
        fidelity_normalized: None,
    }
}
