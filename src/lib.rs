//! dllm: a serving engine for block-diffusion LLMs (LLaDA2.0 MoE).

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod engine;
pub mod fp8;
pub mod make_model;
pub mod model;
pub mod nvtx;
pub mod progress;
pub mod rng;
pub mod runtime;
pub mod server;
pub mod tokenizer;
