//! Lowering: syntax tree → [`crate::ir`]. Resolves names (registers, variables, labels, functions),
//! lays out frames and module variables, and computes reconvergence points.

use std::collections::{BTreeSet, HashMap};

use crate::ast::{self, InitVal, Instruction, Item, StateSpace, Stmt, Ty, VarDecl};
use crate::cfg;
use crate::error::PtxError;
use crate::fncx::{FnCx, Local, LowerErr};
use crate::ir::Sym;
use crate::ops::{self, Op};
use crate::ops::{Func, Inst};

/// Largest byte size of a module variable's initialiser (the rest of the variable is zero).
const MAX_INIT_BYTES: u64 = 1 << 26;

/// Result of lowering a whole module.
pub(crate) struct Lowered {
    pub(crate) funcs: Vec<Func>,
    pub(crate) syms: Vec<Sym>,
}

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
                Ty::F16 => u64::from(crate::num::f32_to_f16(f32::from_bits(b))),
                _ => u64::from(b),
            },
            InitVal::F64(b) => match v.ty {
                Ty::F32 => u64::from((f64::from_bits(b) as f32).to_bits()),
                Ty::F16 => u64::from(crate::num::f32_to_f16(f64::from_bits(b) as f32)),
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
}

fn inst_text(i: &Instruction) -> String {
    let mut s = i.opcode.clone();
    for m in &i.mods {
        s.push('.');
        s.push_str(m);
    }
    s
}
