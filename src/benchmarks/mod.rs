//! The benchmarks that need the whole service: the learner step against PyTorch
//! ([`learner`]), the running service ([`service`]) and the fault campaign
//! ([`faults`]).

pub mod faults;
pub mod learner;
pub mod service;
