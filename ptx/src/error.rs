//! Error types of the crate: one enum per stage (parse, memory, execution).

use thiserror::Error;

/// A PTX text that cannot be parsed or lowered. Positions are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("PTX error at line {line}, column {column}: {message}")]
pub struct PtxError {
    /// 1-based line of the offending token.
    pub line: u32,
    /// 1-based column of the offending token.
    pub column: u32,
    /// What went wrong, for humans.
    pub message: String,
}

impl PtxError {
    pub(crate) fn new(line: u32, column: u32, message: impl Into<String>) -> Self {
        Self {
            line,
            column,
            message: message.into(),
        }
    }
}

/// Errors of [`crate::memory::Arena`] operations.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MemError {
    /// A zero-sized allocation was requested.
    #[error("zero-sized allocation")]
    ZeroSize,
    /// The alignment is not a power of two or is larger than the arena supports.
    #[error("invalid alignment {0}")]
    BadAlign(u64),
    /// No free range of the arena is large enough.
    #[error("out of device memory: {requested} bytes requested")]
    OutOfMemory {
        /// Requested size in bytes.
        requested: u64,
    },
    /// `free` of an address that is not the base of a live allocation.
    #[error("address {0:#x} is not the base of an allocation")]
    NotAllocationBase(u64),
    /// An access touches bytes outside one live allocation.
    #[error("access of {len} bytes at {addr:#x} is outside any live allocation")]
    OutOfBounds {
        /// First byte of the access.
        addr: u64,
        /// Length of the access.
        len: u64,
    },
    /// A fill pattern that is not 1, 2 or 4 bytes long.
    #[error("fill pattern must be 1, 2 or 4 bytes, got {0}")]
    BadPattern(usize),
}

/// Errors of a kernel launch.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExecError {
    /// A kernel accessed memory outside any live allocation or window.
    #[error("illegal address {addr:#x}")]
    IllegalAddress {
        /// The faulting address (generic or space address).
        addr: u64,
    },
    /// A memory access that is not naturally aligned.
    #[error("misaligned address {addr:#x}")]
    MisalignedAddress {
        /// The faulting address.
        addr: u64,
    },
    /// The instruction budget of the launch ran out.
    #[error("launch timed out (instruction budget exhausted)")]
    LaunchTimeout,
    /// The launch ran past its wall-clock limit (the watchdog).
    #[error("launch timed out (ran past its wall-clock limit)")]
    WatchdogExpired,
    /// The launch was cancelled from outside (its client went away).
    #[error("launch cancelled")]
    Cancelled,
    /// Grid/block/shared-memory configuration outside the device limits, or bad parameters.
    #[error("invalid launch configuration: {0}")]
    InvalidConfig(String),
    /// The kernel executed `trap` (or failed an `assert`).
    #[error("kernel trapped")]
    Trap,
    /// The kernel reaches an instruction the interpreter does not implement.
    #[error("unsupported instruction `{instruction}` at line {line}")]
    Unsupported {
        /// The instruction as written (opcode and modifiers).
        instruction: String,
        /// Its line in the PTX text.
        line: u32,
    },
    /// No kernel of that name in the module.
    #[error("kernel `{0}` not found")]
    NotFound(String),
}

/// Errors of [`crate::LoadedModule::load`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoadError {
    /// Allocating or initialising a module variable failed.
    #[error("module variable `{name}`: {source}")]
    Memory {
        /// The variable.
        name: String,
        /// Why.
        #[source]
        source: MemError,
    },
}
