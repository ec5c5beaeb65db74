//! attn-project (work in progress).
