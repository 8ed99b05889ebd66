//! guest-libcuda
