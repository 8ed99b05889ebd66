//! The pre-decoded IR the interpreter executes: registers are indices, types and modifiers resolved,
//! labels are instruction indices, reconvergence points precomputed.

use crate::ast::StateSpace;

/// Index of a 64-bit-per-lane register in the current frame.
pub(crate) type Reg = u32;
/// Index of a predicate register (one bit per lane) in the current frame.
pub(crate) type PReg = u32;

/// "No reconvergence point / no return address".
pub(crate) const NONE: u32 = u32::MAX;

/// A source operand, materialised to 32 lane values by the executor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Src {
    Reg(Reg),
    Imm(u64),
    Special(Special),
    /// Address of module symbol `idx` in its own state space, plus an offset (resolved per launch).
    Sym(u32, i64),
    /// Local-space address inside the current frame: frame base + offset.
    Local(i64),
}

/// A predicate source: register (possibly negated) or constant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PSrc {
    Reg(PReg, bool),
    Const(bool),
}

/// Special registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    SmId,
    NSmId,
    GridId,
    Clock,
    Clock64,
    GlobalTimer,
    LaneMaskEq,
    LaneMaskLt,
    LaneMaskLe,
    LaneMaskGt,
    LaneMaskGe,
    DynamicSmemSize,
    TotalSmemSize,
    /// `WARP_SZ`, `%envregN` and other constants.
    Const(u32),
}

impl Special {
    /// Parses a special register name (`%tid.x`).
    pub(crate) fn from_name(n: &str) -> Option<Special> {
        let dim = |s: &str| match s {
            "x" => Some(0u8),
            "y" => Some(1),
            "z" => Some(2),
            _ => None,
        };
        if let Some((base, d)) = n.split_once('.') {
            let d = dim(d)?;
            return Some(match base {
                "%tid" => Special::Tid(d),
                "%ntid" => Special::Ntid(d),
                "%ctaid" => Special::Ctaid(d),
                "%nctaid" => Special::Nctaid(d),
                _ => return None,
            });
        }
        Some(match n {
            "%laneid" => Special::LaneId,
            "%warpid" => Special::WarpId,
            "%nwarpid" => Special::NWarpId,
            "%smid" => Special::SmId,
            "%nsmid" => Special::NSmId,
            "%gridid" => Special::GridId,
            "%clock" | "%clock_hi" => Special::Clock,
            "%clock64" => Special::Clock64,
            "%globaltimer" | "%globaltimer_lo" | "%globaltimer_hi" => Special::GlobalTimer,
            "%lanemask_eq" => Special::LaneMaskEq,
            "%lanemask_lt" => Special::LaneMaskLt,
            "%lanemask_le" => Special::LaneMaskLe,
            "%lanemask_gt" => Special::LaneMaskGt,
            "%lanemask_ge" => Special::LaneMaskGe,
            "%dynamic_smem_size" => Special::DynamicSmemSize,
            "%total_smem_size" => Special::TotalSmemSize,
            "WARP_SZ" => Special::Const(32),
            _ if n.starts_with("%envreg") => Special::Const(0),
            _ => return None,
        })
    }
}

/// Where a memory instruction goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemSpace {
    Global,
    Const,
    Shared,
    /// Per-thread local memory (also `.param` of `.func`s and call sequences).
    Local,
    /// Kernel parameters (read-only).
    KParam,
    Generic,
}

impl MemSpace {
    pub(crate) fn from_state(s: StateSpace) -> MemSpace {
        match s {
            StateSpace::Global => MemSpace::Global,
            StateSpace::Const => MemSpace::Const,
            StateSpace::Shared => MemSpace::Shared,
            StateSpace::Local => MemSpace::Local,
            StateSpace::Param => MemSpace::KParam,
            StateSpace::Reg => MemSpace::Generic,
        }
    }
}

/// A module-level variable (or a function-scope `.shared`/`.global`/`.const`, which is one too).
#[derive(Debug, Clone)]
pub(crate) struct Sym {
    pub(crate) name: String,
    pub(crate) space: StateSpace,
    pub(crate) size: u64,
    pub(crate) align: u64,
    /// Initial bytes (a prefix; the rest is zero).
    pub(crate) init: Vec<u8>,
    /// (byte offset, symbol, addend): 8-byte addresses of other symbols to patch in at load.
    pub(crate) relocs: Vec<(u64, u32, i64)>,
    /// `.extern .shared x[]`: the dynamic shared memory.
    pub(crate) dynamic: bool,
}
