//! attn-normalize (work in progress).
