//! Offline tokenization: `tokenizer.json`, or the classic `vocab.txt` / `vocab.json` + `merges.txt`.

use std::path::Path;

use attn_types::Architecture;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer, TruncationParams};

use crate::error::{ExtractError, Result};

/// One tokenized sequence.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub offsets: Vec<(usize, usize)>,
    pub special: Vec<bool>,
}

/// A tokenizer with padding and truncation switched off (we pad per batch ourselves).
#[derive(Clone)]
pub(crate) struct TextTokenizer {
    inner: Tokenizer,
    /// The file it was built from, for error messages.
    source: std::path::PathBuf,
}

impl TextTokenizer {
    /// Finds and builds the tokenizer of a model directory.
    pub fn load(dir: &Path, arch: Architecture) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            let mut inner = Tokenizer::from_file(&json).map_err(|e| tok_err(&json, e))?;
            // all-MiniLM-L6-v2 ships with fixed padding and truncation to 128: turn both off.
            inner.with_padding(None);
            inner.with_truncation(None).map_err(|e| tok_err(&json, e))?;
            return Ok(Self {
                inner,
                source: json,
            });
        }
        match arch {
            Architecture::Bert => Self::wordpiece(dir),
            Architecture::Gpt2 => Self::byte_level_bpe(dir),
            Architecture::Llama
            | Architecture::Mistral
            | Architecture::Qwen2
            | Architecture::Qwen3 => Err(ExtractError::MissingFile {
                path: json,
                why: "the tokenizer (Llama-family models need tokenizer.json)".into(),
            }),
            Architecture::Vit => Err(ExtractError::Tokenizer {
                path: json,
                message: "a vision model has no tokenizer".into(),
            }),
            Architecture::Imported { .. } => Err(ExtractError::Tokenizer {
                path: json,
                message: "imported vectors come without a tokenizer".into(),
            }),
        }
    }

    /// BERT's WordPiece pipeline from `vocab.txt` (lower-casing per `tokenizer_config.json`).
    fn wordpiece(dir: &Path) -> Result<Self> {
        let vocab = dir.join("vocab.txt");
        if !vocab.is_file() {
            return Err(ExtractError::MissingFile {
                path: dir.join("tokenizer.json"),
                why: "the tokenizer (neither tokenizer.json nor vocab.txt exists)".into(),
            });
        }
        let lowercase = crate::hf::read_json(&dir.join("tokenizer_config.json"), "")
            .ok()
            .and_then(|v| v.get("do_lower_case").and_then(|b| b.as_bool()))
            .unwrap_or(true);
        let path_str = vocab.to_string_lossy().to_string();
        let model = WordPiece::from_file(&path_str)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| tok_err(&vocab, e))?;
        let mut inner = Tokenizer::new(model);
        let id = |t: &str| {
            inner.token_to_id(t).ok_or_else(|| ExtractError::Tokenizer {
                path: vocab.clone(),
                message: format!("vocabulary has no `{t}` token"),
            })
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        inner
            .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(BertProcessing::new(
                ("[SEP]".into(), sep),
                ("[CLS]".into(), cls),
            )))
            .with_decoder(Some(WordPieceDecoder::default()));
        let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .filter(|t| inner.token_to_id(t).is_some())
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        inner.add_special_tokens(&specials);
        Ok(Self {
            inner,
            source: vocab,
        })
    }

    /// GPT-2's byte-level BPE from `vocab.json` + `merges.txt` (no special tokens added).
    fn byte_level_bpe(dir: &Path) -> Result<Self> {
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        for f in [&vocab, &merges] {
            if !f.is_file() {
                return Err(ExtractError::MissingFile {
                    path: f.clone(),
                    why: "the tokenizer (no tokenizer.json; byte-level BPE needs vocab.json and merges.txt)"
                        .into(),
                });
            }
        }
        let model = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
            .build()
            .map_err(|e| tok_err(&vocab, e))?;
        let mut inner = Tokenizer::new(model);
        inner
            .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
            .with_post_processor(Some(ByteLevel::default().trim_offsets(true)))
            .with_decoder(Some(ByteLevelDecoder::default()));
        if inner.token_to_id("<|endoftext|>").is_some() {
            inner.add_special_tokens(&[AddedToken::from("<|endoftext|>".to_string(), true)]);
        }
        Ok(Self {
            inner,
            source: vocab,
        })
    }

    /// Tokenizes one text; when `max_len` is given the encoding is truncated to it.
    pub fn encode(&self, text: &str, max_len: Option<usize>) -> Result<Encoded> {
        let enc = match max_len {
            None => self.inner.encode(text, true),
            Some(max_length) => {
                let mut t = self.inner.clone();
                t.with_truncation(Some(TruncationParams {
                    max_length,
                    ..Default::default()
                }))
                .map_err(|e| tok_err(&self.source, e))?;
                t.encode(text, true)
            }
        }
        .map_err(|e| tok_err(&self.source, e))?;
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            tokens: enc.get_tokens().to_vec(),
            offsets: enc.get_offsets().to_vec(),
            special: enc
                .get_special_tokens_mask()
                .iter()
                .map(|&m| m != 0)
                .collect(),
        })
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> ExtractError {
    ExtractError::Tokenizer {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
