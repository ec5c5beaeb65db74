//! attn-extract (work in progress).
