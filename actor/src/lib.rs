//! The actor role: the rollout loop (two samples per prompt from the current student,
//! diversity reward from the frozen embedder), the weight subscriber, and the evaluator
//! mode. Built on `common`'s task and models.
