//! host-executor
