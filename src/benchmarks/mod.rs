//! The benchmarks that need the whole service: the learner step against PyTorch
//! ([`learner`]) and the running service ([`service`]).

pub mod learner;
pub mod service;
