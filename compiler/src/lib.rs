//! tfmc.
