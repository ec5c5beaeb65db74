//! Geometry shared by the views: per-cell normalization, clusters of points, label placement.

use std::collections::HashMap;

use attn_types::{HeadId, Matrix};
use serde::{Deserialize, Serialize};

use crate::error::VizError;
use crate::state::LabelStyle;

/// Cells of at least this many points get robust bounds (see [`normalize_cell`]).
pub const ROBUST_MIN_POINTS: usize = 200;
/// Fraction of points on each side of each axis that robust bounds may leave outside.
pub const ROBUST_TAIL: f32 = 0.005;
/// Margin added on each side of robust bounds, as a fraction of their range.
pub const ROBUST_MARGIN: f32 = 0.1;

/// Scales one head's coordinates into `[0, 1]^dims`, preserving the aspect ratio: every axis is divided
/// by the largest axis range, and shorter axes are centred. Always returns `[x, y, z]` (z = 0 in 2D).
/// A cell whose points all coincide maps them to the centre (0.5).
///
/// Bounds are robust for cells of [`ROBUST_MIN_POINTS`] or more points: per axis, the
/// [`ROBUST_TAIL`] and `1 - ROBUST_TAIL` quantiles widened by [`ROBUST_MARGIN`] of their range (never
/// wider than the full range). A few far outliers (UMAP pushes points of small disconnected
/// components far out) would otherwise shrink the whole layout to a dot; they are drawn on the border.
pub fn normalize_cell(head: HeadId, coords: &Matrix) -> Result<Vec<[f32; 3]>, VizError> {
    let dims = coords.cols().min(3);
    let mut lo = [f32::INFINITY; 3];
    let mut hi = [f32::NEG_INFINITY; 3];
    for (row, r) in coords.iter_rows().enumerate() {
        for d in 0..dims {
            let v = r[d];
            if !v.is_finite() {
                return Err(VizError::NonFinite { head, row });
            }
            lo[d] = lo[d].min(v);
            hi[d] = hi[d].max(v);
        }
    }
    let n = coords.rows();
    if n >= ROBUST_MIN_POINTS {
        let tail = ((n - 1) as f32 * ROBUST_TAIL).floor() as usize;
        let mut axis: Vec<f32> = Vec::with_capacity(n);
        for d in 0..dims {
            axis.clear();
            axis.extend(coords.iter_rows().map(|r| r[d]));
            let q_lo = *axis.select_nth_unstable_by(tail, f32::total_cmp).1;
            let q_hi = *axis.select_nth_unstable_by(n - 1 - tail, f32::total_cmp).1;
            let margin = (q_hi - q_lo) * ROBUST_MARGIN;
            lo[d] = lo[d].max(q_lo - margin);
            hi[d] = hi[d].min(q_hi + margin);
        }
    }
    let extent = (0..dims).map(|d| hi[d] - lo[d]).fold(0.0f32, f32::max);
    let mut offset = [0.0f32; 3];
    for d in 0..dims {
        offset[d] = if extent > 0.0 {
            (1.0 - (hi[d] - lo[d]) / extent) / 2.0
        } else {
            0.5
        };
    }
    Ok(coords
        .iter_rows()
        .map(|r| {
            let mut p = [0.0f32; 3];
            for d in 0..dims {
                p[d] = if extent > 0.0 {
                    (r[d].clamp(lo[d], hi[d]) - lo[d]) / extent + offset[d]
                } else {
                    offset[d]
                };
            }
            p
        })
        .collect())
}

/// Number of clusters formed by `points`: connected components of the graph that links two points whose
/// Euclidean distance is at most `eps` (single linkage, i.e. DBSCAN with `min_pts = 1`). Points are in a
/// cell's normalized units, so `eps` is a fraction of the cell's extent. Runs in about linear time on a
/// grid of side `eps`.
pub fn count_clusters(points: &[[f32; 3]], eps: f32) -> usize {
    if points.is_empty() {
        return 0;
    }
    if !(eps.is_finite() && eps > 0.0) {
        return points.len();
    }
    let cell = |p: &[f32; 3]| {
        [
            (p[0] / eps).floor() as i64,
            (p[1] / eps).floor() as i64,
            (p[2] / eps).floor() as i64,
        ]
    };
    let mut grid: HashMap<[i64; 3], Vec<usize>> = HashMap::new();
    for (i, p) in points.iter().enumerate() {
        grid.entry(cell(p)).or_default().push(i);
    }
    let mut parent: Vec<usize> = (0..points.len()).collect();
    let eps2 = eps * eps;
    for (i, p) in points.iter().enumerate() {
        let c = cell(p);
        for dx in -1..=1 {
            for dy in -1..=1 {
                for dz in -1..=1 {
                    let Some(bucket) = grid.get(&[c[0] + dx, c[1] + dy, c[2] + dz]) else {
                        continue;
                    };
                    for &j in bucket {
                        if j > i && dist2(p, &points[j]) <= eps2 {
                            union(&mut parent, i, j);
                        }
                    }
                }
            }
        }
    }
    (0..points.len())
        .filter(|&i| find(&mut parent, i) == i)
        .count()
}

fn dist2(a: &[f32; 3], b: &[f32; 3]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        // Path halving keeps the trees shallow.
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        // Smaller root wins so that the result does not depend on visiting order.
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi] = lo;
    }
}

/// A placed label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// Joint row of the labelled point.
    pub row: u32,
    /// Text shown (token text without word markers).
    pub text: String,
    /// The point (x, y) the label belongs to.
    pub anchor: [f32; 2],
    /// The label box `[x0, y0, x1, y1]` in normalized units.
    pub rect: [f32; 4],
}

/// Greedy label placement: candidates are taken in priority order; each tries four boxes (right of the
/// point, left, above, below — `y` grows "above"), each `chars x char_width` wide and `char_height`
/// high, `gap` away from the point; the first box that lies inside `[0, 1]^2` and overlaps no placed box
/// is kept, else the label is dropped. Stops at `max_labels`. 3D views place labels on `(x, y)`.
pub fn place_labels(candidates: &[(u32, &str, [f32; 2])], style: &LabelStyle) -> Vec<Label> {
    let mut placed: Vec<Label> = Vec::new();
    for &(row, text, [x, y]) in candidates {
        if placed.len() >= style.max_labels {
            break;
        }
        let w = style.char_width * text.chars().count().max(1) as f32;
        let h = style.char_height;
        let g = style.gap;
        let options = [
            [x + g, y - h / 2.0, x + g + w, y + h / 2.0],
            [x - g - w, y - h / 2.0, x - g, y + h / 2.0],
            [x - w / 2.0, y + g, x + w / 2.0, y + g + h],
            [x - w / 2.0, y - g - h, x + w / 2.0, y - g],
        ];
        let fits = |r: &[f32; 4]| {
            r[0] >= 0.0
                && r[1] >= 0.0
                && r[2] <= 1.0
                && r[3] <= 1.0
                && !placed.iter().any(|l| overlaps(r, &l.rect))
        };
        if let Some(rect) = options.iter().find(|r| fits(r)) {
            placed.push(Label {
                row,
                text: text.to_string(),
                anchor: [x, y],
                rect: *rect,
            });
        }
    }
    placed
}

fn overlaps(a: &[f32; 4], b: &[f32; 4]) -> bool {
    // Touching edges do not count as overlap.
    a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_preserves_aspect_and_centres() {
        // x spans 0..4, y spans 0..2: x maps to [0, 1], y to [0.25, 0.75].
        let m = Matrix::from_rows(&[[0.0, 0.0], [4.0, 2.0], [2.0, 1.0]]).unwrap();
        let p = normalize_cell(HeadId::new(0, 0), &m).unwrap();
        assert_eq!(p[0], [0.0, 0.25, 0.0]);
        assert_eq!(p[1], [1.0, 0.75, 0.0]);
        assert_eq!(p[2], [0.5, 0.5, 0.0]);
        let same = Matrix::from_rows(&[[3.0, 3.0], [3.0, 3.0]]).unwrap();
        assert_eq!(
            normalize_cell(HeadId::new(0, 0), &same).unwrap(),
            vec![[0.5, 0.5, 0.0]; 2]
        );
    }

    #[test]
    fn clusters_are_components_under_eps() {
        let pts = [
            [0.0, 0.0, 0.0],
            [0.04, 0.0, 0.0],
            [0.08, 0.0, 0.0], // chained to the first two
            [0.5, 0.5, 0.0],
            [0.9, 0.9, 0.0],
            [0.9, 0.96, 0.0], // 0.06 away: separate at eps 0.05
        ];
        assert_eq!(count_clusters(&pts, 0.05), 4);
        assert_eq!(count_clusters(&pts, 0.07), 3);
        assert_eq!(count_clusters(&[], 0.05), 0);
    }

    #[test]
    fn labels_do_not_overlap() {
        let style = LabelStyle {
            char_width: 0.125,
            char_height: 0.125,
            gap: 0.0,
            max_labels: 10,
        };
        // Three points at one place: right, then left; above and below would overlap those, so the
        // third label is dropped. A fourth point far away gets its label.
        let c = [
            (0, "ab", [0.5, 0.5]),
            (1, "ab", [0.5, 0.5]),
            (2, "ab", [0.5, 0.5]),
            (3, "ab", [0.5, 0.125]),
        ];
        let l = place_labels(&c, &style);
        assert_eq!(l.iter().map(|l| l.row).collect::<Vec<_>>(), vec![0, 1, 3]);
        assert_eq!(l[0].rect, [0.5, 0.4375, 0.75, 0.5625]);
        assert_eq!(l[1].rect, [0.25, 0.4375, 0.5, 0.5625]);
        for a in &l {
            for b in &l {
                assert!(std::ptr::eq(a, b) || !overlaps(&a.rect, &b.rect));
            }
        }
        // A point at the right edge cannot be labelled to its right.
        let l = place_labels(&[(0, "ab", [1.0, 0.5])], &style);
        assert_eq!(l[0].rect[2], 1.0);
    }
}
