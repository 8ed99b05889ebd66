//! Lowering: syntax tree → [`crate::ir`]. Resolves names (registers, variables, labels, functions),
//! lays out frames and module variables, and computes reconvergence points.

use std::collections::{BTreeSet, HashMap};

use crate::ast::{self, InitVal, Instruction, Item, Operand, StateSpace, Stmt, Ty, VarDecl};
use crate::cfg;
use crate::error::PtxError;
use crate::ir::{Func, Inst, MemSpace, PReg, PSrc, Reg, Special, Src};
use crate::ops::{self, Op};

/// Most registers (or predicates) one function may use.
pub(crate) const MAX_REGS: u32 = 1 << 14;
/// Largest byte size of a module variable's initialiser (the rest of the variable is zero).
const MAX_INIT_BYTES: u64 = 1 << 26;

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

/// Result of lowering a whole module.
pub(crate) struct Lowered {
    pub(crate) funcs: Vec<Func>,
    pub(crate) syms: Vec<Sym>,
}

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

/// Lowers a parsed module.
pub(crate) fn lower_module(m: &ast::AstModule) -> Result<Lowered, PtxError> {
    let mut syms: Vec<Sym> = Vec::new();
    let mut sym_names: HashMap<String, u32> = HashMap::new();
    let mut func_names: HashMap<String, u32> = HashMap::new();
    let mut funcs_ast = Vec::new();
    // Pass 1: names of module variables and functions (calls may precede definitions).
    for item in &m.items {
        match item {
            Item::Var(v) => {
                if sym_names.contains_key(&v.name) {
                    continue; // redeclaration of an extern
                }
                let id = syms.len() as u32;
                syms.push(new_sym(v)?);
                sym_names.insert(v.name.clone(), id);
            }
            Item::Func(f) => match func_names.get(&f.name) {
                Some(&id) => {
                    if f.body.is_some() {
                        funcs_ast[id as usize] = f;
                    }
                }
                None => {
                    func_names.insert(f.name.clone(), funcs_ast.len() as u32);
                    funcs_ast.push(f);
                }
            },
        }
    }
    // Initialisers may reference other symbols.
    for item in &m.items {
        if let Item::Var(v) = item {
            if let Some(init) = &v.init {
                let id = sym_names[&v.name] as usize;
                let (bytes, relocs) = init_bytes(v, init, &sym_names)?;
                syms[id].init = bytes;
                syms[id].relocs = relocs;
            }
        }
    }
    let mut funcs = Vec::with_capacity(funcs_ast.len());
    for f in &funcs_ast {
        let cx = FnCx::new(f, &mut syms, &sym_names, &func_names, &funcs_ast);
        funcs.push(cx.lower()?);
    }
    Ok(Lowered { funcs, syms })
}

fn new_sym(v: &VarDecl) -> Result<Sym, PtxError> {
    let size = v
        .size()
        .ok_or_else(|| PtxError::new(v.line, v.col, "variable size overflows"))?;
    let dynamic = v.dims.iter().any(Option::is_none);
    if !matches!(
        v.space,
        StateSpace::Global | StateSpace::Const | StateSpace::Shared
    ) {
        return Err(PtxError::new(
            v.line,
            v.col,
            "only .global, .const and .shared variables may be declared here",
        ));
    }
    if dynamic && (v.space != StateSpace::Shared || !v.is_extern) && v.init.is_none() {
        return Err(PtxError::new(
            v.line,
            v.col,
            "unsized array must be `.extern .shared`",
        ));
    }
    Ok(Sym {
        name: v.name.clone(),
        space: v.space,
        size,
        align: v.alignment(),
        init: Vec::new(),
        relocs: Vec::new(),
        dynamic: dynamic && v.init.is_none(),
    })
}

type Relocs = Vec<(u64, u32, i64)>;

fn init_bytes(
    v: &VarDecl,
    init: &[InitVal],
    names: &HashMap<String, u32>,
) -> Result<(Vec<u8>, Relocs), PtxError> {
    let err = |m: &str| PtxError::new(v.line, v.col, m);
    let es = u64::from(v.ty.size());
    let total = v.size().ok_or_else(|| err("variable size overflows"))?;
    let needed = es * init.len() as u64;
    if needed > MAX_INIT_BYTES {
        return Err(err("initialiser too large"));
    }
    if !v.dims.iter().any(Option::is_none) && needed > total {
        return Err(err("more initialiser values than elements"));
    }
    let mut out = Vec::with_capacity(needed as usize);
    let mut relocs = Vec::new();
    for val in init {
        let bits: u64 = match (*val).clone() {
            InitVal::Int(i) => match v.ty {
                Ty::F32 => u64::from((i as f32).to_bits()),
                Ty::F64 => (i as f64).to_bits(),
                _ => i as u64,
            },
            InitVal::F32(b) => match v.ty {
                Ty::F64 => f64::from(f32::from_bits(b)).to_bits(),
                Ty::F16 => u64::from(crate::ops::convert::f32_to_f16(f32::from_bits(b))),
                _ => u64::from(b),
            },
            InitVal::F64(b) => match v.ty {
                Ty::F32 => u64::from((f64::from_bits(b) as f32).to_bits()),
                Ty::F16 => u64::from(crate::ops::convert::f32_to_f16(f64::from_bits(b) as f32)),
                _ => b,
            },
            InitVal::Sym(name, add) => {
                let id = *names
                    .get(&name)
                    .ok_or_else(|| err(&format!("unknown symbol `{name}` in initialiser")))?;
                if es != 8 {
                    return Err(err("symbol addresses need a 64-bit element type"));
                }
                relocs.push((out.len() as u64, id, add));
                0
            }
        };
        out.extend_from_slice(&bits.to_le_bytes()[..es as usize]);
    }
    Ok((out, relocs))
}

/// What a name in a function resolves to.
#[derive(Debug, Clone, Copy)]
enum Local {
    /// Frame-local memory at this offset (`.local` variables, `.param`s of `.func`s and call sequences).
    Frame(i64, u32),
    /// A module symbol.
    Sym(u32),
}

/// Per-function lowering context; the per-instruction helpers used by [`crate::ops`] live here.
pub(crate) struct FnCx<'a> {
    f: &'a ast::Function,
    syms: &'a mut Vec<Sym>,
    sym_names: &'a HashMap<String, u32>,
    func_names: &'a HashMap<String, u32>,
    funcs_ast: &'a [&'a ast::Function],
    kparams: HashMap<String, (u32, u32)>,
    regs: HashMap<String, Ty>,
    ranges: HashMap<String, (u32, Ty)>,
    reg_idx: HashMap<String, Reg>,
    pred_idx: HashMap<String, PReg>,
    nregs: u32,
    npreds: u32,
    cc: Option<PReg>,
    scopes: Vec<HashMap<String, Local>>,
    local_size: u64,
    labels: HashMap<String, u32>,
    syms_used: BTreeSet<u32>,
    callees: BTreeSet<u32>,
    pub(crate) line: u32,
    pub(crate) col: u32,
}

impl<'a> FnCx<'a> {
    fn new(
        f: &'a ast::Function,
        syms: &'a mut Vec<Sym>,
        sym_names: &'a HashMap<String, u32>,
        func_names: &'a HashMap<String, u32>,
        funcs_ast: &'a [&'a ast::Function],
    ) -> Self {
        FnCx {
            f,
            syms,
            sym_names,
            func_names,
            funcs_ast,
            kparams: HashMap::new(),
            regs: HashMap::new(),
            ranges: HashMap::new(),
            reg_idx: HashMap::new(),
            pred_idx: HashMap::new(),
            nregs: 0,
            npreds: 0,
            cc: None,
            scopes: vec![HashMap::new()],
            local_size: 16,
            labels: HashMap::new(),
            syms_used: BTreeSet::new(),
            callees: BTreeSet::new(),
            line: f.line,
            col: f.col,
        }
    }

    /// An error at the current instruction.
    pub(crate) fn err(&self, msg: impl Into<String>) -> LowerErr {
        LowerErr::Bad(PtxError::new(self.line, self.col, msg))
    }

    fn alloc_frame(&mut self, size: u64, align: u64) -> Result<i64, PtxError> {
        let off = self.local_size.div_ceil(align.max(1)) * align.max(1);
        self.local_size = off
            .checked_add(size)
            .filter(|&e| e <= crate::memory::LOCAL_LIMIT)
            .ok_or_else(|| {
                PtxError::new(
                    self.line,
                    self.col,
                    "local memory of the function too large",
                )
            })?;
        Ok(off as i64)
    }

    fn lower(mut self) -> Result<Func, PtxError> {
        let f = self.f;
        let mut params = Vec::new();
        let mut rets = Vec::new();
        if f.is_entry {
            let mut off = 0u64;
            for p in &f.params {
                let size = p.size().filter(|&s| s > 0 && s < 1 << 16).ok_or_else(|| {
                    PtxError::new(
                        p.line,
                        p.col,
                        format!("bad size of kernel parameter `{}`", p.name),
                    )
                })?;
                let align = p.alignment();
                off = off.div_ceil(align) * align;
                self.kparams
                    .insert(p.name.clone(), (off as u32, size as u32));
                off += size;
                if off > 1 << 16 {
                    return Err(PtxError::new(p.line, p.col, "kernel parameters too large"));
                }
            }
        } else {
            for (list, out) in [(&f.params, &mut params), (&f.rets, &mut rets)] {
                for p in list {
                    let size = p.size().filter(|&s| s > 0 && s < 1 << 16).ok_or_else(|| {
                        PtxError::new(p.line, p.col, format!("bad size of parameter `{}`", p.name))
                    })?;
                    let off = self.alloc_frame(size, p.alignment().max(8))?;
                    self.scopes[0].insert(p.name.clone(), Local::Frame(off, size as u32));
                    out.push((off, size as u32));
                }
            }
        }
        let Some(body) = &f.body else {
            return Ok(Func {
                name: f.name.clone(),
                is_entry: f.is_entry,
                code: None,
                nregs: 0,
                npreds: 0,
                local_size: self.local_size,
                params,
                rets,
                syms_used: Vec::new(),
                callees: Vec::new(),
            });
        };
        // Labels first (branches may jump forward); every instruction lowers to exactly one IR op.
        let mut pc = 0u32;
        self.collect_labels(body, &mut pc)?;
        let mut code = Vec::with_capacity(pc as usize);
        self.stmts(body, &mut code)?;
        cfg::set_reconvergence(&mut code);
        Ok(Func {
            name: f.name.clone(),
            is_entry: f.is_entry,
            code: Some(code),
            nregs: self.nregs.max(1),
            npreds: self.npreds.max(1),
            local_size: self.local_size,
            params,
            rets,
            syms_used: self.syms_used.into_iter().collect(),
            callees: self.callees.into_iter().collect(),
        })
    }

    fn collect_labels(&mut self, body: &[Stmt], pc: &mut u32) -> Result<(), PtxError> {
        for s in body {
            match s {
                Stmt::Inst(_) => *pc += 1,
                Stmt::Label(n, l, c) => {
                    if self.labels.insert(n.clone(), *pc).is_some() {
                        return Err(PtxError::new(*l, *c, format!("duplicate label `{n}`")));
                    }
                }
                Stmt::Block(b) => self.collect_labels(b, pc)?,
                Stmt::Reg(_) | Stmt::Var(_) => {}
            }
        }
        Ok(())
    }

    fn stmts(&mut self, body: &[Stmt], code: &mut Vec<Inst>) -> Result<(), PtxError> {
        for s in body {
            match s {
                Stmt::Reg(r) => {
                    for (n, count) in &r.names {
                        match count {
                            Some(c) => {
                                self.ranges.insert(n.clone(), (*c, r.ty));
                            }
                            None => {
                                self.regs.insert(n.clone(), r.ty);
                            }
                        }
                    }
                }
                Stmt::Var(v) => self.local_var(v)?,
                Stmt::Label(..) => {}
                Stmt::Block(b) => {
                    if self.scopes.len() > 64 {
                        return Err(PtxError::new(
                            self.line,
                            self.col,
                            "scopes nested too deeply",
                        ));
                    }
                    self.scopes.push(HashMap::new());
                    self.stmts(b, code)?;
                    self.scopes.pop();
                }
                Stmt::Inst(i) => {
                    self.line = i.line;
                    self.col = i.col;
                    let guard = match &i.guard {
                        Some((neg, p)) => match self.pred(p) {
                            Ok(r) => Some((r, *neg)),
                            Err(LowerErr::Bad(e)) => return Err(e),
                            Err(LowerErr::Unsupported(_)) => None,
                        },
                        None => None,
                    };
                    let op = match ops::lower(i, self) {
                        Ok(op) => op,
                        Err(LowerErr::Bad(e)) => return Err(e),
                        Err(LowerErr::Unsupported(why)) => {
                            tracing::debug!(line = i.line, %why, "unsupported instruction");
                            Op::Ctl(ops::control::CtlOp::Unsupported(
                                inst_text(i).into_boxed_str(),
                            ))
                        }
                    };
                    code.push(Inst {
                        op,
                        guard,
                        line: i.line,
                    });
                }
            }
        }
        Ok(())
    }

    fn local_var(&mut self, v: &VarDecl) -> Result<(), PtxError> {
        self.line = v.line;
        self.col = v.col;
        match v.space {
            StateSpace::Local | StateSpace::Param => {
                if v.init.is_some() {
                    return Err(PtxError::new(
                        v.line,
                        v.col,
                        "initialisers of .local/.param are not supported",
                    ));
                }
                let size = v
                    .size()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| PtxError::new(v.line, v.col, "bad variable size"))?;
                let off = self.alloc_frame(size, v.alignment().max(8))?;
                let size32 = u32::try_from(size).unwrap_or(u32::MAX);
                self.scope_insert(&v.name, Local::Frame(off, size32));
            }
            StateSpace::Shared | StateSpace::Global | StateSpace::Const => {
                let mut s = new_sym(v)?;
                if let Some(init) = &v.init {
                    let (bytes, relocs) = init_bytes(v, init, self.sym_names)?;
                    s.init = bytes;
                    s.relocs = relocs;
                }
                let id = self.syms.len() as u32;
                self.syms.push(s);
                self.scope_insert(&v.name, Local::Sym(id));
            }
            StateSpace::Reg => return Err(PtxError::new(v.line, v.col, "unexpected .reg")),
        }
        Ok(())
    }

    fn scope_insert(&mut self, name: &str, l: Local) {
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
        use crate::ops::convert::f32_to_f16;
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

fn inst_text(i: &Instruction) -> String {
    let mut s = i.opcode.clone();
    for m in &i.mods {
        s.push('.');
        s.push_str(m);
    }
    s
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
