//! Image preprocessing for ViT and the paper's synthetic test images.

use std::f32::consts::PI;
use std::path::Path;

use image::{Rgb, RgbImage, imageops};
use serde_json::Value;

use crate::error::{ExtractError, Result};

/// Resize + rescale + normalize, per `preprocessor_config.json` (or the ViT defaults).
#[derive(Debug, Clone)]
pub(crate) struct ImagePrep {
    pub size: u32,
    pub rescale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl ImagePrep {
    /// Reads `dir/preprocessor_config.json` if present; otherwise resizes to the model's
    /// `image_size` and normalizes with mean = std = 0.5 (the ViT defaults).
    pub fn from_dir(dir: &Path, model_image_size: u32) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        let mut prep = Self {
            size: model_image_size,
            rescale: 1.0 / 255.0,
            mean: [0.5; 3],
            std: [0.5; 3],
        };
        if !path.is_file() {
            return Ok(prep);
        }
        let json = crate::hf::read_json(&path, "image preprocessing")?;
        let invalid = |message: String| ExtractError::InvalidConfig {
            path: path.clone(),
            message,
        };
        if json.get("do_resize").and_then(Value::as_bool) != Some(false) {
            let size = match json.get("size") {
                Some(Value::Number(n)) => n.as_u64(),
                Some(Value::Object(m)) => m
                    .get("height")
                    .or_else(|| m.get("shortest_edge"))
                    .and_then(Value::as_u64),
                _ => Some(u64::from(model_image_size)),
            };
            let size = size.ok_or_else(|| invalid("cannot read `size`".into()))?;
            prep.size =
                u32::try_from(size).map_err(|_| invalid(format!("size {size} too large")))?;
        }
        if prep.size != model_image_size {
            return Err(invalid(format!(
                "resizes to {} px but the model's image_size is {model_image_size}",
                prep.size
            )));
        }
        if json.get("do_rescale").and_then(Value::as_bool) == Some(false) {
            prep.rescale = 1.0;
        } else if let Some(r) = json.get("rescale_factor").and_then(Value::as_f64) {
            prep.rescale = r as f32;
        }
        if json.get("do_normalize").and_then(Value::as_bool) == Some(false) {
            prep.mean = [0.0; 3];
            prep.std = [1.0; 3];
        } else {
            let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
                match json.get(key) {
                    None => Ok(default),
                    Some(Value::Array(a)) if a.len() == 3 => {
                        let mut out = [0.0f32; 3];
                        for (o, v) in out.iter_mut().zip(a) {
                            *o = v
                                .as_f64()
                                .ok_or_else(|| invalid(format!("`{key}` holds a non-number")))?
                                as f32;
                        }
                        Ok(out)
                    }
                    Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(0.5) as f32; 3]),
                    Some(other) => Err(invalid(format!("`{key}` is not a 3-vector: {other}"))),
                }
            };
            prep.mean = triple("image_mean", prep.mean)?;
            prep.std = triple("image_std", prep.std)?;
        }
        Ok(prep)
    }

    /// The `[3, size, size]` (CHW) normalized pixels of `img`, appended to `out`.
    pub fn pixels_into(&self, img: &RgbImage, out: &mut Vec<f32>) {
        let resized;
        let img = if img.width() == self.size && img.height() == self.size {
            img
        } else {
            // Bilinear like ViTImageProcessor's default (PIL's BILINEAR).
            resized = imageops::resize(img, self.size, self.size, imageops::FilterType::Triangle);
            &resized
        };
        for c in 0..3 {
            out.extend(
                img.pixels()
                    .map(|p| (f32::from(p.0[c]) * self.rescale - self.mean[c]) / self.std[c]),
            );
        }
    }
}

/// Deterministic synthetic test images like the paper's: hue gradients, brightness gradients and
/// sinusoidal gratings of several frequencies and angles, cycling through the kinds.
pub fn synthetic_images(n: usize, size: u32) -> Vec<RgbImage> {
    let s = size.max(1) as f32;
    (0..n)
        .map(|i| {
            let kind = i % 3;
            let variant = i / 3;
            // Angles step by 45 degrees, frequencies double: 2, 4, 8, 16 cycles per image.
            let angle = (variant % 4) as f32 * PI / 4.0;
            let freq = (2u32 << ((variant / 4) % 4)) as f32;
            let (ca, sa) = (angle.cos(), angle.sin());
            RgbImage::from_fn(size, size, |x, y| {
                let (u, v) = (x as f32 / s, y as f32 / s);
                // Position along the gradient/grating direction, in [0, 1].
                let t = ((u - 0.5) * ca + (v - 0.5) * sa) / std::f32::consts::SQRT_2 + 0.5;
                match kind {
                    // Later rounds shift the hue / bend the ramp so that no two images repeat.
                    0 => hue_to_rgb((t.clamp(0.0, 1.0) + 0.13 * (variant / 4) as f32).fract()),
                    1 => {
                        let g = (255.0 * t.clamp(0.0, 1.0).powf(1.0 + 0.5 * (variant / 4) as f32))
                            as u8;
                        Rgb([g, g, g])
                    }
                    _ => {
                        let w = 0.5 + 0.5 * (2.0 * PI * freq * t).sin();
                        let g = (255.0 * w) as u8;
                        Rgb([g, g, g])
                    }
                }
            })
        })
        .collect()
}

/// Fully saturated colour of hue `h` in `[0, 1]`.
fn hue_to_rgb(h: f32) -> Rgb<u8> {
    let h6 = h * 6.0;
    let x = 1.0 - ((h6 % 2.0) - 1.0).abs();
    let (r, g, b) = match h6 as u32 {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    Rgb([(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_images_are_deterministic_and_varied() {
        let a = synthetic_images(12, 32);
        let b = synthetic_images(12, 32);
        assert_eq!(a, b);
        assert_eq!(a.len(), 12);
        assert!(a.iter().all(|i| i.dimensions() == (32, 32)));
        // Kinds differ: a hue gradient has colour, a brightness gradient is grey.
        let coloured = |img: &RgbImage| img.pixels().any(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]);
        assert!(coloured(&a[0]));
        assert!(!coloured(&a[1]));
        // Every image is distinct.
        for i in 0..a.len() {
            for j in i + 1..a.len() {
                assert_ne!(a[i], a[j], "images {i} and {j} are identical");
            }
        }
    }

    #[test]
    fn normalization_without_config_is_half_half() {
        let prep = ImagePrep::from_dir(Path::new("/nonexistent"), 2).expect("defaults");
        let img = RgbImage::from_pixel(2, 2, Rgb([255, 0, 255]));
        let mut px = Vec::new();
        prep.pixels_into(&img, &mut px);
        assert_eq!(px.len(), 12);
        assert!((px[0] - 1.0).abs() < 1e-6);
        assert!((px[4] + 1.0).abs() < 1e-6);
    }
}
