//! `CUresult` status codes: the numeric values of the CUDA driver API, with the names and
//! descriptions `cuGetErrorName`/`cuGetErrorString` return.

/// A CUDA driver status code (`CUresult`). Unknown values are carried through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

macro_rules! statuses {
    ($($name:ident = $val:literal, $desc:literal;)*) => {
        impl Status {
            $(pub const $name: Status = Status($val);)*

            /// The `CUDA_ERROR_*` / `CUDA_SUCCESS` name, or `None` for an unknown code.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(concat!("CUDA_", stringify!($name))),)*
                    _ => None,
                }
            }

            /// The human-readable description, as the CUDA driver words it.
            pub fn description(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some($desc),)*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    SUCCESS = 0, "no error";
    ERROR_INVALID_VALUE = 1, "invalid argument";
    ERROR_OUT_OF_MEMORY = 2, "out of memory";
    ERROR_NOT_INITIALIZED = 3, "initialization error";
    ERROR_DEINITIALIZED = 4, "driver shutting down";
    ERROR_STUB_LIBRARY = 34, "CUDA driver is a stub library";
    ERROR_DEVICE_UNAVAILABLE = 46, "CUDA-capable device(s) is/are busy or unavailable";
    ERROR_NO_DEVICE = 100, "no CUDA-capable device is detected";
    ERROR_INVALID_DEVICE = 101, "invalid device ordinal";
    ERROR_INVALID_IMAGE = 200, "device kernel image is invalid";
    ERROR_INVALID_CONTEXT = 201, "invalid device context";
    ERROR_CONTEXT_ALREADY_CURRENT = 202, "context already current";
    ERROR_MAP_FAILED = 205, "mapping of buffer object failed";
    ERROR_NO_BINARY_FOR_GPU = 209, "no kernel image is available for execution on the device";
    ERROR_UNSUPPORTED_LIMIT = 215, "limit is not supported on this architecture";
    ERROR_INVALID_PTX = 218, "a PTX JIT compilation failed";
    ERROR_UNSUPPORTED_PTX_VERSION = 222, "the provided PTX was compiled with an unsupported toolchain.";
    ERROR_UNSUPPORTED_EXEC_AFFINITY = 224, "the provided execution affinity is not supported";
    ERROR_INVALID_SOURCE = 300, "device kernel image is invalid";
    ERROR_FILE_NOT_FOUND = 301, "file not found";
    ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND = 302, "shared object symbol not found";
    ERROR_OPERATING_SYSTEM = 304, "OS call failed or operation not supported on this OS";
    ERROR_INVALID_HANDLE = 400, "invalid resource handle";
    ERROR_ILLEGAL_STATE = 401, "the operation cannot be performed in the present state";
    ERROR_NOT_FOUND = 500, "named symbol not found";
    ERROR_NOT_READY = 600, "device not ready";
    ERROR_ILLEGAL_ADDRESS = 700, "an illegal memory access was encountered";
    ERROR_LAUNCH_OUT_OF_RESOURCES = 701, "too many resources requested for launch";
    ERROR_LAUNCH_TIMEOUT = 702, "the launch timed out and was terminated";
    ERROR_PRIMARY_CONTEXT_ACTIVE = 708, "primary context active";
    ERROR_CONTEXT_IS_DESTROYED = 709, "context is destroyed";
    ERROR_ASSERT = 710, "device-side assert triggered";
    ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712, "part or all of the requested memory range is already mapped";
    ERROR_HOST_MEMORY_NOT_REGISTERED = 713, "pointer does not correspond to a registered memory region";
    ERROR_ILLEGAL_INSTRUCTION = 715, "an illegal instruction was encountered";
    ERROR_MISALIGNED_ADDRESS = 716, "misaligned address";
    ERROR_INVALID_ADDRESS_SPACE = 717, "operation not supported on global/shared address space";
    ERROR_INVALID_PC = 718, "invalid program counter";
    ERROR_LAUNCH_FAILED = 719, "unspecified launch failure";
    ERROR_COOPERATIVE_LAUNCH_TOO_LARGE = 720, "too many blocks in cooperative launch";
    ERROR_NOT_PERMITTED = 800, "operation not permitted";
    ERROR_NOT_SUPPORTED = 801, "operation not supported";
    ERROR_UNKNOWN = 999, "unknown error";
}

impl Status {
    /// True for `CUDA_SUCCESS`.
    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Errors after which CUDA considers the context unusable ("sticky" errors): every later call
    /// on that context reports the same error.
    pub fn is_sticky(self) -> bool {
        matches!(
            self,
            Status::ERROR_ILLEGAL_ADDRESS
                | Status::ERROR_LAUNCH_TIMEOUT
                | Status::ERROR_ASSERT
                | Status::ERROR_ILLEGAL_INSTRUCTION
                | Status::ERROR_MISALIGNED_ADDRESS
                | Status::ERROR_INVALID_ADDRESS_SPACE
                | Status::ERROR_INVALID_PC
                | Status::ERROR_LAUNCH_FAILED
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.0),
            None => write!(f, "CUresult {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn names_match_cuda() {
        assert_eq!(Status::SUCCESS.name(), Some("CUDA_SUCCESS"));
        assert_eq!(Status(700).name(), Some("CUDA_ERROR_ILLEGAL_ADDRESS"));
        assert_eq!(Status(12345).name(), None);
        assert!(Status::ERROR_LAUNCH_TIMEOUT.is_sticky());
        assert!(!Status::ERROR_INVALID_VALUE.is_sticky());
    }
}
