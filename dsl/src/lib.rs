//! tfm dsl.
