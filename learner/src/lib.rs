//! The learner role: the gRPC server, the trajectory queue, the distillation and
//! policy-gradient losses, the optimizer and the weight publisher. Built on `common`'s
//! task and models.
