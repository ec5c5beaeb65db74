//! The vector inputs of an import: `.npy` grids or per-head Parquet files, checked up front and read
//! head by head.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attn_store::NpyFile;
use attn_types::{HeadId, HeadVectors, Matrix};

use crate::error::{Context, Result, bail};

use super::ImportPlan;

/// Where the vectors come from, validated.
pub(super) enum VectorSource {
    /// `queries` and `keys` of equal shape `[layers, heads, n, d]`.
    /// `kv_heads` divides `heads`: query head `h` uses key head `h / (heads / kv_heads)` (grouped-query
    /// attention, as Hugging Face's `repeat_kv`).
    Npy {
        queries: NpyFile,
        keys: NpyFile,
        heads: u16,
        kv_heads: u16,
        n: usize,
        d: usize,
        /// The model layer of each of the arrays' layers, in order (`--layer-ids`; `0..layers`
        /// when not given).
        layer_ids: Vec<u16>,
    },
    /// One Parquet file per head (rows checked against the token count). `kv_heads`: the key heads
    /// per layer when the files are a grouped-query dataset's query heads, which record them.
    Parquet {
        dir: PathBuf,
        files: BTreeMap<HeadId, PathBuf>,
        d: usize,
        kv_heads: Option<u16>,
    },
}

/// `[layers, heads, n, d]` of an array of 2, 3 or 4 dimensions.
pub(super) fn grid_shape(flag: &str, f: &NpyFile, trailing: &str) -> Result<[usize; 4]> {
    let s = f.shape();
    let shape = match *s {
        [n, d] => [1, 1, n, d],
        [h, n, d] => [1, h, n, d],
        [l, h, n, d] => [l, h, n, d],
        _ => bail!(
            "{flag} {}: shape {s:?} has {} dimensions; expected [layers, heads, {trailing}], [heads, {trailing}] or [{trailing}]",
            f.path().display(),
            s.len()
        ),
    };
    if shape.contains(&0) {
        bail!(
            "{flag} {}: shape {s:?} has an empty dimension",
            f.path().display()
        );
    }
    if shape[0] > usize::from(u16::MAX) || shape[1] > usize::from(u16::MAX) {
        bail!(
            "{flag} {}: shape {s:?}: at most {} layers and heads",
            f.path().display(),
            u16::MAX
        );
    }
    Ok(shape)
}

pub(super) fn open_npy(flag: &str, path: &Path) -> Result<NpyFile> {
    NpyFile::open(path).with_context(|| flag.to_string())
}

impl VectorSource {
    pub(super) fn open(plan: &ImportPlan) -> Result<(VectorSource, u16, u16, usize)> {
        match (&plan.queries, &plan.keys, &plan.vectors) {
            (Some(q), Some(k), None) => {
                let queries = open_npy("--queries", q)?;
                let keys = open_npy("--keys", k)?;
                let qs = grid_shape("--queries", &queries, "n, d")?;
                let ks = grid_shape("--keys", &keys, "n, d")?;
                // Equal shapes, or fewer key heads that each serve a group of query heads (grouped-query
                // and multi-query attention).
                let grouped = qs[1] % ks[1] == 0 && queries.shape().len() == keys.shape().len();
                if qs[0] != ks[0] || qs[2] != ks[2] || qs[3] != ks[3] || !grouped {
                    bail!(
                        "--keys {}: shape {:?} does not fit the shape {:?} of --queries {} (same layers, tokens and \
                         head dimension; as many heads, or a divisor of them for grouped-query attention)",
                        k.display(),
                        keys.shape(),
                        queries.shape(),
                        q.display()
                    );
                }
                let [layers, heads, n, d] = qs;
                let layer_ids = match &plan.layer_ids {
                    None => (0..layers as u16).collect(),
                    Some(ids) => {
                        if ids.len() != layers {
                            bail!(
                                "--layer-ids: {} ids for the {layers} layers of --queries {}",
                                ids.len(),
                                q.display()
                            );
                        }
                        if ids.windows(2).any(|w| w[0] >= w[1]) {
                            bail!("--layer-ids: the model layers must be strictly increasing");
                        }
                        ids.clone()
                    }
                };
                // The model has at least as many layers as the highest id names.
                let Some(model_layers) = layer_ids.last().map_or(Some(0), |&l| l.checked_add(1))
                else {
                    bail!("--layer-ids: at most layer {}", u16::MAX - 1);
                };
                Ok((
                    VectorSource::Npy {
                        queries,
                        keys,
                        heads: heads as u16,
                        kv_heads: ks[1] as u16,
                        n,
                        d,
                        layer_ids,
                    },
                    model_layers,
                    heads as u16,
                    n,
                ))
            }
            (None, None, Some(_)) if plan.layer_ids.is_some() => {
                bail!(
                    "--layer-ids: only with --queries/--keys (the --vectors files name their heads)"
                )
            }
            (None, None, Some(dir)) => Self::open_parquet_dir(dir),
            (Some(_), None, _) => bail!("--queries needs --keys (or give --vectors DIR instead)"),
            (None, Some(_), _) => bail!("--keys needs --queries (or give --vectors DIR instead)"),
            (Some(_), Some(_), Some(_)) => {
                bail!("--vectors cannot be combined with --queries/--keys")
            }
            (None, None, None) => {
                bail!("no vectors given: pass --queries Q.npy --keys K.npy, or --vectors DIR")
            }
        }
    }

    /// A folder holding `L<layer>H<head>.parquet` files, or `L<layer>H<head>/vectors.parquet`
    /// folders (the store's own layout, e.g. another dataset's `heads/`).
    pub(super) fn open_parquet_dir(dir: &Path) -> Result<(VectorSource, u16, u16, usize)> {
        if !dir.is_dir() {
            bail!("--vectors {}: no such directory", dir.display());
        }
        let mut files: BTreeMap<HeadId, PathBuf> = BTreeMap::new();
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("--vectors {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("--vectors {}", dir.display()))?
                .path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (head, file) = if path.is_dir() {
                match attn_store::parse_head_dir_name(&name) {
                    Some(h) if path.join(attn_store::VECTORS_FILE).is_file() => {
                        (h, path.join(attn_store::VECTORS_FILE))
                    }
                    _ => continue,
                }
            } else {
                match name
                    .strip_suffix(".parquet")
                    .and_then(attn_store::parse_head_dir_name)
                {
                    Some(h) => (h, path.clone()),
                    None => continue,
                }
            };
            if let Some(other) = files.insert(head, file.clone()) {
                bail!(
                    "--vectors {}: head {head} is given twice ({} and {})",
                    dir.display(),
                    other.display(),
                    file.display()
                );
            }
        }
        let Some((&first, first_file)) = files.iter().next() else {
            bail!(
                "--vectors {}: no per-head Parquet files (expected names like L0H3.parquet or L00H03/vectors.parquet)",
                dir.display()
            );
        };
        // Row counts from the footers (cheap), so a wrong file is reported before anything is written.
        let mut n = None;
        for file in files.values() {
            let rows = parquet_rows(file)?;
            match n {
                None => n = Some(rows),
                Some(n0) if n0 != rows => bail!(
                    "--vectors {}: {rows} rows, but {} has {n0}",
                    file.display(),
                    files[&first].display()
                ),
                Some(_) => {}
            }
        }
        let n = n.unwrap_or(0);
        let d = attn_store::read_vectors_file(first_file, first)
            .with_context(|| "--vectors".to_string())?
            .raw
            .dim();
        let layers = files.keys().map(|h| h.layer).max().unwrap_or(0) + 1;
        let heads = files.keys().map(|h| h.head).max().unwrap_or(0) + 1;
        let kv_heads = Self::grouping(&files, heads)?;
        Ok((
            VectorSource::Parquet {
                dir: dir.to_path_buf(),
                files,
                d,
                kv_heads,
            },
            layers,
            heads,
            n,
        ))
    }

    /// The key heads per layer of a grouped-query dataset's query head files (each records its key
    /// head), so that the import stores keys once per key head as the source did; `None` when the
    /// files record none or a grouping that `h / (heads / kv_heads)` does not give.
    pub(super) fn grouping(files: &BTreeMap<HeadId, PathBuf>, heads: u16) -> Result<Option<u16>> {
        let mut pairs = Vec::with_capacity(files.len());
        for (head, file) in files {
            match attn_store::recorded_key_head(file).with_context(|| "--vectors".to_string())? {
                Some(key_head) => pairs.push((head.head, key_head.head)),
                None => return Ok(None),
            }
        }
        let kv = pairs.iter().map(|&(_, k)| k).max().unwrap_or(0) + 1;
        let grouped = kv < heads
            && heads.is_multiple_of(kv)
            && pairs.iter().all(|&(h, k)| h / (heads / kv) == k);
        Ok(grouped.then_some(kv))
    }

    pub(super) fn dim(&self) -> usize {
        match self {
            VectorSource::Npy { d, .. } | VectorSource::Parquet { d, .. } => *d,
        }
    }

    pub(super) fn heads(&self, heads: u16) -> Vec<HeadId> {
        match self {
            VectorSource::Npy { layer_ids, .. } => layer_ids
                .iter()
                .flat_map(|&layer| (0..heads).map(move |head| HeadId { layer, head }))
                .collect(),
            VectorSource::Parquet { files, .. } => files.keys().copied().collect(),
        }
    }

    /// The index in the `.npy` arrays' layer axis of a model layer the input holds.
    pub(super) fn array_layer(&self, layer: u16) -> usize {
        match self {
            VectorSource::Npy { layer_ids, .. } => layer_ids
                .iter()
                .position(|&l| l == layer)
                .unwrap_or(usize::from(layer)),
            VectorSource::Parquet { .. } => usize::from(layer),
        }
    }

    /// One head's raw vectors, checked to be finite.
    pub(super) fn load(&self, head: HeadId) -> Result<HeadVectors> {
        match self {
            VectorSource::Npy {
                queries,
                keys,
                heads,
                kv_heads,
                n,
                d,
                ..
            } => {
                let slab = n * d;
                let layer = self.array_layer(head.layer);
                let read =
                    |flag: &str, f: &NpyFile, per_layer: u16, index: u16| -> Result<Matrix> {
                        let start = (layer * usize::from(per_layer) + usize::from(index)) * slab;
                        let data = f.read_f32(start, slab).with_context(|| flag.to_string())?;
                        check_finite(flag, f.path(), head, &data, *d)?;
                        Ok(Matrix::from_vec(*n, *d, data)?)
                    };
                let kv_head = head.head / (heads / kv_heads);
                Ok(HeadVectors::new(
                    head,
                    read("--queries", queries, *heads, head.head)?,
                    read("--keys", keys, *kv_heads, kv_head)?,
                )?)
            }
            VectorSource::Parquet { files, d, .. } => {
                let path = &files[&head];
                let stored = attn_store::read_vectors_file(path, head)
                    .with_context(|| "--vectors".to_string())?;
                if stored.raw.dim() != *d {
                    bail!(
                        "--vectors {}: vectors of dimension {}, but {} has {d}",
                        path.display(),
                        stored.raw.dim(),
                        files
                            .values()
                            .next()
                            .map_or_else(String::new, |p| p.display().to_string())
                    );
                }
                check_finite(
                    "--vectors",
                    path,
                    head,
                    stored.raw.queries().as_slice(),
                    stored.raw.dim(),
                )?;
                check_finite(
                    "--vectors",
                    path,
                    head,
                    stored.raw.keys().as_slice(),
                    stored.raw.dim(),
                )?;
                Ok(stored.raw)
            }
        }
    }

    /// What the import's provenance records about the source.
    pub(super) fn describe(&self) -> serde_json::Value {
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        match self {
            VectorSource::Npy { queries, keys, .. } => serde_json::json!({
                "format": "npy",
                "queries": { "file": name(queries.path()), "shape": queries.shape(), "dtype": queries.dtype().name() },
                "keys": { "file": name(keys.path()), "shape": keys.shape(), "dtype": keys.dtype().name() },
            }),
            VectorSource::Parquet { files, dir, .. } => serde_json::json!({
                "format": "parquet",
                "files": files
                    .values()
                    .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
                    .collect::<Vec<_>>(),
            }),
        }
    }
}

pub(super) fn check_finite(
    flag: &str,
    path: &Path,
    head: HeadId,
    data: &[f32],
    d: usize,
) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        bail!(
            "{flag} {}: head {head}, token {} holds a non-finite value ({})",
            path.display(),
            i / d.max(1),
            data[i]
        );
    }
    Ok(())
}

pub(super) fn parquet_rows(path: &Path) -> Result<usize> {
    attn_store::parquet_num_rows(path).with_context(|| "--vectors")
}
