//! attn-store (work in progress).
