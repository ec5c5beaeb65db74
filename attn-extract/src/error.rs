//! The one error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model or extracting from it.
///
/// Every variant names the file, tensor, sequence or setting at fault so that a user can act on it.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A file the model directory must contain is absent.
    #[error("missing file {}: {why}", path.display())]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file is needed for.
        why: String,
    },
    /// A file exists but could not be read.
    #[error("cannot read {}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// `config.json` (or `preprocessor_config.json`) is malformed or lacks a required field.
    #[error("invalid config {}: {message}", path.display())]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `model_type` names an architecture this crate does not implement.
    #[error("unknown architecture: model_type `{model_type}` in {} (supported: bert, gpt2, vit, llama, mistral, qwen2, qwen3)", path.display())]
    UnknownArchitecture {
        /// The `model_type` value found.
        model_type: String,
        /// The config file.
        path: PathBuf,
    },
    /// A weight's shape disagrees with the sizes in `config.json`.
    #[error(
        "{}: tensor `{tensor}` has shape {actual:?}, but config.json implies {expected:?}",
        file.display()
    )]
    ShapeMismatch {
        /// The weights file.
        file: PathBuf,
        /// The tensor (as named in the model after the key remap).
        tensor: String,
        /// The shape implied by the config.
        expected: Vec<usize>,
        /// The shape stored in the file.
        actual: Vec<usize>,
    },
    /// Tensors the model needs are not in the weights file.
    #[error("{}: missing tensor(s) {}", file.display(), tensors.join(", "))]
    MissingTensors {
        /// The weights file.
        file: PathBuf,
        /// Model paths that received no tensor.
        tensors: Vec<String>,
    },
    /// The weights file holds tensors the model does not know (beyond the ignored task heads).
    #[error("{}: unexpected tensor(s) {}", file.display(), tensors.join(", "))]
    UnexpectedTensors {
        /// The weights file.
        file: PathBuf,
        /// File keys (after prefix stripping) that matched nothing.
        tensors: Vec<String>,
    },
    /// The safetensors file could not be parsed (bad header, truncated data, ...).
    #[error("corrupt safetensors file {}: {message}", file.display())]
    CorruptSafetensors {
        /// The weights file.
        file: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Any other failure while applying weights to the model.
    #[error("{}: cannot load tensor `{tensor}`: {message}", file.display())]
    LoadTensor {
        /// The weights file.
        file: PathBuf,
        /// The tensor.
        tensor: String,
        /// What failed.
        message: String,
    },
    /// The tokenizer files are missing, malformed, or failed on an input.
    #[error("tokenizer {}: {message}", path.display())]
    Tokenizer {
        /// The tokenizer file (tokenizer.json, vocab.txt or vocab.json).
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The tokenizer produced an id the model's embedding table does not have.
    #[error(
        "tokenizer/vocab mismatch: token `{token}` of sequence {sequence} has id {id}, but the model's \
         vocab_size is {vocab_size}"
    )]
    TokenOutOfVocab {
        /// Index of the sequence in the corpus.
        sequence: usize,
        /// The token text.
        token: String,
        /// The token id.
        id: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// The corpus has no sequences, or a sequence has no tokens.
    #[error("empty corpus: {0}")]
    EmptyCorpus(String),
    /// A sequence is longer than the model's position table and truncation is off.
    #[error(
        "sequence {index} has {len} tokens, more than the model's maximum of {max} \
         (set ExtractOptions::truncate to cut it)"
    )]
    SequenceTooLong {
        /// Index of the sequence in the corpus.
        index: usize,
        /// Its length in tokens.
        len: usize,
        /// The model's maximum.
        max: usize,
    },
    /// Text was given to a vision model, or images to a text model.
    #[error("a {model} model cannot take a corpus of {corpus}")]
    CorpusKind {
        /// The model family.
        model: String,
        /// What the corpus holds.
        corpus: String,
    },
    /// An option is out of range (unknown layer or head, zero batch size, ...).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A device name that is unknown or not compiled in.
    #[error("unknown or unavailable device `{name}` (available: {available})")]
    UnknownDevice {
        /// The name asked for.
        name: String,
        /// The names this build accepts.
        available: String,
    },
    /// A compiled-in device that cannot be used here (no GPU, no driver).
    #[error("device `{name}` is not usable: {message}")]
    DeviceUnavailable {
        /// The device name asked for.
        name: String,
        /// What failed (e.g. the driver library could not be loaded).
        message: String,
    },
    /// [`crate::LoadedModel::extract_until`] was told to stop; nothing was captured.
    #[error("extraction cancelled after {done} of {total} sequences")]
    Cancelled {
        /// Sequences processed before it stopped.
        done: usize,
        /// Sequences in the corpus.
        total: usize,
    },
    /// The tensor backend failed (reading results back, unexpected dtype).
    #[error("backend error: {0}")]
    Backend(String),
}

/// Result alias of the crate.
pub type Result<T, E = ExtractError> = std::result::Result<T, E>;
