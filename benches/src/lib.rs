//! Benchmarks and peer comparisons of attnviz: seeded synthetic data sets shaped like a head's joint
//! query+key set (thousands of points in 64 dims), and a minimal `.npy` reader/writer to exchange
//! them with the Python peers.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use attn_types::Matrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Ambient dimension of every generated data set (a typical head dimension).
pub const DIM: usize = 64;

/// Which synthetic data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// 10 Gaussian clusters, each a random 8-16-dimensional linear subspace embedded in 64 dims plus
    /// isotropic noise: well separated groups, like the query/key clusters of many heads.
    Mixture,
    /// A swiss roll (a 2D sheet rolled in 3D) mapped linearly into 64 dims plus noise: a curved
    /// continuous structure whose neighbourhoods a projection must unroll.
    Manifold,
}

impl DatasetKind {
    /// Short name used in file names and tables.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mixture => "mixture",
            DatasetKind::Manifold => "manifold",
        }
    }

    /// Parses `mixture` or `manifold`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mixture" => Some(DatasetKind::Mixture),
            "manifold" => Some(DatasetKind::Manifold),
            _ => None,
        }
    }

    /// The metric the data set is projected and scored with: cosine for the mixture (the paper's
    /// choice for queries and keys), Euclidean for the roll (cosine would fold points on one ray).
    pub fn metric(self) -> attn_types::Metric {
        match self {
            DatasetKind::Mixture => attn_types::Metric::Cosine,
            DatasetKind::Manifold => attn_types::Metric::Euclidean,
        }
    }

    /// Generates `n` points in [`DIM`] dims with their ground-truth labels (cluster id, or the roll's
    /// angle bucket 0..10).
    pub fn generate(self, n: usize, seed: u64) -> (Matrix, Vec<u32>) {
        match self {
            DatasetKind::Mixture => gaussian_mixture(n, DIM, 10, seed),
            DatasetKind::Manifold => swiss_roll(n, DIM, seed),
        }
    }
}

fn std_normal() -> Normal<f32> {
    // Mean 0 and deviation 1 are always valid parameters.
    Normal::new(0.0, 1.0).unwrap_or_else(|_| unreachable!())
}

/// `clusters` Gaussian clusters in `dim` dims: cluster `c` is `centre_c + A_c z + 0.3 e` with a latent
/// `z` of 8-16 dims, random `A_c` (`dim x latent`, entries N(0, 1/latent)), and noise `e ~ N(0, I)`;
/// centres are N(0, 1.5^2 I). Points are assigned to clusters round-robin. Deterministic in `seed`.
pub fn gaussian_mixture(n: usize, dim: usize, clusters: usize, seed: u64) -> (Matrix, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = std_normal();
    let clusters = clusters.max(1);
    let specs: Vec<(Vec<f32>, usize, Vec<f32>)> = (0..clusters)
        .map(|_| {
            let centre: Vec<f32> = (0..dim).map(|_| 1.5 * normal.sample(&mut rng)).collect();
            let latent = rng.random_range(8..=16usize);
            let scale = 1.0 / (latent as f32).sqrt();
            let a: Vec<f32> = (0..dim * latent)
                .map(|_| scale * normal.sample(&mut rng))
                .collect();
            (centre, latent, a)
        })
        .collect();
    let mut data = Vec::with_capacity(n * dim);
    let mut labels = Vec::with_capacity(n);
    let mut z = Vec::new();
    for i in 0..n {
        let c = i % clusters;
        let (centre, latent, a) = &specs[c];
        z.clear();
        z.extend((0..*latent).map(|_| normal.sample(&mut rng)));
        for r in 0..dim {
            let lin: f32 = a[r * latent..(r + 1) * latent]
                .iter()
                .zip(&z)
                .map(|(w, v)| w * v)
                .sum();
            data.push(centre[r] + lin + 0.3 * normal.sample(&mut rng));
        }
        labels.push(c as u32);
    }
    (matrix(n, dim, data), labels)
}

/// A swiss roll `(t cos t, h, t sin t)` with `t ~ U(1.5 pi, 4.5 pi)`, `h ~ U(0, 20)`, mapped into `dim`
/// dims by a random `dim x 3` matrix (entries N(0, 1/3)) plus N(0, 0.2^2) noise. Labels: the bucket of
/// `t` among 10 equal bins. Deterministic in `seed`.
pub fn swiss_roll(n: usize, dim: usize, seed: u64) -> (Matrix, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = std_normal();
    let scale = 1.0 / 3f32.sqrt();
    let map: Vec<f32> = (0..dim * 3)
        .map(|_| scale * normal.sample(&mut rng))
        .collect();
    let (t0, t1) = (1.5 * std::f32::consts::PI, 4.5 * std::f32::consts::PI);
    let mut data = Vec::with_capacity(n * dim);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let t = rng.random_range(t0..t1);
        let h = rng.random_range(0.0f32..20.0);
        let p = [t * t.cos(), h, t * t.sin()];
        for r in 0..dim {
            let v: f32 = map[r * 3..r * 3 + 3]
                .iter()
                .zip(&p)
                .map(|(w, x)| w * x)
                .sum();
            data.push(v + 0.2 * normal.sample(&mut rng));
        }
        labels.push((((t - t0) / (t1 - t0) * 10.0) as u32).min(9));
    }
    (matrix(n, dim, data), labels)
}

fn matrix(n: usize, dim: usize, data: Vec<f32>) -> Matrix {
    // The generators push exactly n * dim values.
    Matrix::from_vec(n, dim, data).unwrap_or_else(|_| unreachable!())
}

/// Writes `m` as a NumPy `.npy` file (format 1.0, `<f4`, C order).
pub fn write_npy(path: &Path, m: &Matrix) -> io::Result<()> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        m.rows(),
        m.cols()
    );
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut buf = Vec::with_capacity(10 + header.len() + m.as_slice().len() * 4);
    buf.extend_from_slice(b"\x93NUMPY\x01\x00");
    let len = u16::try_from(header.len()).map_err(|_| io::Error::other("npy header too long"))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(header.as_bytes());
    for v in m.as_slice() {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    let mut f = fs::File::create(path)?;
    f.write_all(&buf)
}

/// Reads a 2D (or 1D, as one column) `<f4` or `<f8` C-order `.npy` file into a [`Matrix`] (f64 values
/// are narrowed to f32).
pub fn read_npy(path: &Path) -> io::Result<Matrix> {
    let bad = |msg: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {msg}", path.display()),
        )
    };
    let mut bytes = Vec::new();
    fs::File::open(path)?.read_to_end(&mut bytes)?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy file".into()));
    }
    let (hlen, hstart) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("unsupported npy version {v}"))),
    };
    let header = bytes
        .get(hstart..hstart + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header".into()))?;
    let width = if header.contains("'<f4'") {
        4
    } else if header.contains("'<f8'") {
        8
    } else {
        return Err(bad(format!(
            "only little-endian f32/f64 supported: {header}"
        )));
    };
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran order not supported".into()));
    }
    let shape_str = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(format!("no shape in header: {header}")))?;
    let shape: Vec<usize> = shape_str
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|e| bad(format!("bad shape `{s}`: {e}")))
        })
        .collect::<io::Result<_>>()?;
    let (rows, cols) = match shape.as_slice() {
        [r] => (*r, 1),
        [r, c] => (*r, *c),
        _ => return Err(bad(format!("expected 1 or 2 dims, got {shape:?}"))),
    };
    let body = &bytes[hstart + hlen..];
    if body.len() != rows * cols * width {
        return Err(bad(format!(
            "{} data bytes for shape {rows} x {cols}",
            body.len()
        )));
    }
    let data: Vec<f32> = if width == 4 {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        body.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    };
    Matrix::from_vec(rows, cols, data).map_err(|e| bad(e.to_string()))
}

/// Runs `command` (which runs `script`) to completion and returns the last line it printed on stdout:
/// how the Python helpers report back (a venv's python path, a JSON record). A failure carries the
/// script's stderr.
pub fn last_line_of(
    command: &mut Command,
    script: &Path,
) -> Result<String, Box<dyn std::error::Error>> {
    let out = command.output()?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{} failed: {stderr}", script.display()).into());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last();
    last.map(str::to_string)
        .ok_or_else(|| format!("{} printed nothing", script.display()).into())
}

/// Where and how a benchmark ran: CPU, cores, load, memory, versions and the date, recorded beside
/// every published result.
pub fn machine_record() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let mem_kb = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        });
    let command = |cmd: &str, arg: &str| {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    serde_json::json!({
        "cpu": field("model name"),
        "cpu_family": field("cpu family"),
        "cpu_model": field("model\t"),
        "avx512": cpuinfo.contains("avx512f"),
        "vendor": field("vendor_id"),
        // The instruction sets the matrix products can dispatch on (gemm: AVX2+FMA or AVX-512F;
        // PyTorch's oneDNN/MKL also AVX-512 BF16/VNNI and AMX), as the first CPU lists them.
        "simd_flags": field("flags").map(|flags| {
            flags
                .split_whitespace()
                .filter(|f| {
                    matches!(*f, "avx2" | "fma" | "avx512f" | "avx512bw" | "avx512vl" | "avx512_bf16" | "avx512_vnni" | "avx512_fp16")
                        || f.starts_with("amx")
                })
                .collect::<Vec<_>>()
                .join(" ")
        }),
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_gb": mem_kb.map(|k| (k as f64 / 1_048_576.0 * 10.0).round() / 10.0),
        "load_average_at_start": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "rustc": command("rustc", "--version"),
        "attnviz": env!("CARGO_PKG_VERSION"),
        "git_commit": std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()),
        "date_utc": command("date", "-u").unwrap_or_default(),
    })
}

/// The machine of a [`machine_record`] in one line: CPU, cores, AVX-512, memory, load at the start,
/// rustc, attnviz version and commit, date.
pub fn machine_line(machine: &serde_json::Value) -> String {
    let text = |k: &str| machine[k].as_str().unwrap_or("?").to_string();
    format!(
        "{} ({}), {} cores, SIMD flags: {}, {} GB, load at start {}; {}, attnviz {} at commit {}; {}",
        text("cpu"),
        text("vendor"),
        machine["cores"],
        text("simd_flags"),
        machine["memory_gb"],
        text("load_average_at_start"),
        text("rustc"),
        text("attnviz"),
        text("git_commit"),
        text("date_utc"),
    )
}

/// Writes `DIR/NAME-YYYY-MM-DD.md` and `.json` (the JSON holds `json`, the Markdown `md` under a
/// header naming the machine); returns both paths.
pub fn write_results(
    dir: &Path,
    name: &str,
    md: &str,
    json: &serde_json::Value,
) -> io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "undated".into());
    let md_path = dir.join(format!("{name}-{date}.md"));
    let json_path = dir.join(format!("{name}-{date}.json"));
    let header = format!(
        "# {name} ({date})\n\nCommand: `{}`\n\nMachine: {}.\n",
        json["command"].as_str().unwrap_or(""),
        machine_line(&json["machine"]),
    );
    std::fs::write(&md_path, format!("{header}{md}"))?;
    std::fs::write(&json_path, serde_json::to_string_pretty(json)? + "\n")?;
    Ok((md_path, json_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip() {
        let dir = std::env::temp_dir().join(format!("attnviz-npy-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (m, _) = gaussian_mixture(37, 5, 3, 1);
        let p = dir.join("m.npy");
        write_npy(&p, &m).unwrap();
        let bytes = fs::read(&p).unwrap();
        // Data starts on a 64-byte boundary as the format requires.
        assert_eq!((bytes.len() - 37 * 5 * 4) % 64, 0);
        assert_eq!(read_npy(&p).unwrap(), m);
        fs::write(dir.join("bad.npy"), b"hello").unwrap();
        assert!(read_npy(&dir.join("bad.npy")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn generators_are_seeded_and_shaped() {
        for kind in [DatasetKind::Mixture, DatasetKind::Manifold] {
            let (a, la) = kind.generate(500, 3);
            let (b, _) = kind.generate(500, 3);
            let (c, _) = kind.generate(500, 4);
            assert_eq!(a.shape(), (500, DIM));
            assert_eq!(la.len(), 500);
            assert_eq!(a, b);
            assert_ne!(a, c);
            assert!(a.as_slice().iter().all(|v| v.is_finite()));
            assert!(la.iter().all(|&l| l < 10));
        }
    }
}
