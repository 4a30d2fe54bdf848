//! The Cranelift backend (fast JIT tier): translates KIR to Cranelift IR. Under construction.
