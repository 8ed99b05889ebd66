//! Human-friendly byte sizes on the command line: `4096`, `512K`, `64M`, `4G`, `1T`.

pub use vmm::config::parse_size;
