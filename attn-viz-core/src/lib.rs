//! attn-viz-core (work in progress).
