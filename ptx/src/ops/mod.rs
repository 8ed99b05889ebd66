//! PTX instructions, one module per family. Each module declares its IR operation enum, its
//! lowering from the syntax tree (`lower`), its execution over a warp (`exec`) and its unit tests.
//! Each family claims its own opcodes ([`lower`] asks them in turn), so an opcode is spelled only
//! in its family.

pub(crate) mod atomic;
pub(crate) mod compare;
pub(crate) mod control;
pub(crate) mod convert;
pub(crate) mod data;
pub(crate) mod float;
pub(crate) mod int;
pub(crate) mod memory;
pub(crate) mod printf;
pub(crate) mod warp;

use crate::ast::Instruction;
use crate::cfg::{Branching, Flow};
use crate::error::ExecError;
use crate::ir::PReg;

use crate::fncx::{FnCx, LowerErr, LR};

/// The execution context of one instruction (crate::warp's, over this instruction set).
pub(crate) type Ctx<'a, 'e> = crate::warp::Ctx<'a, 'e, Func>;
/// A launch's state (crate::warp's, over this instruction set).
pub(crate) type Env<'a> = crate::warp::Env<'a, Func>;

/// One lowered operation.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Data(data::DataOp),
    Int(int::IntOp),
    Float(float::FloatOp),
    Cmp(compare::CmpOp),
    Cvt(convert::CvtOp),
    Mem(memory::MemOp),
    Atom(atomic::AtomOp),
    Warp(warp::WarpOp),
    Ctl(control::CtlOp),
    Printf(printf::PrintfOp),
}

/// One IR instruction: an operation, its guard and its source line.
#[derive(Debug, Clone)]
pub(crate) struct Inst {
    pub(crate) op: Op,
    pub(crate) guard: Option<(PReg, bool)>,
    pub(crate) line: u32,
}

/// A lowered `.entry` or `.func`.
#[derive(Debug, Clone)]
pub(crate) struct Func {
    pub(crate) name: String,
    pub(crate) is_entry: bool,
    /// `None` for `.extern` declarations without a body.
    pub(crate) code: Option<Vec<Inst>>,
    pub(crate) nregs: u32,
    pub(crate) npreds: u32,
    /// Bytes of per-thread local memory of one frame (locals + params of calls).
    pub(crate) local_size: u64,
    /// Frame offsets and sizes of the formal parameters (`.func`).
    pub(crate) params: Vec<(i64, u32)>,
    /// Frame offsets and sizes of the return values (`.func`).
    pub(crate) rets: Vec<(i64, u32)>,
    /// Module symbols referenced (for shared-memory layout).
    pub(crate) syms_used: Vec<u32>,
    /// Functions called.
    pub(crate) callees: Vec<u32>,
}

impl Branching for Inst {
    fn flow(&self) -> Flow {
        self.op.flow()
    }

    fn is_guarded(&self) -> bool {
        self.guard.is_some()
    }

    fn set_reconvergence(&mut self, rpc: u32) {
        self.op.set_reconvergence(rpc);
    }
}

/// Lowers one instruction. Each family claims its own opcodes (its `lower` answers `None` for
/// the rest), so an opcode is spelled only in its family. Where two families share a name the
/// order decides: a float-typed `add` is float's; `and`/`or`/`xor`/`not` on predicates are
/// compare's; integer is asked last.
pub(crate) fn lower(i: &Instruction, cx: &mut FnCx<'_>) -> LR<Op> {
    macro_rules! ask {
        ($($family:ident => $variant:expr),* $(,)?) => {$(
            if let Some(op) = $family::lower(i, cx)? {
                return Ok($variant(op));
            }
        )*};
    }
    ask! {
        data => Op::Data,
        float => Op::Float,
        compare => Op::Cmp,
        convert => Op::Cvt,
        memory => Op::Mem,
        atomic => Op::Atom,
        warp => Op::Warp,
        control => std::convert::identity,
        int => Op::Int,
    }
    Err(LowerErr::Unsupported(format!("opcode `{}`", i.opcode)))
}

/// Executes a non-control operation on the lanes of `mask`.
#[inline(always)]
pub(crate) fn exec(op: &Op, cx: &mut Ctx<'_, '_>, mask: u32) -> Result<(), ExecError> {
    match op {
        Op::Data(o) => data::exec(o, cx, mask),
        Op::Int(o) => int::exec(o, cx, mask),
        Op::Float(o) => float::exec(o, cx, mask),
        Op::Cmp(o) => compare::exec(o, cx, mask),
        Op::Cvt(o) => convert::exec(o, cx, mask),
        Op::Mem(o) => memory::exec(o, cx, mask),
        Op::Atom(o) => atomic::exec(o, cx, mask),
        Op::Warp(o) => warp::exec(o, cx, mask),
        Op::Printf(o) => printf::exec(o, cx, mask),
        Op::Ctl(_) => Ok(()),
    }
}

impl Op {
    /// Control-flow effect (for the CFG).
    pub(crate) fn flow(&self) -> Flow {
        match self {
            Op::Ctl(c) => c.flow(),
            _ => Flow::Next,
        }
    }

    /// Records the reconvergence pc of a branch.
    pub(crate) fn set_reconvergence(&mut self, rpc: u32) {
        if let Op::Ctl(c) = self {
            c.set_reconvergence(rpc);
        }
    }
}

/// Shared test harness: parse a kernel, run it, read results back.
#[cfg(test)]
pub(crate) mod testutil {
    use crate::memory::Arena;
    use crate::{launch, LaunchConfig, LaunchOptions, LoadedModule, Module};
    use std::sync::Arc;

    /// Runs `body` (the statements of a kernel taking one `.u64` output pointer `%rd_out`, with 32
    /// `.b32 %r`, 16 `.b64 %rd`, 16 `.f32 %f`, 16 `.f64 %fd`, 8 `.pred %p`, 8 `.b16 %h` registers
    /// declared) on `threads` threads of one block and returns the first `n_out` u64 of the output
    /// buffer (zero-initialised).
    pub(crate) fn run_kernel(
        body: &str,
        threads: u32,
        n_out: usize,
    ) -> Result<Vec<u64>, crate::ExecError> {
        let src = format!(
            ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry t(.param .u64 out)\n{{\n\
             .reg .b32 %r<32>;\n.reg .b64 %rd<16>;\n.reg .f32 %f<16>;\n.reg .f64 %fd<16>;\n.reg .pred %p<8>;\n.reg .b16 %h<8>;\n\
             .reg .b64 %rd_out;\nld.param.u64 %rd_out, [out];\n{body}\nret;\n}}\n"
        );
        let m = Arc::new(Module::parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}")));
        let arena = Arena::new(1 << 20, 1 << 30);
        let lm = LoadedModule::load(m, &arena).unwrap();
        let buf = arena.alloc((n_out.max(1) * 8) as u64, 8).unwrap();
        let cfg = LaunchConfig {
            grid: [1, 1, 1],
            block: [threads, 1, 1],
            dynamic_shared_bytes: 0,
        };
        let opts = LaunchOptions {
            instruction_budget: 1 << 20,
            printf: &|_| {},
            parallel: false,
            time_limit: None,
            cancel: None,
        };
        launch(&lm, "t", &cfg, &buf.to_le_bytes(), &arena, &opts)?;
        let mut out = vec![0u8; n_out * 8];
        arena.read(buf, &mut out).unwrap();
        Ok(out
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }

    /// Like [`run_kernel`] on one thread, storing the `.b64` register `%rd1` … as results: `body` must
    /// leave its results in `%rd1..%rdN` (N = `n`).
    pub(crate) fn eval(body: &str, n: usize) -> Vec<u64> {
        let mut b = body.to_owned();
        for i in 0..n {
            b.push_str(&format!(
                "\nst.global.u64 [%rd_out+{}], %rd{};",
                i * 8,
                i + 1
            ));
        }
        run_kernel(&b, 1, n).unwrap()
    }
}

#[cfg(test)]
mod dispatch_tests {
    use super::*;
    use crate::Module;

    /// The family each statement of a kernel body was lowered to.
    fn families(body: &str) -> Vec<&'static str> {
        let src = format!(
            ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry t()\n{{\n\
             .reg .b32 %r<8>;\n.reg .f32 %f<8>;\n.reg .pred %p<4>;\n{body}\n}}\n"
        );
        let m = Module::parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
        let code = m.funcs[0].code.as_ref().expect("a body");
        code.iter()
            .map(|inst| match &inst.op {
                Op::Data(_) => "data",
                Op::Int(_) => "int",
                Op::Float(_) => "float",
                Op::Cmp(_) => "compare",
                Op::Cvt(_) => "convert",
                Op::Mem(_) => "memory",
                Op::Atom(_) => "atomic",
                Op::Warp(_) => "warp",
                Op::Ctl(control::CtlOp::Unsupported(_)) => "unsupported",
                Op::Ctl(_) => "control",
                Op::Printf(_) => "printf",
            })
            .collect()
    }

    #[test]
    fn each_family_claims_its_own_opcodes_and_shared_names_go_by_type() {
        let got = families(
            "add.f32 %f1, %f2, %f3;\n add.u32 %r1, %r2, %r3;\n and.pred %p1, %p2, %p3;\n\
             and.b32 %r1, %r2, %r3;\n mad.rn.f32 %f1, %f2, %f3, %f4;\n mad.lo.s32 %r1, %r2, %r3, %r4;\n\
             setp.lt.f32 %p1, %f1, %f2;\n cvt.rn.f32.s32 %f1, %r1;\n mov.u32 %r1, %r2;\n\
             shfl.sync.bfly.b32 %r1, %r2, 1, 31, -1;\n dp4a.u32.u32 %r1, %r2, %r3, %r4;\n\
             frobnicate.u32 %r1;\n ret;",
        );
        assert_eq!(
            got,
            [
                "float",
                "int",
                "compare",
                "int",
                "float",
                "int",
                "compare",
                "convert",
                "data",
                "warp",
                "unsupported",
                "unsupported",
                "control",
            ]
        );
    }
}
