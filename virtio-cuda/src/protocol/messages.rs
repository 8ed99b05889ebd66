//! Every request of the protocol, declared once.
//!
//! Each line of [`messages!`] declares one opcode: its number, whether the client waits for a
//! reply (`sync`) or fires and forgets (`async`, errors latched and reported at the next
//! synchronising call), its fields in wire order, and its reply type. The macro generates the
//! request structs, their [`Call`] impls and the [`Request`] enum that the executor decodes into.
//! Adding an opcode is one line here plus its handler in the executor.
//!
//! Handles (`ctx`, `stream`, `event`, `module`, `func`) are chosen by the client from the range
//! the executor granted in [`HelloReply`]; 0 means "none"/the legacy default stream, 1 and 2 are
//! `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`. Device pointers are addresses in the session's
//! device VA range.

use super::codec::List;
use super::data::{Sink, Source};
use super::wire::{Reader, Writer};
use super::{DecodeError, Wire};

/// A request type: its opcode, reply and calling convention.
pub trait Call: Wire {
    const OPCODE: u16;
    /// True when the client does not wait for a reply.
    const ASYNC: bool;
    /// The reply body (`Empty` for calls that only return a status).
    type Reply: Wire;
    /// The name used in logs and error messages.
    const NAME: &'static str;
}

crate::wire_struct! {
    /// A reply with no body (the status is in the response header).
    pub struct Empty {}
}

crate::wire_struct! {
    pub struct HelloReply {
        pub session_id: u64,
        /// First handle id the client may use.
        pub handle_base: u64,
        /// Number of handle ids granted.
        pub handle_count: u64,
        /// The session's device-pointer range.
        pub va_base: u64,
        pub va_size: u64,
        /// Device-memory quota of the session in bytes.
        pub quota: u64,
        /// Backend name (`cpu`, `cuda`).
        pub backend: String,
    }
}

crate::wire_struct! {
    pub struct InitReply {
        /// Value for `cuDriverGetVersion` (e.g. 13000).
        pub driver_version: i32,
        pub device_count: u32,
    }
}

crate::wire_struct! {
    /// One `CUdevice_attribute` and its value.
    pub struct DeviceAttr {
        pub attr: u32,
        pub value: i32,
    }
}

crate::wire_struct! {
    /// Everything the client caches about a device after one round trip.
    pub struct DeviceInfoReply {
        pub name: String,
        pub uuid: [u8; 16],
        pub total_mem: u64,
        pub attributes: List<DeviceAttr>,
    }
}

crate::wire_struct! {
    pub struct MemAllocReply {
        pub dptr: u64,
    }
}

crate::wire_struct! {
    pub struct MemInfoReply {
        pub free: u64,
        pub total: u64,
    }
}

crate::wire_struct! {
    /// Bytes returned inline (empty when the data went to a shared-memory or guest sink).
    pub struct DataReply {
        pub data: Vec<u8>,
    }
}

crate::wire_struct! {
    pub struct AddressRangeReply {
        pub base: u64,
        pub size: u64,
    }
}

crate::wire_struct! {
    /// A strided device region: `pitch` bytes between rows, `slice_pitch` bytes between slices.
    pub struct DevRegion {
        pub addr: u64,
        pub pitch: u64,
        pub slice_pitch: u64,
    }
}

crate::wire_struct! {
    pub struct ModuleLoadReply {
        /// Compiler/loader log (warnings on success, the reason on failure).
        pub log: String,
    }
}

crate::wire_struct! {
    /// Layout of one kernel parameter in the packed parameter block.
    pub struct ParamInfo {
        pub offset: u32,
        pub size: u32,
    }
}

crate::wire_struct! {
    /// What the client needs to marshal launches and answer `cuFuncGetAttribute` locally.
    pub struct FuncInfo {
        pub params: List<ParamInfo>,
        pub static_shared_bytes: u32,
        pub local_bytes: u32,
        pub const_bytes: u32,
        pub num_regs: u32,
        pub max_threads_per_block: u32,
        pub ptx_version: u32,
        pub binary_version: u32,
    }
}

crate::wire_struct! {
    pub struct GlobalReply {
        pub dptr: u64,
        pub size: u64,
    }
}

crate::wire_struct! {
    pub struct OccupancyReply {
        pub blocks_per_sm: u32,
    }
}

crate::wire_struct! {
    pub struct ElapsedReply {
        pub ms: f32,
    }
}

macro_rules! messages {
    ($(
        $(#[$m:meta])*
        $name:ident = $op:literal, $mode:ident { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? } -> $reply:ty;
    )*) => {
        $(
            crate::wire_struct! {
                $(#[$m])*
                pub struct $name { $($(#[$fm])* pub $f: $t),* }
            }
            impl Call for $name {
                const OPCODE: u16 = $op;
                const ASYNC: bool = messages!(@async $mode);
                type Reply = $reply;
                const NAME: &'static str = stringify!($name);
            }
        )*

        /// Every request, decoded.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Request {
            $($name($name),)*
        }

        impl Request {
            /// Decodes a request body for `opcode`; the whole body must be consumed.
            pub fn decode(opcode: u16, body: &[u8]) -> Result<Request, DecodeError> {
                let mut r = Reader::new(body);
                let req = match opcode {
                    $($op => Request::$name(<$name as Wire>::get(&mut r)?),)*
                    other => return Err(DecodeError::UnknownOpcode(other)),
                };
                r.finish()?;
                Ok(req)
            }

            /// The request's opcode.
            pub fn opcode(&self) -> u16 {
                match self {
                    $(Request::$name(_) => $op,)*
                }
            }

            /// The request's name, for logs.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Request::$name(_) => stringify!($name),)*
                }
            }

            /// Whether this opcode is fire-and-forget.
            pub fn is_async(&self) -> bool {
                match self {
                    $(Request::$name(_) => <$name as Call>::ASYNC,)*
                }
            }

            /// Encodes the body (no header).
            pub fn encode_body(&self, w: &mut Writer) {
                match self {
                    $(Request::$name(v) => v.put(w),)*
                }
            }
        }

        /// Name of an opcode, for logs (`None` if unknown).
        pub fn opcode_name(opcode: u16) -> Option<&'static str> {
            match opcode {
                $($op => Some(stringify!($name)),)*
                _ => None,
            }
        }

        /// All opcodes, in declaration order.
        pub const ALL_OPCODES: &[u16] = &[$($op),*];
    };
    (@async sync) => { false };
    (@async async) => { true };
}

messages! {
    // ---- session -------------------------------------------------------------------------
    /// First request of every session: protocol version check, resources granted in the reply.
    Hello = 0x0001, sync { version: u32, pid: u32, client: String } -> HelloReply;
    /// Orderly end of the session; the executor frees everything the session owns.
    Goodbye = 0x0002, sync {} -> Empty;
    /// Unix transport only: the memfd sent with this frame (SCM_RIGHTS) becomes the session's
    /// shared-memory channel: request and response rings of `ring_bytes` each and a data window
    /// of `data_bytes` (`Source::Shm` / `Sink::Shm` ranges); see docs/PROTOCOL.md §5. Opcode
    /// 0x0003 (the earlier window-only `AttachWindow`) is retired.
    AttachChannel = 0x0004, sync { ring_bytes: u64, data_bytes: u64 } -> Empty;

    // ---- init and devices ------------------------------------------------------------------
    /// `cuInit`.
    Init = 0x0101, sync { flags: u32 } -> InitReply;
    /// Name, UUID, memory and all attributes of one device (cached by the client).
    DeviceInfo = 0x0102, sync { ordinal: u32 } -> DeviceInfoReply;

    // ---- contexts --------------------------------------------------------------------------
    /// `cuCtxCreate` / `cuDevicePrimaryCtxRetain` (flag bit 31 = primary).
    CtxCreate = 0x0201, async { ctx: u64, device: u32, flags: u32 } -> Empty;
    /// `cuCtxDestroy` / primary context release to zero.
    CtxDestroy = 0x0202, async { ctx: u64 } -> Empty;
    /// `cuCtxSynchronize`: waits for all work of the context; reports latched errors.
    CtxSynchronize = 0x0203, sync { ctx: u64 } -> Empty;

    // ---- memory ----------------------------------------------------------------------------
    /// `cuMemAlloc`.
    MemAlloc = 0x0301, sync { ctx: u64, size: u64 } -> MemAllocReply;
    /// `cuMemFree`.
    MemFree = 0x0302, sync { ctx: u64, dptr: u64 } -> Empty;
    /// `cuMemGetInfo` (reflects the session quota).
    MemGetInfo = 0x0303, sync { ctx: u64 } -> MemInfoReply;
    /// `cuMemcpyHtoD[Async]`.
    MemcpyHtoD = 0x0304, async { ctx: u64, stream: u64, dst: u64, src: Source } -> Empty;
    /// `cuMemcpyDtoH[Async]`: synchronous when the sink is the reply.
    MemcpyDtoH = 0x0305, sync { ctx: u64, stream: u64, src: u64, len: u64, dst: Sink } -> DataReply;
    /// `cuMemcpyDtoD[Async]`.
    MemcpyDtoD = 0x0306, async { ctx: u64, stream: u64, dst: u64, src: u64, len: u64 } -> Empty;
    /// `cuMemsetD8/D16/D32[2D][Async]`: `width` elements of `elem_size` bytes per row.
    Memset = 0x0307, async { ctx: u64, stream: u64, dst: u64, pitch: u64, elem_size: u8, value: u32, width: u64, height: u64 } -> Empty;
    /// 2D/3D host→device copy; the host side arrives packed (rows of `width_bytes`).
    MemcpyHtoDStrided = 0x0308, async { ctx: u64, stream: u64, dst: DevRegion, width_bytes: u64, height: u64, depth: u64, src: Source } -> Empty;
    /// 2D/3D device→host copy; the host side leaves packed.
    MemcpyDtoHStrided = 0x0309, sync { ctx: u64, stream: u64, src: DevRegion, width_bytes: u64, height: u64, depth: u64, dst: Sink } -> DataReply;
    /// 2D/3D device→device copy.
    MemcpyDtoDStrided = 0x030A, async { ctx: u64, stream: u64, dst: DevRegion, src: DevRegion, width_bytes: u64, height: u64, depth: u64 } -> Empty;
    /// `cuMemGetAddressRange`.
    MemGetAddressRange = 0x030B, sync { ctx: u64, dptr: u64 } -> AddressRangeReply;

    // ---- modules and functions -------------------------------------------------------------
    /// `cuModuleLoadData[Ex]` / `cuModuleLoadFatBinary` / `cuLibraryLoadData`: image = fatbin, cubin or PTX.
    ModuleLoad = 0x0401, sync { ctx: u64, module: u64, image: Source } -> ModuleLoadReply;
    /// `cuModuleUnload`.
    ModuleUnload = 0x0402, async { ctx: u64, module: u64 } -> Empty;
    /// `cuModuleGetFunction`: binds the client's `func` handle and returns the parameter layout.
    ModuleGetFunction = 0x0403, sync { ctx: u64, module: u64, func: u64, name: String } -> FuncInfo;
    /// `cuModuleGetGlobal` (also `__constant__` symbols).
    ModuleGetGlobal = 0x0404, sync { ctx: u64, module: u64, name: String } -> GlobalReply;
    /// `cuFuncSetAttribute` / `cuFuncSetCacheConfig` and friends.
    FuncSetAttribute = 0x0405, async { ctx: u64, func: u64, attr: u32, value: i32 } -> Empty;
    /// `cuOccupancyMaxActiveBlocksPerMultiprocessor[WithFlags]`.
    Occupancy = 0x0406, sync { ctx: u64, func: u64, block_size: u32, dynamic_shared: u64, flags: u32 } -> OccupancyReply;

    // ---- execution -------------------------------------------------------------------------
    /// `cuLaunchKernel[Ex]` / `cuLaunchCooperativeKernel`: `params` packed per [`FuncInfo`].
    Launch = 0x0501, async { ctx: u64, func: u64, stream: u64, grid: [u32; 3], block: [u32; 3], shared_bytes: u32, flags: u32, params: Vec<u8> } -> Empty;

    // ---- streams ---------------------------------------------------------------------------
    /// `cuStreamCreate[WithPriority]`.
    StreamCreate = 0x0601, async { ctx: u64, stream: u64, flags: u32, priority: i32 } -> Empty;
    /// `cuStreamDestroy`.
    StreamDestroy = 0x0602, async { ctx: u64, stream: u64 } -> Empty;
    /// `cuStreamSynchronize`.
    StreamSynchronize = 0x0603, sync { ctx: u64, stream: u64 } -> Empty;
    /// `cuStreamQuery`: `CUDA_ERROR_NOT_READY` while work is pending.
    StreamQuery = 0x0604, sync { ctx: u64, stream: u64 } -> Empty;
    /// `cuStreamWaitEvent`.
    StreamWaitEvent = 0x0605, async { ctx: u64, stream: u64, event: u64, flags: u32 } -> Empty;

    // ---- events ----------------------------------------------------------------------------
    /// `cuEventCreate`.
    EventCreate = 0x0701, async { ctx: u64, event: u64, flags: u32 } -> Empty;
    /// `cuEventDestroy`.
    EventDestroy = 0x0702, async { ctx: u64, event: u64 } -> Empty;
    /// `cuEventRecord[WithFlags]`.
    EventRecord = 0x0703, async { ctx: u64, event: u64, stream: u64 } -> Empty;
    /// `cuEventQuery`.
    EventQuery = 0x0704, sync { ctx: u64, event: u64 } -> Empty;
    /// `cuEventSynchronize`.
    EventSynchronize = 0x0705, sync { ctx: u64, event: u64 } -> Empty;
    /// `cuEventElapsedTime`.
    EventElapsedTime = 0x0706, sync { ctx: u64, start: u64, end: u64 } -> ElapsedReply;
}

/// `CtxCreate` flag bit marking the device's primary context.
pub const CTX_FLAG_PRIMARY: u32 = 1 << 31;

/// `Launch` flag: cooperative launch (`cuLaunchCooperativeKernel`).
pub const LAUNCH_FLAG_COOPERATIVE: u32 = 1 << 0;
