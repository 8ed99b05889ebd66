//! Choosing a backend by name: `cpu`, `cuda`, or `auto` (cuda when a usable GPU driver is
//! present, else cpu — and say so).

use std::sync::Arc;

use crate::cpu::{CpuBackend, CpuConfig};
use crate::cuda::{CudaBackend, CudaUnavailable};
use crate::session::Backend;

/// Which backend to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// The PTX interpreter.
    Cpu,
    /// A real GPU through the CUDA driver.
    Cuda,
    /// `cuda` if available, otherwise `cpu`.
    Auto,
}

/// Why the requested backend cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(
        "the cuda backend is unavailable: {0} (use --backend cpu, or --backend auto to fall back)"
    )]
    CudaUnavailable(#[from] CudaUnavailable),
}

/// A backend ready to serve, and a note for the user when `auto` had to fall back.
pub struct Selected {
    pub backend: Arc<dyn Backend>,
    pub note: Option<String>,
}

/// Opens the chosen backend.
pub fn open_backend(choice: BackendChoice, cpu: CpuConfig) -> Result<Selected, SelectError> {
    match choice {
        BackendChoice::Cpu => Ok(Selected {
            backend: Arc::new(CpuBackend::new(cpu)),
            note: None,
        }),
        BackendChoice::Cuda => Ok(Selected {
            backend: Arc::new(CudaBackend::probe()?),
            note: None,
        }),
        BackendChoice::Auto => match CudaBackend::probe() {
            Ok(b) => Ok(Selected {
                backend: Arc::new(b),
                note: Some("backend auto: using cuda".into()),
            }),
            Err(e) => Ok(Selected {
                backend: Arc::new(CpuBackend::new(cpu)),
                note: Some(format!("backend auto: cuda unavailable ({e}); using cpu")),
            }),
        },
    }
}
