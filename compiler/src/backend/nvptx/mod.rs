//! The NVPTX backend (GPU): translates KIR to PTX through LLVM's NVPTX target. Under construction.
