//! Code generators: each translates [`crate::schedule::kir`] (the scheduled loop nest) into
//! something that runs. [`llvm`]: CPU machine code through LLVM (in-process JIT, assembly,
//! and AOT shared libraries).

pub mod llvm;
