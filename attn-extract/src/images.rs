//! Image preprocessing for ViT and the paper's synthetic test images.

use std::f32::consts::PI;
use std::path::Path;

use image::{Rgb, RgbImage};
use serde_json::Value;

use crate::error::{ExtractError, Result};

/// Resize + centre crop + rescale + normalize, per `preprocessor_config.json` (or the ViT
/// defaults), in the order and arithmetic of transformers' PIL image processors.
#[derive(Debug, Clone)]
pub(crate) struct ImagePrep {
    /// Side of the square the model takes (after the crop, when there is one).
    pub size: u32,
    pub resize: ResizeTo,
    /// `(height, width)` of the centre crop (`do_center_crop`).
    pub crop: Option<(u32, u32)>,
    pub resample: Resample,
    pub rescale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// The size `size` in `preprocessor_config.json` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResizeTo {
    /// `{"height", "width"}` (or a plain number: a square).
    Exact { width: u32, height: u32 },
    /// `{"shortest_edge"}`: the shorter side to this, the aspect ratio kept (as transformers'
    /// `get_resize_output_image_size`, the longer side truncated).
    ShortestEdge(u32),
}

impl ResizeTo {
    /// `(width, height)` an image of `width x height` is resized to.
    fn of(self, width: u32, height: u32) -> (u32, u32) {
        match self {
            ResizeTo::Exact { width, height } => (width, height),
            ResizeTo::ShortestEdge(s) => {
                let long_side = |long: u32, short: u32| {
                    (f64::from(s) * f64::from(long) / f64::from(short)) as u32
                };
                if width <= height {
                    (s, long_side(height, width))
                } else {
                    (long_side(width, height), s)
                }
            }
        }
    }
}

/// PIL's resampling filters, by the codes of `preprocessor_config.json`'s `resample` (which
/// transformers' image processors pass to `PIL.Image.resize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resample {
    Nearest,
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Resample {
    /// The filter of PIL code `code` (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming).
    pub fn from_pil_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => Resample::Nearest,
            1 => Resample::Lanczos,
            2 => Resample::Bilinear,
            3 => Resample::Bicubic,
            4 => Resample::Box,
            5 => Resample::Hamming,
            _ => return None,
        })
    }

    /// PIL's filter support (radius at scale 1) and kernel; `None` for nearest, which is no
    /// convolution.
    fn kernel(self) -> Option<(f64, Kernel)> {
        fn sinc(x: f64) -> f64 {
            if x == 0.0 {
                1.0
            } else {
                let x = x * std::f64::consts::PI;
                x.sin() / x
            }
        }
        Some(match self {
            Resample::Nearest => return None,
            Resample::Box => (0.5, |x| if x > -0.5 && x <= 0.5 { 1.0 } else { 0.0 }),
            Resample::Bilinear => (1.0, |x: f64| (1.0 - x.abs()).max(0.0)),
            Resample::Hamming => (1.0, |x: f64| {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // PIL writes the constants as C floats (`0.54f`).
                    x.sin() / x * (f64::from(0.54f32) + f64::from(0.46f32) * x.cos())
                }
            }),
            Resample::Bicubic => (2.0, |x: f64| {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }),
            Resample::Lanczos => (3.0, |x| {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }),
        })
    }
}

/// A resampling filter's weight at a distance (in source pixels at scale 1).
type Kernel = fn(f64) -> f64;

/// Fixed-point bits of PIL's 8-bit resampling coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One output pixel's source window along an axis: first source index and integer weights.
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

/// PIL's `precompute_coeffs` + `normalize_coeffs_8bpc` for resizing `in_size` to `out_size`.
fn taps(in_size: usize, out_size: usize, support: f64, filter: Kernel) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = support * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // PIL truncates toward zero after adding 0.5 (`(int)`), then clamps.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            // PIL multiplies by the reciprocal (`ss = 1.0 / filterscale`).
            let ss = 1.0 / filter_scale;
            let raw: Vec<f64> = (lo..hi)
                .map(|x| filter((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let fixed = w * f64::from(1u32 << PRECISION_BITS);
                    (if w < 0.0 { fixed - 0.5 } else { fixed + 0.5 }) as i32
                })
                .collect();
            Taps { first: lo, weights }
        })
        .collect()
}

/// One convolution along an axis, rounding and clipping to 8 bits as PIL does between passes.
fn convolve(values: impl Iterator<Item = u8>, weights: &[i32]) -> u8 {
    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
    for (v, &w) in values.zip(weights) {
        acc += i64::from(v) * i64::from(w);
    }
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `PIL.Image.resize((width, height), resample=filter)` of an RGB image, bit for bit (Pillow
/// 13.0.0): PIL's 8-bit fixed-point two-pass convolution, or its nearest-neighbour sampling.
pub(crate) fn pil_resize(img: &RgbImage, width: u32, height: u32, filter: Resample) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (width as usize, height as usize);
    let Some((support, kernel)) = filter.kernel() else {
        // PIL's `ImagingScaleAffine`: source index `(int)` of a coordinate that starts at
        // `scale / 2` and grows by `scale` per output pixel (accumulated, as PIL does).
        let table = |out: usize, n: usize| -> Vec<u32> {
            let scale = n as f64 / out as f64;
            let mut at = scale * 0.5;
            (0..out)
                .map(|_| {
                    let i = (at as usize).min(n - 1) as u32;
                    at += scale;
                    i
                })
                .collect()
        };
        let (xs, ys) = (table(ow, w), table(oh, h));
        return RgbImage::from_fn(width, height, |x, y| {
            *img.get_pixel(xs[x as usize], ys[y as usize])
        });
    };
    // One pass per axis that changes, each rounding to 8 bits. Pillow 13 runs the vertical pass
    // first when the height shrinks and `2 (W - w) > H - h` (measured: every one of 222 random
    // size pairs over three filters where the two orders differ, and these fixtures); otherwise
    // the horizontal pass first.
    let horizontal = |src: &[u8], rows: usize| -> Vec<u8> {
        let taps = taps(w, ow, support, kernel);
        let mut out = Vec::with_capacity(rows * ow * 3);
        for y in 0..rows {
            let row = &src[y * w * 3..(y + 1) * w * 3];
            for t in &taps {
                for c in 0..3 {
                    let values = (t.first..t.first + t.weights.len()).map(|x| row[x * 3 + c]);
                    out.push(convolve(values, &t.weights));
                }
            }
        }
        out
    };
    let vertical = |src: &[u8], cols: usize| -> Vec<u8> {
        let taps = taps(h, oh, support, kernel);
        let mut out = Vec::with_capacity(oh * cols * 3);
        for t in &taps {
            for x in 0..cols {
                for c in 0..3 {
                    let values =
                        (t.first..t.first + t.weights.len()).map(|y| src[(y * cols + x) * 3 + c]);
                    out.push(convolve(values, &t.weights));
                }
            }
        }
        out
    };
    let raw = img.as_raw();
    let vertical_first = oh < h && 2 * (ow as i64 - w as i64) > oh as i64 - h as i64;
    let rows = match (ow != w, oh != h) {
        (true, true) if vertical_first => horizontal(&vertical(raw, w), oh),
        (true, true) => vertical(&horizontal(raw, h), ow),
        (true, false) => horizontal(raw, h),
        (false, true) => vertical(raw, w),
        (false, false) => raw.clone(),
    };
    RgbImage::from_raw(width, height, rows).unwrap_or_else(|| RgbImage::new(width, height))
}

impl ImagePrep {
    /// Reads `dir/preprocessor_config.json` if present; otherwise resizes to the model's
    /// `image_size` and normalizes with mean = std = 0.5 (the ViT defaults).
    pub fn from_dir(dir: &Path, model_image_size: u32) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        let mut prep = Self {
            size: model_image_size,
            resize: ResizeTo::Exact {
                width: model_image_size,
                height: model_image_size,
            },
            crop: None,
            // ViTImageProcessor's default.
            resample: Resample::Bilinear,
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
        let side = |v: Option<&Value>, key: &str| -> Result<u32> {
            v.and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| invalid(format!("`{key}` is not a positive size")))
        };
        // (height, width) of a `size` or `crop_size` value.
        let height_width = |v: &Value, key: &str| -> Result<(u32, u32)> {
            match v {
                Value::Number(_) => side(Some(v), key).map(|n| (n, n)),
                _ => Ok((
                    side(v.get("height"), &format!("{key}.height"))?,
                    side(v.get("width"), &format!("{key}.width"))?,
                )),
            }
        };
        if json.get("do_resize").and_then(Value::as_bool) == Some(false) {
            // transformers would feed (or centre-crop, padding) images at their own size; images of
            // any size need resizing to the model's square.
            return Err(invalid(
                "`do_resize` false is not supported: images are resized to the model's input"
                    .into(),
            ));
        }
        prep.resize = match json.get("size") {
            None => prep.resize,
            Some(v) if v.get("shortest_edge").is_some() => {
                if v.get("longest_edge").is_some() {
                    return Err(invalid(
                        "`size.longest_edge` is not supported (only `shortest_edge` alone)".into(),
                    ));
                }
                ResizeTo::ShortestEdge(side(v.get("shortest_edge"), "size.shortest_edge")?)
            }
            Some(v) => {
                let (height, width) = height_width(v, "size")?;
                ResizeTo::Exact { width, height }
            }
        };
        if json.get("do_center_crop").and_then(Value::as_bool) == Some(true) {
            let crop = json.get("crop_size").ok_or_else(|| {
                invalid("`do_center_crop` is set but `crop_size` is missing".into())
            })?;
            prep.crop = Some(height_width(crop, "crop_size")?);
        }
        // The model's input: the crop, or the resize when there is no crop.
        let (out_h, out_w) = match (prep.crop, prep.resize) {
            (Some(crop), _) => crop,
            (None, ResizeTo::Exact { width, height }) => (height, width),
            (None, ResizeTo::ShortestEdge(_)) => {
                return Err(invalid(
                    "`size.shortest_edge` without `do_center_crop` gives inputs of each image's \
                     aspect ratio; the model takes squares"
                        .into(),
                ));
            }
        };
        if (out_h, out_w) != (model_image_size, model_image_size) {
            return Err(invalid(format!(
                "gives {out_w} x {out_h} px inputs but the model's image_size is {model_image_size}"
            )));
        }
        let too_small = match prep.resize {
            ResizeTo::Exact { width, height } => width < out_w || height < out_h,
            ResizeTo::ShortestEdge(s) => s < out_w.max(out_h),
        };
        if prep.crop.is_some() && too_small {
            return Err(invalid(
                "`size` is smaller than `crop_size` (transformers would pad; not supported)".into(),
            ));
        }
        if let Some(code) = json.get("resample") {
            prep.resample = code
                .as_u64()
                .and_then(Resample::from_pil_code)
                .ok_or_else(|| {
                    invalid(format!(
                        "`resample` {code} is not a PIL filter code (0 nearest, 1 lanczos, \
                         2 bilinear, 3 bicubic, 4 box, 5 hamming)"
                    ))
                })?;
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
            if let Some(v) = prep.std.iter().find(|s| !(s.is_finite() && **s != 0.0)) {
                return Err(invalid(format!(
                    "`image_std` holds {v}: pixels are divided by it"
                )));
            }
            if let Some(v) = prep.mean.iter().find(|m| !m.is_finite()) {
                return Err(invalid(format!("`image_mean` holds {v}")));
            }
        }
        Ok(prep)
    }

    /// The image the model sees, before rescaling: `img` resized and centre-cropped as
    /// transformers' processors do (`size x size`). An image without pixels gives a black one.
    pub fn input_image(&self, img: &RgbImage) -> RgbImage {
        if img.width() == 0 || img.height() == 0 {
            return RgbImage::new(self.size, self.size);
        }
        let (w, h) = self.resize.of(img.width(), img.height());
        let resized = if (w, h) == img.dimensions() {
            img.clone()
        } else {
            // As transformers' processors resize: PIL, with the configured filter.
            pil_resize(img, w, h, self.resample)
        };
        match self.crop {
            // transformers' `center_crop`: offsets `(side - crop) // 2`.
            Some((crop_h, crop_w)) if (crop_w, crop_h) != (w, h) => image::imageops::crop_imm(
                &resized,
                (w - crop_w) / 2,
                (h - crop_h) / 2,
                crop_w,
                crop_h,
            )
            .to_image(),
            _ => resized,
        }
    }

    /// The `[3, size, size]` (CHW) normalized pixels of `img`, appended to `out`.
    pub fn pixels_into(&self, img: &RgbImage, out: &mut Vec<f32>) {
        let input = self.input_image(img);
        for c in 0..3 {
            out.extend(
                input
                    .pixels()
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

    /// `attn-extract/tests/fixtures/resize/` (from `scripts/make_fixtures.py --only resize`).
    fn resize_fixture() -> (std::path::PathBuf, serde_json::Value) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resize");
        let inputs = std::fs::read_to_string(dir.join("inputs.json")).expect("inputs.json");
        (
            dir,
            serde_json::from_str(&inputs).expect("inputs.json parses"),
        )
    }

    fn fixture_image(dir: &Path, name: &str) -> RgbImage {
        image::open(dir.join("inputs").join(format!("{name}.png")))
            .expect("fixture image")
            .to_rgb8()
    }

    fn safetensors(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn resizing_equals_pil_for_every_filter() {
        let (dir, inputs) = resize_fixture();
        let bytes = safetensors(&dir.join("pil.safetensors"));
        let expected = safetensors::SafeTensors::deserialize(&bytes).expect("pil.safetensors");
        let mut compared = 0;
        for (name, _) in inputs["images"].as_object().expect("images") {
            let img = fixture_image(&dir, name);
            for (filter, code) in inputs["filters"].as_object().expect("filters") {
                let resample =
                    Resample::from_pil_code(code.as_u64().expect("code")).expect("filter");
                for target in inputs["targets"].as_array().expect("targets") {
                    let (w, h) = (
                        target[0].as_u64().unwrap() as u32,
                        target[1].as_u64().unwrap() as u32,
                    );
                    let key = format!("{name}.{filter}.{w}x{h}");
                    let want = expected.tensor(&key).expect("reference tensor");
                    let got = pil_resize(&img, w, h, resample);
                    // Exact: PIL's integer arithmetic, reproduced.
                    let differing = got
                        .as_raw()
                        .iter()
                        .zip(want.data())
                        .filter(|(a, b)| a != b)
                        .count();
                    assert_eq!(
                        (got.as_raw().len(), differing),
                        (want.data().len(), 0),
                        "{key}: values differing from PIL's"
                    );
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 4 * 6 * 2);
    }

    #[test]
    fn preprocessing_equals_the_transformers_image_processor() {
        // vit16_tiny's preprocessor_config.json (48 x 48, bilinear, ImageNet mean and std), DeiT's
        // way (56 x 56 + centre crop, bicubic) and CLIP's (shortest edge 48 + centre crop).
        let (dir, inputs) = resize_fixture();
        let bytes = safetensors(&dir.join("processor.safetensors"));
        let expected =
            safetensors::SafeTensors::deserialize(&bytes).expect("processor.safetensors");
        let mut worst = 0f32;
        let mut compared = 0;
        for config in inputs["processors"].as_array().expect("processors") {
            let config = config.as_str().expect("name");
            let prep = ImagePrep::from_dir(&dir.join("processors").join(config), 48)
                .unwrap_or_else(|e| panic!("{config}: {e}"));
            for (name, _) in inputs["images"].as_object().expect("images") {
                let mut got = Vec::new();
                prep.pixels_into(&fixture_image(&dir, name), &mut got);
                let key = format!("{config}.{name}");
                let want: Vec<f32> = expected
                    .tensor(&key)
                    .expect("reference tensor")
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                assert_eq!(got.len(), want.len(), "{key}");
                for (a, b) in got.iter().zip(&want) {
                    let e = (a - b).abs();
                    // About 5x the worst measured (7.2e-7: f32 rounding of the normalization; a
                    // pixel one level off would be 1.7e-2). NaN fails: it is not below the bound.
                    assert!(e < 4e-6, "{key}: {a} vs transformers' {b}");
                    worst = worst.max(e);
                }
                compared += 1;
            }
        }
        assert_eq!(compared, 3 * 4);
        eprintln!("preprocessing vs transformers: max abs error {worst:e}");
    }

    #[test]
    fn crop_and_shortest_edge_configs_are_checked_against_the_model_size() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        let refused = |config: &str, needle: &str| {
            std::fs::write(dir.join("preprocessor_config.json"), config).expect("config");
            let err = ImagePrep::from_dir(dir, 48).expect_err(config).to_string();
            assert!(err.contains(needle), "{config}: {err}");
        };
        refused(r#"{"size": {"shortest_edge": 48}}"#, "do_center_crop");
        refused(
            r#"{"size": {"height": 40, "width": 40}, "do_center_crop": true, "crop_size": 48}"#,
            "smaller",
        );
        refused(r#"{"size": 56, "do_center_crop": true}"#, "crop_size");
        refused(
            r#"{"size": 56, "do_center_crop": true, "crop_size": 32}"#,
            "image_size is 48",
        );
        refused(
            r#"{"size": {"shortest_edge": 48, "longest_edge": 64}}"#,
            "longest_edge",
        );
        refused(
            r#"{"do_resize": false, "do_center_crop": true, "crop_size": 48}"#,
            "do_resize",
        );
        refused(r#"{"size": 48, "image_std": [0.5, 0, 0.5]}"#, "image_std");
    }

    #[test]
    fn an_unknown_resample_code_is_refused_naming_the_key() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        std::fs::write(
            dir.join("preprocessor_config.json"),
            r#"{"size": {"height": 8, "width": 8}, "resample": 7}"#,
        )
        .expect("config");
        let err = ImagePrep::from_dir(dir, 8).expect_err("code 7").to_string();
        assert!(
            err.contains("resample") && err.contains("preprocessor_config.json"),
            "{err}"
        );
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
