//! Every request of the protocol, declared once, in [`for_each_call!`].
//!
//! Each line declares one opcode: its number, whether the client waits for a reply (`sync`) or
//! fires and forgets (`async`), whether it reports latched errors, its fields in wire order with
//! the [`Role`] of each handle field, and its reply type. From that line come the request
//! struct, its [`Call`] impl and its [`Request`] variant (here), the executor's typed arguments
//! and dispatch, and a row of docs/PROTOCOL.md that a test checks. How to add a call:
//! docs/ARCHITECTURE.md, "Adding a driver call".

use super::codec::List;
use super::data::{Sink, Source};
use super::wire::{Reader, Writer};
use super::{DecodeError, Wire};

/// A request type: its opcode, reply and calling convention.
pub trait Call: Wire {
    const OPCODE: u16;
    /// True when the client does not wait for a reply.
    const ASYNC: bool;
    /// True when the call reports (and clears) the session's latched error: the synchronising
    /// calls, marked `latched` in the table.
    const REPORTS_LATCHED: bool;
    /// The reply body (`Empty` for calls that only return a status).
    type Reply: Wire;
    /// The name used in logs and error messages.
    const NAME: &'static str;
    /// The fields, in wire order.
    const FIELDS: &'static [FieldInfo];
    /// The fields that carry a [`Role`], with their values.
    fn handles(&self) -> Handles;
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
    /// Names, in the module's order (`cuModuleEnumerateFunctions`).
    pub struct NamesReply {
        pub names: List<String>,
    }
}

crate::wire_struct! {
    /// A count (`cuModuleGetFunctionCount`).
    pub struct CountReply {
        pub count: u32,
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

/// What a handle field of a request is to the executor: which object table it names and
/// whether the call uses, creates or destroys the object. The executor's generic step resolves
/// and checks every field with a role before the call's handler runs (docs/ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A live context of the session, not poisoned by a sticky error; the call's context.
    Ctx,
    /// A context id the call creates (unused, from the granted range).
    NewCtx,
    /// A context the call destroys, with everything created in it.
    DropCtx,
    /// A stream of the call's context, or 0–2 for its default stream.
    Stream,
    NewStream,
    DropStream,
    /// An event of the session (events may be used across contexts, as in CUDA).
    Event,
    NewEvent,
    DropEvent,
    /// A loaded module of the session.
    Module,
    NewModule,
    /// A module the call unloads, with its functions.
    DropModule,
    /// A function handle bound by `ModuleGetFunction`.
    Func,
    NewFunc,
    /// A number of bytes of device memory the call allocates: non-zero, charged to the session's
    /// quota before the backend sees it.
    Charge,
}

impl Role {
    /// True for the roles that name the call's context.
    pub const fn is_ctx(self) -> bool {
        matches!(self, Role::Ctx | Role::NewCtx | Role::DropCtx)
    }
}

/// The role-carrying fields of one request, in declaration order (at most [`Handles::MAX`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handles {
    items: [Option<(Role, u64)>; Handles::MAX],
}

impl Handles {
    /// The most role-carrying fields one request declares.
    pub const MAX: usize = 4;

    fn with(mut self, role: Role, value: u64) -> Self {
        if let Some(slot) = self.items.iter_mut().find(|s| s.is_none()) {
            *slot = Some((role, value));
        }
        self
    }

    /// Every `(role, value)`, in field order.
    pub fn iter(&self) -> impl Iterator<Item = (Role, u64)> + '_ {
        self.items.iter().flatten().copied()
    }

    /// The call's context handle (the field with a context role), if it has one.
    pub fn ctx(&self) -> Option<u64> {
        self.iter().find(|(r, _)| r.is_ctx()).map(|(_, v)| v)
    }
}

/// One field of a request as the table declares it: for documentation and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    pub name: &'static str,
    pub ty: &'static str,
    pub role: Option<Role>,
}

/// The protocol table: every request, declared once, replayed into a macro.
///
/// `for_each_call!(m)` expands to `m! { <the table> }`. [`messages!`] below generates the
/// request structs and the [`Request`] enum from it; the executor generates its typed argument
/// structs and dispatch from it (`host-executor/src/session/calls.rs`). A line is
///
/// ```text
/// Name = opcode, sync|async [+ latched] { field: type [as Role], … } -> Reply;
/// ```
///
/// `sync` calls wait for a reply; `async` ones are fire-and-forget, their errors latched and
/// reported by the next call marked `latched` (the synchronising calls). Handles (`ctx`,
/// `stream`, `event`, `module`, `func`) are chosen by the client from the range the executor
/// granted in [`HelloReply`]; 0 means "none"/the legacy default stream, 1 and 2 are
/// `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`. Device pointers are addresses in the
/// session's device VA range. docs/PROTOCOL.md §6 lists every line (checked by `virtio-cuda/tests/protocol_doc.rs`).
#[macro_export]
macro_rules! for_each_call {
    ($cb:ident) => {
        $cb! {
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
    CtxCreate = 0x0201, async { ctx: u64 as NewCtx, device: u32, flags: u32 } -> Empty;
    /// `cuCtxDestroy` / primary context release to zero.
    CtxDestroy = 0x0202, async { ctx: u64 as DropCtx } -> Empty;
    /// `cuCtxSynchronize`: waits for all work of the context; reports latched errors.
    CtxSynchronize = 0x0203, sync + latched { ctx: u64 as Ctx } -> Empty;

    // ---- memory ----------------------------------------------------------------------------
    /// `cuMemAlloc`.
    MemAlloc = 0x0301, sync { ctx: u64 as Ctx, size: u64 as Charge } -> MemAllocReply;
    /// `cuMemFree`.
    MemFree = 0x0302, sync + latched { ctx: u64 as Ctx, dptr: u64 } -> Empty;
    /// `cuMemGetInfo` (reflects the session quota).
    MemGetInfo = 0x0303, sync { ctx: u64 as Ctx } -> MemInfoReply;
    /// `cuMemcpyHtoD[Async]`.
    MemcpyHtoD = 0x0304, async + latched { ctx: u64 as Ctx, stream: u64 as Stream, dst: u64, src: Source } -> Empty;
    /// `cuMemcpyDtoH[Async]`: synchronous when the sink is the reply.
    MemcpyDtoH = 0x0305, sync + latched { ctx: u64 as Ctx, stream: u64 as Stream, src: u64, len: u64, dst: Sink } -> DataReply;
    /// `cuMemcpyDtoD[Async]`.
    MemcpyDtoD = 0x0306, async { ctx: u64 as Ctx, stream: u64 as Stream, dst: u64, src: u64, len: u64 } -> Empty;
    /// `cuMemsetD8/D16/D32[2D][Async]`: `width` elements of `elem_size` bytes per row.
    Memset = 0x0307, async { ctx: u64 as Ctx, stream: u64 as Stream, dst: u64, pitch: u64, elem_size: u8, value: u32, width: u64, height: u64 } -> Empty;
    /// 2D/3D host→device copy; the host side arrives packed (rows of `width_bytes`).
    MemcpyHtoDStrided = 0x0308, async { ctx: u64 as Ctx, stream: u64 as Stream, dst: DevRegion, width_bytes: u64, height: u64, depth: u64, src: Source } -> Empty;
    /// 2D/3D device→host copy; the host side leaves packed.
    MemcpyDtoHStrided = 0x0309, sync + latched { ctx: u64 as Ctx, stream: u64 as Stream, src: DevRegion, width_bytes: u64, height: u64, depth: u64, dst: Sink } -> DataReply;
    /// 2D/3D device→device copy.
    MemcpyDtoDStrided = 0x030A, async { ctx: u64 as Ctx, stream: u64 as Stream, dst: DevRegion, src: DevRegion, width_bytes: u64, height: u64, depth: u64 } -> Empty;
    /// `cuMemGetAddressRange`.
    MemGetAddressRange = 0x030B, sync { ctx: u64 as Ctx, dptr: u64 } -> AddressRangeReply;

    // ---- modules and functions -------------------------------------------------------------
    /// `cuModuleLoadData[Ex]` / `cuModuleLoadFatBinary` / `cuLibraryLoadData`: image = fatbin, cubin or PTX.
    ModuleLoad = 0x0401, sync { ctx: u64 as Ctx, module: u64 as NewModule, image: Source } -> ModuleLoadReply;
    /// `cuModuleUnload`.
    ModuleUnload = 0x0402, async { ctx: u64 as Ctx, module: u64 as DropModule } -> Empty;
    /// `cuModuleGetFunction`: binds the client's `func` handle and returns the parameter layout.
    ModuleGetFunction = 0x0403, sync { ctx: u64 as Ctx, module: u64 as Module, func: u64 as NewFunc, name: String } -> FuncInfo;
    /// `cuModuleGetFunctionCount`: the number of kernels (`.entry` functions) in the module.
    ModuleGetFunctionCount = 0x0407, sync { ctx: u64 as Ctx, module: u64 as Module } -> CountReply;
    /// `cuModuleEnumerateFunctions`, `cuLibraryEnumerateKernels`: the names of the module's kernels.
    ModuleGetFunctionNames = 0x0408, sync { ctx: u64 as Ctx, module: u64 as Module } -> NamesReply;
    /// `cuModuleGetGlobal` (also `__constant__` symbols).
    ModuleGetGlobal = 0x0404, sync { ctx: u64 as Ctx, module: u64 as Module, name: String } -> GlobalReply;
    /// `cuFuncSetAttribute` / `cuFuncSetCacheConfig` and friends.
    FuncSetAttribute = 0x0405, async { ctx: u64 as Ctx, func: u64 as Func, attr: u32, value: i32 } -> Empty;
    /// `cuOccupancyMaxActiveBlocksPerMultiprocessor[WithFlags]`.
    Occupancy = 0x0406, sync { ctx: u64 as Ctx, func: u64 as Func, block_size: u32, dynamic_shared: u64, flags: u32 } -> OccupancyReply;

    // ---- execution -------------------------------------------------------------------------
    /// `cuLaunchKernel[Ex]` / `cuLaunchCooperativeKernel`: `params` packed per [`FuncInfo`].
    Launch = 0x0501, async { ctx: u64 as Ctx, func: u64 as Func, stream: u64 as Stream, grid: [u32; 3], block: [u32; 3], shared_bytes: u32, flags: u32, params: Vec<u8> } -> Empty;

    // ---- streams ---------------------------------------------------------------------------
    /// `cuStreamCreate[WithPriority]`.
    StreamCreate = 0x0601, async { ctx: u64 as Ctx, stream: u64 as NewStream, flags: u32, priority: i32 } -> Empty;
    /// `cuStreamDestroy`.
    StreamDestroy = 0x0602, async { ctx: u64, stream: u64 as DropStream } -> Empty;
    /// `cuStreamSynchronize`.
    StreamSynchronize = 0x0603, sync + latched { ctx: u64 as Ctx, stream: u64 as Stream } -> Empty;
    /// `cuStreamQuery`: `CUDA_ERROR_NOT_READY` while work is pending.
    StreamQuery = 0x0604, sync { ctx: u64 as Ctx, stream: u64 as Stream } -> Empty;
    /// `cuStreamWaitEvent`.
    StreamWaitEvent = 0x0605, async { ctx: u64 as Ctx, stream: u64 as Stream, event: u64 as Event, flags: u32 } -> Empty;

    // ---- events ----------------------------------------------------------------------------
    /// `cuEventCreate`.
    EventCreate = 0x0701, async { ctx: u64 as Ctx, event: u64 as NewEvent, flags: u32 } -> Empty;
    /// `cuEventDestroy`.
    EventDestroy = 0x0702, async { ctx: u64, event: u64 as DropEvent } -> Empty;
    /// `cuEventRecord[WithFlags]`.
    EventRecord = 0x0703, async { ctx: u64 as Ctx, event: u64 as Event, stream: u64 as Stream } -> Empty;
    /// `cuEventQuery`.
    EventQuery = 0x0704, sync { ctx: u64 as Ctx, event: u64 as Event } -> Empty;
    /// `cuEventSynchronize`.
    EventSynchronize = 0x0705, sync + latched { ctx: u64 as Ctx, event: u64 as Event } -> Empty;
    /// `cuEventElapsedTime`.
    EventElapsedTime = 0x0706, sync { ctx: u64 as Ctx, start: u64 as Event, end: u64 as Event } -> ElapsedReply;
        }
    };
}

macro_rules! messages {
    ($(
        $(#[$m:meta])*
        $name:ident = $op:literal, $mode:ident $(+ $flag:ident)? {
            $($(#[$fm:meta])* $f:ident : $t:ty $(as $role:ident)?),* $(,)?
        } -> $reply:ty;
    )*) => {
        $(
            crate::wire_struct! {
                $(#[$m])*
                pub struct $name { $($(#[$fm])* pub $f: $t),* }
            }
            impl Call for $name {
                const OPCODE: u16 = $op;
                const ASYNC: bool = messages!(@async $mode);
                const REPORTS_LATCHED: bool = false $(|| messages!(@flag $flag))?;
                type Reply = $reply;
                const NAME: &'static str = stringify!($name);
                const FIELDS: &'static [FieldInfo] = &[$(FieldInfo {
                    name: stringify!($f),
                    ty: stringify!($t),
                    role: messages!(@role $($role)?),
                }),*];
                #[allow(unused_mut)]
                fn handles(&self) -> Handles {
                    let h = Handles::default();
                    $($(let h = h.with(Role::$role, self.$f);)?)*
                    h
                }
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

            /// The request's role-carrying fields.
            pub fn handles(&self) -> Handles {
                match self {
                    $(Request::$name(r) => r.handles(),)*
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

        /// `(opcode, name, async, reports latched errors, fields)` of every request, in
        /// declaration order: the table as data (docs checks, tools).
        pub const CALLS: &[CallInfo] = &[$(CallInfo {
            opcode: $op,
            name: stringify!($name),
            is_async: <$name as Call>::ASYNC,
            reports_latched: <$name as Call>::REPORTS_LATCHED,
            fields: <$name as Call>::FIELDS,
        }),*];
    };
    (@async sync) => { false };
    (@async async) => { true };
    (@flag latched) => { true };
    (@role) => { None };
    (@role $role:ident) => { Some(Role::$role) };
}

/// One request of the table, as data.
#[derive(Debug, Clone, Copy)]
pub struct CallInfo {
    pub opcode: u16,
    pub name: &'static str,
    pub is_async: bool,
    pub reports_latched: bool,
    pub fields: &'static [FieldInfo],
}

crate::for_each_call!(messages);

/// `CtxCreate` flag bit marking the device's primary context.
pub const CTX_FLAG_PRIMARY: u32 = 1 << 31;

/// `Launch` flag: cooperative launch (`cuLaunchCooperativeKernel`).
pub const LAUNCH_FLAG_COOPERATIVE: u32 = 1 << 0;
