//! The CUDA pipeline (PTX artifacts, `run --backend cuda`). Under construction.
