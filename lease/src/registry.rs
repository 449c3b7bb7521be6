//! The embedded lease registry. STUB: being written.
