//! The whole pipeline through the library alone: a model directory and a few sentences in, a
//! projected dataset out. `cargo run -p attn-pipeline --example minimal -- MODEL_DIR OUT_DIR`
//! (MODEL_DIR: a BERT, GPT-2 or ViT directory in Hugging Face format, e.g. the one
//! `attnviz fetch-model --print-dir` prints).

use std::sync::atomic::AtomicBool;

use attn_pipeline::{
    AttentionKeep, Control, CorpusInput, ProgressEvent, ProjectionSettings, RunPlan,
};
use attn_types::ProjectionMethod;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model_dir), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: minimal MODEL_DIR OUT_DIR".into());
    };
    let sentences = [
        "The cat sat on the mat.",
        "A query attends to the keys it finds relevant.",
        "Attention heads specialize.",
    ];
    let plan = RunPlan {
        model_dir: model_dir.into(),
        model_id: None,
        corpus: CorpusInput::Texts(sentences.iter().map(|s| s.to_string()).collect()),
        text_field: "text".into(),
        max_sequences: None,
        out: out.into(),
        backend: "flex".into(),
        batch_size: 8,
        truncate: true,
        rope: Default::default(),
        attention_keep: AttentionKeep::Auto,
        attention_memory: RunPlan::DEFAULT_ATTENTION_MEMORY,
        normalize: true,
        layers: Some(vec![0]),
        heads: None,
        shard: None,
        // attnviz's default layouts (attention-aware t-SNE), shortened for three sentences.
        projection: ProjectionSettings {
            perplexity: 5.0,
            tsne_iterations: 250,
            ..ProjectionSettings::attnviz(
                vec![ProjectionMethod::Pca, ProjectionMethod::Tsne],
                vec![2],
            )
        },
    };
    let cancel = AtomicBool::new(false);
    let progress = |event: ProgressEvent| {
        if let ProgressEvent::Finish { stage } = event {
            eprintln!("{} done", stage.as_str());
        }
    };
    let summary = attn_pipeline::run(&plan, Control::new(&cancel, &progress))?;
    for head in &summary.per_head {
        println!("{}: trustworthiness {:?}", head.head, head.trustworthiness);
    }
    println!(
        "{} heads, {} projections in {}",
        summary.heads,
        summary.projections_computed,
        summary.dataset.display()
    );
    Ok(())
}
