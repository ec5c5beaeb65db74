#![doc = include_str!("../README.md")]

pub mod corpus;
mod digest;
mod error;
pub mod import;
mod progress;
mod run;
pub mod select;

pub use attn_project::AttendedKeys;
pub use attn_types::AttentionKeep;
pub use error::{Context, PipelineError, Result, error_chain};
pub use import::{AttentionSource, ImportPlan, compute_attention, import, read_tokens};
pub use progress::{Control, ProgressEvent, Stage};
pub use run::{
    CorpusInput, DEFAULT_CEILING, DEFAULT_TSNE_ATTENTION_KL, DEFAULT_UMAP_ATTENTION_KL,
    DatasetInfo, HeadLayoutInput, HeadSummary, LayoutVectors, MODEL_FILE, ProjectionSettings,
    RunPlan, RunSummary, attended_keys, check_settings, dataset_info, dataset_summary,
    head_ceiling, head_normalizer, layout_head, load_corpus, project_dataset, projector, run,
    store_head, summarize,
};
pub use select::{Shard, parse_index_list, parse_index_sequence, select_heads};

/// Version of this crate, recorded in dataset provenance.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
