//! tfmc runtime.
