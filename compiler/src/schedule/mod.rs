//! The schedule: turns an optimized IR cascade into [`kir`], a loop nest with tiles,
//! parallel loops and local buffers, kept apart from the algorithm (Halide-style). Every
//! backend translates the same KIR.

pub mod kir;
