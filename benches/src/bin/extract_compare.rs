//! Extraction throughput: attn-extract against PyTorch + transformers (eager) on the same inputs, in
//! one run. Both sides do the same work: every layer's per-head Q and K and attention probabilities,
//! copied to host memory, sequences batched by similar length, for a BERT-family (e.g.
//! all-MiniLM-L6-v2) or GPT-2 model on generated sentences, or for a ViT on the paper's synthetic
//! images (written afresh to `DIR/images/` as PNGs, which the PyTorch side reads). The two stacks
//! take turns (`--rounds`), each timing `--repeats` runs, so that both see the same machine load; the
//! ratio is taken of the per-round medians.
//!
//! ```text
//! cargo run -p attnviz-benches --bin extract_compare -- --model <all-MiniLM-L6-v2 dir>
//! ```
//!
//! Options: `--model DIR` (or `$ATTNVIZ_MINILM_DIR`; `attnviz fetch-model --print-dir` prints the
//! cached one), `--sentences 300` (images for a ViT), `--batch 16`, `--repeats 5`, `--rounds 2`,
//! `--threads 2`, `--device flex`, `--python PATH` (default: the dev venv made by
//! `scripts/devvenv.sh`, torch + transformers from PyPI), `--skip-python`, `--truncate` (cut
//! sentences longer than the model's positions, on both sides), `--out DIR` (default
//! target/extract-compare). Writes `DIR/results.md` and `DIR/results.json`.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use attn_extract::{
    Corpus, Device, ExtractOptions, LoadedModel, device_from_name, synthetic_images,
};
use attnviz_benches::last_line_of;

type Res<T> = Result<T, Box<dyn Error>>;

struct Args {
    model: Option<PathBuf>,
    sentences: usize,
    batch: usize,
    repeats: usize,
    rounds: usize,
    threads: usize,
    device: String,
    python: Option<String>,
    skip_python: bool,
    truncate: bool,
    out: PathBuf,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        model: std::env::var_os("ATTNVIZ_MINILM_DIR").map(PathBuf::from),
        sentences: 300,
        batch: 16,
        repeats: 5,
        rounds: 2,
        threads: 2,
        device: "flex".into(),
        python: None,
        skip_python: false,
        truncate: false,
        out: PathBuf::from("target/extract-compare"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = Some(PathBuf::from(val()?)),
            "--sentences" => a.sentences = val()?.parse()?,
            "--batch" => a.batch = val()?.parse()?,
            "--repeats" => a.repeats = val()?.parse()?,
            "--rounds" => a.rounds = val()?.parse()?,
            "--threads" => a.threads = val()?.parse()?,
            "--device" => a.device = val()?,
            "--python" => a.python = Some(val()?),
            "--skip-python" => a.skip_python = true,
            "--truncate" => a.truncate = true,
            "--out" => a.out = PathBuf::from(val()?),
            "-h" | "--help" => {
                let doc = include_str!("extract_compare.rs")
                    .lines()
                    .take_while(|l| l.starts_with("//!"));
                println!("{}", doc.collect::<Vec<_>>().join("\n"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown option `{other}` (see --help)").into()),
        }
    }
    for (name, value) in [
        ("--sentences", a.sentences),
        ("--batch", a.batch),
        ("--repeats", a.repeats),
        ("--rounds", a.rounds),
        ("--threads", a.threads),
    ] {
        if value == 0 {
            return Err(format!("{name} must be at least 1").into());
        }
    }
    Ok(a)
}

/// Words of the generated corpus; `benches/peers/torch_extract.py` holds the same list.
const WORDS: &[&str] = &[
    "the",
    "a",
    "model",
    "attention",
    "head",
    "query",
    "key",
    "value",
    "token",
    "sentence",
    "cat",
    "dog",
    "runs",
    "jumps",
    "over",
    "under",
    "quickly",
    "slowly",
    "red",
    "blue",
    "green",
    "small",
    "large",
    "and",
    "or",
    "but",
    "because",
    "when",
    "while",
    "house",
    "tree",
    "river",
    "mountain",
    "city",
    "book",
    "reads",
    "writes",
    "sees",
    "finds",
    "loses",
    "happy",
    "sad",
    "bright",
    "dark",
    "old",
    "new",
    "in",
    "on",
    "at",
    "with",
    "from",
    "into",
    "language",
    "vision",
    "transformer",
    "layer",
    "picture",
    "music",
    "science",
    "history",
    "people",
    "children",
    "morning",
    "evening",
];

/// Deterministic sentences of 9-33 words (64-bit LCG, mirrored in `torch_extract.py`).
fn corpus(n: usize) -> Vec<String> {
    let mut state: u64 = 42;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..n)
        .map(|_| {
            let len = 8 + next() % 25;
            let mut s: Vec<&str> = (0..len).map(|_| WORDS[next() % WORDS.len()]).collect();
            s.push(".");
            s.join(" ")
        })
        .collect()
}

fn log(msg: &str) {
    eprintln!("[extract_compare] {msg}");
}

fn median(rates: &[f64]) -> f64 {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// One round of `repeats` timed extractions; returns (tokens, rates in tokens/s).
fn time_ours(
    model: &LoadedModel,
    corpus: &Corpus,
    opts: &ExtractOptions,
    repeats: usize,
) -> Res<(usize, Vec<f64>)> {
    let mut rates = Vec::with_capacity(repeats);
    let mut tokens = 0;
    for _ in 0..repeats {
        let t0 = Instant::now();
        let ex = model.extract(corpus, opts, &mut |_, _| {})?;
        let secs = t0.elapsed().as_secs_f64();
        tokens = ex.tokens.len();
        rates.push(tokens as f64 / secs);
    }
    Ok((tokens, rates))
}

/// The devvenv's python (created on first use), unless `--python` names one.
fn python_path(args: &Args) -> Res<String> {
    if let Some(p) = &args.python {
        return Ok(p.clone());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/devvenv.sh");
    log(
        "setting up the dev venv with torch + transformers (scripts/devvenv.sh; large the first time)",
    );
    last_line_of(Command::new("bash").arg(&script), &script)
}

/// What one PyTorch round printed as its last line.
struct TorchRound {
    tokens: usize,
    rates: Vec<f64>,
    version: String,
}

fn time_torch(
    python: &str,
    args: &Args,
    model_dir: &Path,
    images: Option<&Path>,
) -> Res<TorchRound> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/torch_extract.py");
    let t = args.threads.to_string();
    let (n, batch, repeats) = (
        args.sentences.to_string(),
        args.batch.to_string(),
        args.repeats.to_string(),
    );
    let last = last_line_of(
        Command::new(python)
            .arg(&script)
            .arg(model_dir)
            .args([
                "--sentences",
                &n,
                "--batch",
                &batch,
                "--repeats",
                &repeats,
                "--threads",
                &t,
            ])
            .args(args.truncate.then_some("--truncate"))
            .args(
                images
                    .map(|dir| [Path::new("--images"), dir])
                    .into_iter()
                    .flatten(),
            )
            .env("OMP_NUM_THREADS", &t)
            .env("MKL_NUM_THREADS", &t),
        &script,
    )?;
    let v: serde_json::Value = serde_json::from_str(&last)?;
    let rates: Vec<f64> = v["rates"]
        .as_array()
        .ok_or("no `rates` in torch_extract.py's output")?
        .iter()
        .filter_map(|r| r.as_f64())
        .collect();
    if rates.is_empty() {
        return Err("torch_extract.py reported no rates".into());
    }
    Ok(TorchRound {
        tokens: v["tokens"].as_u64().unwrap_or(0) as usize,
        rates,
        version: format!(
            "torch {} + transformers {}",
            v["torch"].as_str().unwrap_or("?"),
            v["transformers"].as_str().unwrap_or("?")
        ),
    })
}

fn fmt_rates(rates: &[f64]) -> String {
    rates
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("extract_compare: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Res<()> {
    let args = parse_args()?;
    // Taken first, so that the load average is the one the benchmark started under.
    let machine = attnviz_benches::machine_record();
    let model_dir = args.model.clone().ok_or("pass --model <all-MiniLM-L6-v2 dir> (or set ATTNVIZ_MINILM_DIR); `attnviz fetch-model --print-dir` downloads it and prints the directory")?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()?;
    let device: Device = device_from_name(&args.device)?;
    let model = LoadedModel::load(&model_dir, &device)?;
    // Text models get the generated sentences; ViT the paper's synthetic images, written as PNGs
    // so that the PyTorch side reads exactly the same pixels.
    let (corpus, warm_up, images_dir) = match model.info().image {
        Some(geometry) => {
            let images = synthetic_images(args.sentences, geometry.image_size);
            let dir = args.out.join("images");
            // Rewritten whole: the PyTorch side reads every PNG there, so none may be left over
            // from an earlier run with more images.
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
            for (i, image) in images.iter().enumerate() {
                image.save(dir.join(format!("{i:05}.png")))?;
            }
            let warm_up = Corpus::Images(images[..args.batch.min(images.len())].to_vec());
            (Corpus::Images(images), warm_up, Some(dir))
        }
        None => {
            let texts = corpus(args.sentences);
            let warm_up = Corpus::Text(texts[..args.batch.min(texts.len())].to_vec());
            (Corpus::Text(texts), warm_up, None)
        }
    };
    let opts = ExtractOptions {
        batch_size: args.batch,
        truncate: args.truncate,
        ..Default::default()
    };
    let opts_no_attention = ExtractOptions {
        capture_attention: false,
        ..opts.clone()
    };
    // Warm-up: allocator, thread pool, page faults of the first buffers.
    model.extract(&warm_up, &opts, &mut |_, _| {})?;
    let python = if args.skip_python {
        None
    } else {
        Some(python_path(&args)?)
    };

    let mut rows = Vec::new();
    let mut tokens = 0;
    let mut torch_version = String::new();
    for round in 1..=args.rounds {
        let (n_tok, ours) = time_ours(&model, &corpus, &opts, args.repeats)?;
        let (_, ours_no_attn) = time_ours(&model, &corpus, &opts_no_attention, args.repeats)?;
        tokens = n_tok;
        log(&format!(
            "round {round}: attn-extract {:.0} tokens/s (runs: {}); without attention {:.0}",
            median(&ours),
            fmt_rates(&ours),
            median(&ours_no_attn)
        ));
        let torch = match &python {
            Some(py) => {
                let t = time_torch(py, &args, &model_dir, images_dir.as_deref())?;
                if t.tokens != n_tok {
                    return Err(format!("token counts differ: attn-extract {n_tok}, PyTorch {} (different tokenization?)", t.tokens).into());
                }
                log(&format!(
                    "round {round}: PyTorch {:.0} tokens/s (runs: {})",
                    median(&t.rates),
                    fmt_rates(&t.rates)
                ));
                torch_version = t.version;
                Some(t.rates)
            }
            None => None,
        };
        rows.push((ours, ours_no_attn, torch));
    }

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ours_med: Vec<f64> = rows.iter().map(|r| median(&r.0)).collect();
    let torch_med: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.2.as_deref().map(median))
        .collect();
    let ratio = (!torch_med.is_empty()).then(|| mean(&ours_med) / mean(&torch_med));
    let mut md = format!(
        "Extraction throughput, {} ({} {}, {tokens} tokens, batch {}, {} threads, device {}), medians of {} runs per round\n\n\
         | round | attn-extract (tokens/s) | attn-extract, no attention | PyTorch{} |\n| --- | --- | --- | --- |\n",
        model_dir.display(),
        args.sentences,
        if images_dir.is_some() {
            "images"
        } else {
            "sentences"
        },
        args.batch,
        args.threads,
        args.device,
        args.repeats,
        if torch_version.is_empty() {
            String::new()
        } else {
            format!(" ({torch_version})")
        },
    );
    for (i, (ours, no_attn, torch)) in rows.iter().enumerate() {
        let torch = torch
            .as_deref()
            .map_or("skipped".into(), |t| format!("{:.0}", median(t)));
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {torch} |\n",
            i + 1,
            median(ours),
            median(no_attn)
        ));
    }
    match ratio {
        Some(r) => md.push_str(&format!(
            "\nattn-extract / PyTorch: **{r:.2}x** (mean of the round medians)\n"
        )),
        None => md.push_str("\nPyTorch skipped: no ratio.\n"),
    }
    md.push_str(&format!(
        "\nMachine: {}.\n",
        attnviz_benches::machine_line(&machine)
    ));
    println!("{md}");
    std::fs::create_dir_all(&args.out)?;
    let json = serde_json::json!({
        "machine": machine,
        "model": model_dir, "sentences": args.sentences, "tokens": tokens, "batch": args.batch,
        "threads": args.threads, "device": args.device, "torch": torch_version,
        "rounds": rows.iter().map(|(o, n, t)| serde_json::json!({"attn_extract": o, "attn_extract_no_attention": n, "pytorch": t})).collect::<Vec<_>>(),
        "ratio": ratio,
    });
    // Written whole to a temporary file, then renamed: an interrupted run leaves the old results.
    for (name, text) in [
        ("results.md", md),
        ("results.json", serde_json::to_string_pretty(&json)?),
    ] {
        let tmp = args.out.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, args.out.join(name))?;
    }
    log(&format!("wrote {}", args.out.join("results.md").display()));
    Ok(())
}
