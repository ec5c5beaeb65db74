#![doc = include_str!("../README.md")]

mod dataset;
mod error;
mod files;
mod json;
mod npy;
mod pq;
#[cfg(feature = "sample")]
pub mod sample;

pub use dataset::{
    ATTENTION_FILE, Dataset, FIGURES_DIR, HEADS_DIR, IMAGES_DIR, KEY_HEADS_DIR, META_FILE,
    PROJECTIONS_DIR, TOKENS_FILE, VALUE_NORMS_FILE, VECTORS_FILE, VIEWER_FILE, head_dir_name,
    parse_head_dir_name, parse_projection_file_name, projection_file_name,
};
pub use error::StoreError;
pub use files::{
    KV_HEAD, KV_KEY_HEAD, KV_NORMALIZATION, KV_PROJECTION, KV_SEQUENCES, StoredHead,
    attention_schema, key_file_beside, key_file_name, keys_schema, projection_schema,
    query_vectors_schema, read_attention_file, read_keys_file, read_normalization_file,
    read_projection_file, read_tokens_file, read_value_norms_file, read_vector_norms_file,
    read_vectors_file, recorded_key_head, tokens_schema, value_norms_schema, vectors_schema,
    write_attention_file, write_keys_file, write_projection_file, write_query_vectors_file,
    write_tokens_file, write_value_norms_file, write_vectors_file,
};
pub use npy::{NpyDtype, NpyFile, NpyHeader, f16_to_f32, read_npy, write_npy};
pub use pq::{KV_SCHEMA_VERSION, ParquetTable, parquet_num_rows, write_file_atomically};

/// Version of this crate, recorded in dataset provenance.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
