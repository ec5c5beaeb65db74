//! JSON encodings of the per-artifact records kept in Parquet key-value metadata.
//!
//! Written by hand rather than through serde because serde_json turns NaN and infinities into `null`,
//! which then fails to read back as `f32`; a diagnostic that is NaN (a constant head) must not make a
//! head unreadable. Non-finite numbers are written as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`;
//! finite `f32`s are written in their shortest form that reads back bit-exact.

use std::path::Path;

use attn_types::{
    Fidelity, HeadDiagnostics, HeadId, Metric, NormalizationParams, ProjectionQuality,
    ProjectionSpec,
};
use serde_json::{Map, Value, json};

use crate::StoreError;

/// Encodes a float, spelling out non-finite values.
pub(crate) fn num(x: f64) -> Value {
    if x.is_finite() {
        Value::from(x)
    } else if x.is_nan() {
        Value::from("NaN")
    } else if x > 0.0 {
        Value::from("Infinity")
    } else {
        Value::from("-Infinity")
    }
}

/// Encodes an `f32` as the shortest decimal that reads back to the same `f32` (`0.1`, not
/// `0.10000000149011612`), falling back to the exact widening if the detour through `f64` would ever
/// round differently.
pub(crate) fn num32(x: f32) -> Value {
    let short: f64 = format!("{x}").parse().unwrap_or(f64::NAN);
    if x.is_finite() && short as f32 == x {
        num(short)
    } else {
        num(f64::from(x))
    }
}

/// Decodes what [`num`] wrote.
fn parse_num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// Field accessor that names the file and the dotted field path in its errors.
pub(crate) struct Obj<'a> {
    path: &'a Path,
    name: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    /// Views `v` as an object named `name` (a dotted path used in error messages).
    pub fn new(path: &'a Path, name: impl Into<String>, v: &'a Value) -> Result<Self, StoreError> {
        let name = name.into();
        match v.as_object() {
            Some(map) => Ok(Obj { path, name, map }),
            None => Err(StoreError::json(path, name, "expected a JSON object")),
        }
    }

    fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.name)
    }

    /// The raw value of `key`, required.
    pub fn get(&self, key: &str) -> Result<&'a Value, StoreError> {
        self.map
            .get(key)
            .ok_or_else(|| StoreError::json(self.path, self.field(key), "missing"))
    }

    /// A nested object.
    pub fn obj(&self, key: &str) -> Result<Obj<'a>, StoreError> {
        Obj::new(self.path, self.field(key), self.get(key)?)
    }

    /// A float (number or spelled-out non-finite).
    pub fn f64(&self, key: &str) -> Result<f64, StoreError> {
        parse_num(self.get(key)?)
            .ok_or_else(|| StoreError::json(self.path, self.field(key), "expected a number"))
    }

    /// A float narrowed to `f32` (exact for values written by [`num`] from an `f32`).
    pub fn f32(&self, key: &str) -> Result<f32, StoreError> {
        self.f64(key).map(|x| x as f32)
    }

    /// An unsigned integer.
    pub fn u64(&self, key: &str) -> Result<u64, StoreError> {
        self.get(key)?.as_u64().ok_or_else(|| {
            StoreError::json(self.path, self.field(key), "expected an unsigned integer")
        })
    }

    /// A string.
    pub fn str(&self, key: &str) -> Result<&'a str, StoreError> {
        self.get(key)?
            .as_str()
            .ok_or_else(|| StoreError::json(self.path, self.field(key), "expected a string"))
    }

    /// An array of floats.
    pub fn f32s(&self, key: &str) -> Result<Vec<f32>, StoreError> {
        let arr = self
            .get(key)?
            .as_array()
            .ok_or_else(|| StoreError::json(self.path, self.field(key), "expected an array"))?;
        arr.iter()
            .enumerate()
            .map(|(i, v)| {
                parse_num(v).map(|x| x as f32).ok_or_else(|| {
                    StoreError::json(
                        self.path,
                        format!("{}[{i}]", self.field(key)),
                        "expected a number",
                    )
                })
            })
            .collect()
    }
}

/// A fidelity record: every number, `null` for "n/a".
pub(crate) fn fidelity_to_json(f: &Fidelity) -> Value {
    json!({
        "fidelity": f.fidelity.map(num32),
        "hit_at_3": f.hit_at_3.map(num32),
        "chance_at_3": f.chance_at_3.map(num32),
        "global_fidelity": f.global_fidelity.map(num32),
        "queries": f.queries,
        "rho_queries": f.rho_queries,
    })
}

/// An optional fidelity record at `key` of `o` (absent or `null` in files written before it existed).
fn fidelity_from_json(o: &Obj<'_>, key: &str) -> Result<Option<Fidelity>, StoreError> {
    match o.map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => {
            let f = o.obj(key)?;
            let opt = |k: &str| -> Result<Option<f32>, StoreError> {
                match f.map.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(_) => f.f32(k).map(Some),
                }
            };
            let count = |k: &str| -> Result<u32, StoreError> {
                u32::try_from(f.u64(k)?)
                    .map_err(|_| StoreError::json(f.path, f.field(k), "does not fit in u32"))
            };
            Ok(Some(Fidelity {
                fidelity: opt("fidelity")?,
                hit_at_3: opt("hit_at_3")?,
                chance_at_3: opt("chance_at_3")?,
                global_fidelity: opt("global_fidelity")?,
                queries: count("queries")?,
                rho_queries: count("rho_queries")?,
            }))
        }
    }
}

/// `{"layer": l, "head": h}`.
pub(crate) fn head_to_json(head: HeadId) -> Value {
    json!({"layer": head.layer, "head": head.head})
}

/// Reads a head id written by [`head_to_json`].
pub(crate) fn head_from_json(path: &Path, name: &str, v: &Value) -> Result<HeadId, StoreError> {
    let o = Obj::new(path, name, v)?;
    let small = |key: &str| -> Result<u16, StoreError> {
        u16::try_from(o.u64(key)?)
            .map_err(|_| StoreError::json(path, format!("{name}.{key}"), "does not fit in u16"))
    };
    Ok(HeadId::new(small("layer")?, small("head")?))
}

/// The normalization record: `{"params": {...}, "diagnostics": {...}}`.
pub(crate) fn normalization_to_json(p: &NormalizationParams, d: &HeadDiagnostics) -> Value {
    let f = num32;
    json!({
        "params": {
            "key_translation": p.key_translation.iter().map(|&x| f(x)).collect::<Vec<_>>(),
            "scale": f(p.scale),
        },
        "diagnostics": {
            "spearman_cosine_before": f(d.spearman_cosine_before),
            "spearman_cosine_after": f(d.spearman_cosine_after),
            "spearman_euclidean_before": f(d.spearman_euclidean_before),
            "spearman_euclidean_after": f(d.spearman_euclidean_after),
            "weighted_corr_before": f(d.weighted_corr_before),
            "weighted_corr_after": f(d.weighted_corr_after),
            "norm_gap": f(d.norm_gap),
            "pairs": d.pairs,
            "fidelity_raw": d.fidelity_raw.as_ref().map(fidelity_to_json),
            "fidelity_normalized": d.fidelity_normalized.as_ref().map(fidelity_to_json),
        }
    })
}

/// Reads a record written by [`normalization_to_json`].
pub(crate) fn normalization_from_json(
    path: &Path,
    name: &str,
    v: &Value,
) -> Result<(NormalizationParams, HeadDiagnostics), StoreError> {
    let o = Obj::new(path, name, v)?;
    let p = o.obj("params")?;
    let d = o.obj("diagnostics")?;
    Ok((
        NormalizationParams {
            key_translation: p.f32s("key_translation")?,
            scale: p.f32("scale")?,
        },
        HeadDiagnostics {
            spearman_cosine_before: d.f32("spearman_cosine_before")?,
            spearman_cosine_after: d.f32("spearman_cosine_after")?,
            spearman_euclidean_before: d.f32("spearman_euclidean_before")?,
            spearman_euclidean_after: d.f32("spearman_euclidean_after")?,
            weighted_corr_before: d.f32("weighted_corr_before")?,
            weighted_corr_after: d.f32("weighted_corr_after")?,
            norm_gap: d.f32("norm_gap")?,
            pairs: d.u64("pairs")?,
            fidelity_raw: fidelity_from_json(&d, "fidelity_raw")?,
            fidelity_normalized: fidelity_from_json(&d, "fidelity_normalized")?,
        },
    ))
}

/// The projection record: `{"head", "spec", "objective", "quality", "fidelity", "ceiling"}`.
pub(crate) fn projection_to_json(
    head: HeadId,
    spec: &ProjectionSpec,
    objective: Option<f32>,
    quality: Option<&ProjectionQuality>,
    fidelity: Option<&Fidelity>,
    ceiling: Option<&Fidelity>,
) -> Value {
    let f = num32;
    let params: Map<String, Value> = spec
        .params
        .iter()
        .map(|(k, &v)| (k.clone(), num(v)))
        .collect();
    json!({
        "head": head_to_json(head),
        "spec": {
            "method": spec.method.as_str(),
            "dims": spec.dims,
            "metric": serde_json::to_value(spec.metric).unwrap_or(Value::Null),
            "seed": spec.seed,
            "params": params,
        },
        "objective": objective.map(f),
        "quality": quality.map(|q| json!({
            "trustworthiness": f(q.trustworthiness),
            "continuity": f(q.continuity),
            "knn_recall": f(q.knn_recall),
            "k": q.k,
        })),
        "fidelity": fidelity.map(fidelity_to_json),
        "ceiling": ceiling.map(fidelity_to_json),
    })
}

/// What [`projection_from_json`] returns.
pub(crate) struct ProjectionRecord {
    pub head: HeadId,
    pub spec: ProjectionSpec,
    pub objective: Option<f32>,
    pub quality: Option<ProjectionQuality>,
    pub fidelity: Option<Fidelity>,
    pub ceiling: Option<Fidelity>,
}

/// Reads a record written by [`projection_to_json`].
pub(crate) fn projection_from_json(
    path: &Path,
    name: &str,
    v: &Value,
) -> Result<ProjectionRecord, StoreError> {
    let o = Obj::new(path, name, v)?;
    let head = head_from_json(path, &format!("{name}.head"), o.get("head")?)?;
    let s = o.obj("spec")?;
    let dims = u8::try_from(s.u64("dims")?)
        .map_err(|_| StoreError::json(path, format!("{name}.spec.dims"), "does not fit in u8"))?;
    let pobj = s.obj("params")?;
    let mut params = std::collections::BTreeMap::new();
    for key in pobj.map.keys() {
        params.insert(key.clone(), pobj.f64(key)?);
    }
    let spec = ProjectionSpec {
        method: s
            .str("method")?
            .parse()
            .map_err(|e: attn_types::TypesError| {
                StoreError::json(path, format!("{name}.spec.method"), e.to_string())
            })?,
        dims,
        metric: serde_json::from_value::<Metric>(s.get("metric")?.clone())
            .map_err(|e| StoreError::json(path, format!("{name}.spec.metric"), e.to_string()))?,
        seed: s.u64("seed")?,
        params,
    };
    let objective = match o.map.get("objective") {
        None | Some(Value::Null) => None,
        Some(_) => Some(o.f32("objective")?),
    };
    let quality = match o.map.get("quality") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let q = o.obj("quality")?;
            Some(ProjectionQuality {
                trustworthiness: q.f32("trustworthiness")?,
                continuity: q.f32("continuity")?,
                knn_recall: q.f32("knn_recall")?,
                k: u32::try_from(q.u64("k")?).map_err(|_| {
                    StoreError::json(path, format!("{name}.quality.k"), "does not fit in u32")
                })?,
            })
        }
    };
    Ok(ProjectionRecord {
        head,
        spec,
        objective,
        quality,
        fidelity: fidelity_from_json(&o, "fidelity")?,
        ceiling: fidelity_from_json(&o, "ceiling")?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Through JSON text and back, as the readers do.
    fn round_trip(x: f32) -> f32 {
        let text = num32(x).to_string();
        let v: Value = serde_json::from_str(&text).unwrap();
        parse_num(&v).unwrap() as f32
    }

    #[test]
    fn f32_survives_json_bit_exact_across_the_range() {
        // A stride through every bit pattern: normals, subnormals, both signs, the extremes.
        let mut checked = 0;
        for bits in (0..=u32::MAX)
            .step_by(4099)
            .chain([1, 0x007f_ffff, 0x7f7f_ffff, 0x8000_0000])
        {
            let x = f32::from_bits(bits);
            let back = round_trip(x);
            if x.is_nan() {
                assert!(back.is_nan());
            } else {
                assert_eq!(back.to_bits(), x.to_bits(), "{x:e}");
            }
            checked += 1;
        }
        assert!(checked > 1_000_000);
        assert_eq!(num32(0.1).to_string(), "0.1");
        assert_eq!(num32(f32::NEG_INFINITY).to_string(), "\"-Infinity\"");
    }
}
