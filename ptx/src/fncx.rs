//! What lowering one instruction sees: the per-function lowering context ([`FnCx`]: registers,
//! predicates, operands, memory references, labels, functions, frame variables), the modifier
//! list ([`Mods`]) and the lowering errors. The instruction families (`ops/`) lower through it;
//! the driver that walks a module and builds [`crate::ops::Func`]s is [`crate::lower`].

use std::collections::{BTreeSet, HashMap};

use crate::ast::{self, Instruction, Operand, StateSpace, Ty};
use crate::error::PtxError;
use crate::ir::{MemSpace, PReg, PSrc, Reg, Special, Src, Sym};
use crate::num::Rnd;

/// Most registers (or predicates) one function may use.
pub(crate) const MAX_REGS: u32 = 1 << 14;

/// Why one instruction could not be lowered.
pub(crate) enum LowerErr {
    /// Malformed: the whole module is rejected.
    Bad(PtxError),
    /// Well-formed but not implemented: becomes a run-time `Unsupported` if reached.
    Unsupported(String),
}

impl From<PtxError> for LowerErr {
    fn from(e: PtxError) -> Self {
        LowerErr::Bad(e)
    }
}

pub(crate) type LR<T> = Result<T, LowerErr>;

/// What a name in a function resolves to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Local {
    /// Frame-local memory at this offset (`.local` variables, `.param`s of `.func`s and call sequences).
    Frame(i64, u32),
    /// A module symbol.
    Sym(u32),
}

/// Per-function lowering context; the per-instruction helpers used by [`crate::ops`] live here.
pub(crate) struct FnCx<'a> {
    pub(crate) f: &'a ast::Function,
    pub(crate) syms: &'a mut Vec<Sym>,
    pub(crate) sym_names: &'a HashMap<String, u32>,
    pub(crate) func_names: &'a HashMap<String, u32>,
    pub(crate) funcs_ast: &'a [&'a ast::Function],
    pub(crate) kparams: HashMap<String, (u32, u32)>,
    pub(crate) regs: HashMap<String, Ty>,
    pub(crate) ranges: HashMap<String, (u32, Ty)>,
    pub(crate) reg_idx: HashMap<String, Reg>,
    pub(crate) pred_idx: HashMap<String, PReg>,
    pub(crate) nregs: u32,
    pub(crate) npreds: u32,
    pub(crate) cc: Option<PReg>,
    pub(crate) scopes: Vec<HashMap<String, Local>>,
    pub(crate) local_size: u64,
    pub(crate) labels: HashMap<String, u32>,
    pub(crate) syms_used: BTreeSet<u32>,
    pub(crate) callees: BTreeSet<u32>,
    pub(crate) line: u32,
    pub(crate) col: u32,
}

impl<'a> FnCx<'a> {
    /// An error at the current instruction.
    pub(crate) fn err(&self, msg: impl Into<String>) -> LowerErr {
        LowerErr::Bad(PtxError::new(self.line, self.col, msg))
    }

    pub(crate) fn scope_insert(&mut self, name: &str, l: Local) {
        if let Some(s) = self.scopes.last_mut() {
            s.insert(name.to_owned(), l);
        }
    }

    fn lookup_local(&self, name: &str) -> Option<Local> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    fn reg_type(&self, name: &str) -> Option<Ty> {
        if let Some(t) = self.regs.get(name) {
            return Some(*t);
        }
        let digits = name.len() - name.bytes().rev().take_while(u8::is_ascii_digit).count();
        let (prefix, num) = name.split_at(digits);
        if num.is_empty() || num.len() > 1 && num.starts_with('0') {
            return None;
        }
        let n: u32 = num.parse().ok()?;
        self.ranges
            .get(prefix)
            .filter(|(c, _)| n < *c)
            .map(|(_, t)| *t)
    }

    /// The register named `name` (not a predicate).
    pub(crate) fn reg(&mut self, name: &str) -> LR<Reg> {
        if name == "_" {
            return self.scratch("_");
        }
        match self.reg_type(name) {
            Some(Ty::Pred) => {
                Err(self.err(format!("`{name}` is a predicate, expected a register")))
            }
            Some(_) => self.scratch(name),
            None => Err(self.err(format!("undeclared register `{name}`"))),
        }
    }

    fn scratch(&mut self, name: &str) -> LR<Reg> {
        if let Some(&r) = self.reg_idx.get(name) {
            return Ok(r);
        }
        if self.nregs >= MAX_REGS {
            return Err(self.err("too many registers"));
        }
        let r = self.nregs;
        self.nregs += 1;
        self.reg_idx.insert(name.to_owned(), r);
        Ok(r)
    }

    /// The predicate register named `name`.
    pub(crate) fn pred(&mut self, name: &str) -> LR<PReg> {
        if name != "_" && self.reg_type(name) != Some(Ty::Pred) {
            return Err(self.err(format!("`{name}` is not a declared predicate")));
        }
        self.pred_slot(name)
    }

    fn pred_slot(&mut self, name: &str) -> LR<PReg> {
        if let Some(&r) = self.pred_idx.get(name) {
            return Ok(r);
        }
        if self.npreds >= MAX_REGS {
            return Err(self.err("too many predicates"));
        }
        let r = self.npreds;
        self.npreds += 1;
        self.pred_idx.insert(name.to_owned(), r);
        Ok(r)
    }

    /// The hidden carry flag (`.cc`).
    pub(crate) fn carry(&mut self) -> LR<PReg> {
        if let Some(c) = self.cc {
            return Ok(c);
        }
        let c = self.pred_slot("%%cc")?;
        self.cc = Some(c);
        Ok(c)
    }

    /// Is `name` a predicate register?
    pub(crate) fn is_pred(&self, name: &str) -> bool {
        self.reg_type(name) == Some(Ty::Pred)
    }

    /// A destination register operand.
    pub(crate) fn dst(&mut self, op: &Operand) -> LR<Reg> {
        match op {
            Operand::Name(n) => self.reg(n),
            _ => Err(self.err("expected a destination register")),
        }
    }

    /// A destination predicate operand.
    pub(crate) fn pdst(&mut self, op: &Operand) -> LR<PReg> {
        match op {
            Operand::Name(n) => self.pred(n),
            _ => Err(self.err("expected a destination predicate")),
        }
    }

    /// A predicate source: `%p`, `!%p`, or 0/1.
    pub(crate) fn psrc(&mut self, op: &Operand) -> LR<PSrc> {
        match op {
            Operand::Name(n) => Ok(PSrc::Reg(self.pred(n)?, false)),
            Operand::Not(n) => Ok(PSrc::Reg(self.pred(n)?, true)),
            Operand::Int(v) => Ok(PSrc::Const(*v != 0)),
            _ => Err(self.err("expected a predicate")),
        }
    }

    /// Converts an immediate to the bit pattern of `ty`.
    pub(crate) fn imm(&self, op: &Operand, ty: Ty) -> LR<u64> {
        use crate::num::f32_to_f16;
        Ok(match *op {
            Operand::Int(v) => match ty {
                Ty::F32 => u64::from((v as f32).to_bits()),
                Ty::F64 => (v as f64).to_bits(),
                _ => v as u64,
            },
            Operand::F32(b) => match ty {
                Ty::F64 => f64::from(f32::from_bits(b)).to_bits(),
                Ty::F16 => u64::from(f32_to_f16(f32::from_bits(b))),
                _ => u64::from(b),
            },
            Operand::F64(b) => match ty {
                Ty::F32 => u64::from((f64::from_bits(b) as f32).to_bits()),
                Ty::F16 => u64::from(f32_to_f16(f64::from_bits(b) as f32)),
                Ty::F64 => b,
                _ => f64::from_bits(b) as i64 as u64,
            },
            _ => return Err(self.err("expected an immediate")),
        })
    }

    /// A source operand of type `ty`: register, immediate, special register or symbol address.
    pub(crate) fn src(&mut self, op: &Operand, ty: Ty) -> LR<Src> {
        match op {
            Operand::Int(_) | Operand::F32(_) | Operand::F64(_) => Ok(Src::Imm(self.imm(op, ty)?)),
            Operand::Name(n) => self.name_src(n, 0),
            Operand::NameOff(n, off) => self.name_src(n, *off),
            _ => Err(self.err("expected a register or immediate")),
        }
    }

    fn name_src(&mut self, n: &str, off: i64) -> LR<Src> {
        if off == 0 {
            if let Some(t) = self.reg_type(n) {
                if t == Ty::Pred {
                    return Err(self.err(format!("predicate `{n}` used as a value")));
                }
                return Ok(Src::Reg(self.reg(n)?));
            }
            if n == "_" {
                return Ok(Src::Reg(self.reg(n)?));
            }
            if let Some(s) = Special::from_name(n) {
                return Ok(Src::Special(s));
            }
        }
        match self.addr_of(n)? {
            (_, Src::Sym(id, o)) => Ok(Src::Sym(id, o.wrapping_add(off))),
            (_, Src::Local(o)) => Ok(Src::Local(o.wrapping_add(off))),
            (_, Src::Imm(o)) => Ok(Src::Imm(o.wrapping_add(off as u64))),
            (_, s) => Ok(s),
        }
    }

    /// The state space and address of a variable name.
    fn addr_of(&mut self, n: &str) -> LR<(MemSpace, Src)> {
        if let Some(l) = self.lookup_local(n) {
            return Ok(match l {
                Local::Frame(off, _) => (MemSpace::Local, Src::Local(off)),
                Local::Sym(id) => self.sym_ref(id),
            });
        }
        if let Some(&(off, _)) = self.kparams.get(n) {
            return Ok((MemSpace::KParam, Src::Imm(u64::from(off))));
        }
        if let Some(&id) = self.sym_names.get(n) {
            return Ok(self.sym_ref(id));
        }
        if self.func_names.contains_key(n) {
            return Err(LowerErr::Unsupported(format!("address of function `{n}`")));
        }
        if n.starts_with('%') {
            return Err(self.err(format!("undeclared register `{n}`")));
        }
        Err(self.err(format!("unknown name `{n}`")))
    }

    fn sym_ref(&mut self, id: u32) -> (MemSpace, Src) {
        self.syms_used.insert(id);
        let space = self
            .syms
            .get(id as usize)
            .map_or(StateSpace::Global, |s| s.space);
        (MemSpace::from_state(space), Src::Sym(id, 0))
    }

    /// A memory operand `[reg+off]`, `[name+off]`, `[imm]` for an instruction in `space`.
    /// Returns the space actually addressed (a `.param` name may be frame-local), base and offset.
    pub(crate) fn mem(&mut self, op: &Operand, space: MemSpace) -> LR<(MemSpace, Src, i64)> {
        let Operand::Addr(base, off) = op else {
            return Err(self.err("expected an address operand `[...]`"));
        };
        let Some(name) = base else {
            return Ok((space, Src::Imm(*off as u64), 0));
        };
        if let Some(t) = self.reg_type(name) {
            if t == Ty::Pred {
                return Err(self.err("predicate used as an address"));
            }
            let r = self.reg(name)?;
            let sp = if space == MemSpace::KParam && !self.f.is_entry {
                MemSpace::Local
            } else {
                space
            };
            return Ok((sp, Src::Reg(r), *off));
        }
        let (sp, base) = self.addr_of(name)?;
        let sp = match (space, sp) {
            // `ld.param [name]` inside a function or call sequence: frame-local.
            (MemSpace::KParam, MemSpace::Local) => MemSpace::Local,
            // Generic access to a variable: its own space.
            (MemSpace::Generic, s) => s,
            (s, _) => s,
        };
        Ok((sp, base, *off))
    }

    /// A branch target label.
    pub(crate) fn label(&self, op: &Operand) -> LR<u32> {
        match op {
            Operand::Name(n) => self
                .labels
                .get(n)
                .copied()
                .ok_or_else(|| self.err(format!("unknown label `{n}`"))),
            _ => Err(self.err("expected a label")),
        }
    }

    /// A called function: its index and whether it has a body.
    pub(crate) fn function(&mut self, name: &str) -> LR<(u32, &'a ast::Function)> {
        let id = *self
            .func_names
            .get(name)
            .ok_or_else(|| self.err(format!("unknown function `{name}`")))?;
        let f = self
            .funcs_ast
            .get(id as usize)
            .copied()
            .ok_or_else(|| self.err("bad function"))?;
        self.callees.insert(id);
        Ok((id, f))
    }

    /// Frame offset and size of a `.param` variable visible here (call-sequence argument).
    pub(crate) fn frame_var(&self, name: &str) -> LR<(i64, u32)> {
        match self.lookup_local(name) {
            Some(Local::Frame(off, size)) => Ok((off, size)),
            _ => Err(self.err(format!("`{name}` is not a .param/.local variable in scope"))),
        }
    }
}

/// Modifier list of an instruction with "consumed" tracking: every family takes the modifiers it
/// understands; anything left makes the instruction unsupported rather than silently misread.
pub(crate) struct Mods<'i> {
    list: &'i [String],
    used: u64,
}

impl<'i> Mods<'i> {
    pub(crate) fn new(list: &'i [String]) -> Self {
        Mods { list, used: 0 }
    }
    fn mark(&mut self, i: usize) {
        if i < 64 {
            self.used |= 1 << i;
        }
    }
    /// Takes modifier `m` if present.
    pub(crate) fn has(&mut self, m: &str) -> bool {
        match self.list.iter().position(|x| x == m) {
            Some(i) => {
                self.mark(i);
                true
            }
            None => false,
        }
    }
    /// Takes the first modifier from `opts` present.
    pub(crate) fn one_of(&mut self, opts: &[&'static str]) -> Option<&'static str> {
        for (i, x) in self.list.iter().enumerate() {
            if let Some(o) = opts.iter().find(|o| **o == x.as_str()) {
                self.mark(i);
                return Some(o);
            }
        }
        None
    }
    /// Takes all type modifiers, in order.
    pub(crate) fn types(&mut self) -> Vec<Ty> {
        let mut v = Vec::new();
        for (i, x) in self.list.iter().enumerate() {
            if let Some(t) = Ty::from_mod(x) {
                self.mark(i);
                v.push(t);
            }
        }
        v
    }
    /// Takes the single type modifier.
    pub(crate) fn ty(&mut self) -> LR<Ty> {
        let t = self.types();
        match t.as_slice() {
            [t] => Ok(*t),
            _ => Err(LowerErr::Unsupported(format!(
                "expected one type modifier, got {}",
                t.len()
            ))),
        }
    }

    /// The IEEE rounding modifier (`.rn`, `.rz`, `.rm`, `.rp`), if there is one.
    pub(crate) fn rnd(&mut self) -> Option<Rnd> {
        Some(match self.one_of(&["rn", "rz", "rm", "rp"])? {
            "rn" => Rnd::Rn,
            "rz" => Rnd::Rz,
            "rm" => Rnd::Rm,
            _ => Rnd::Rp,
        })
    }

    /// Takes (ignores) every modifier that only affects caching, ordering scope or hints.
    pub(crate) fn ignore_hints(&mut self) {
        for (i, x) in self.list.iter().enumerate() {
            if matches!(
                x.as_str(),
                "ca" | "cg"
                    | "cs"
                    | "lu"
                    | "cv"
                    | "wb"
                    | "wt"
                    | "nc"
                    | "volatile"
                    | "relaxed"
                    | "acquire"
                    | "release"
                    | "acq_rel"
                    | "weak"
                    | "sys"
                    | "gpu"
                    | "cta"
                    | "cluster"
                    | "mmio"
                    | "uni"
                    | "sync"
                    | "aligned"
            ) || x.contains("::")
            {
                self.mark(i);
            }
        }
    }

    /// Fails if any modifier was not taken.
    pub(crate) fn finish(self) -> LR<()> {
        for (i, x) in self.list.iter().enumerate() {
            if i >= 64 || self.used & (1 << i) == 0 {
                return Err(LowerErr::Unsupported(format!("modifier `.{x}`")));
            }
        }
        Ok(())
    }
}

/// Checks the operand count of an instruction.
pub(crate) fn arity(cx: &FnCx<'_>, i: &Instruction, n: usize) -> LR<()> {
    if i.operands.len() != n {
        return Err(cx.err(format!(
            "`{}` takes {n} operands, found {}",
            i.opcode,
            i.operands.len()
        )));
    }
    Ok(())
}
