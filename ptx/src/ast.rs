//! Untyped syntax tree produced by [`crate::parser`] and consumed by [`crate::lower`].

/// A state space of a variable or memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateSpace {
    /// Registers (`.reg`).
    Reg,
    /// Global memory.
    Global,
    /// Constant bank (module `.const` variables; kept in the arena).
    Const,
    /// Per-block shared memory.
    Shared,
    /// Per-thread local memory.
    Local,
    /// Kernel or function parameters.
    Param,
}

/// Scalar PTX type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ty {
    Pred,
    B8,
    B16,
    B32,
    B64,
    B128,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F16x2,
    /// Two 16-bit integers packed in 32 bits (`min`/`max` on halves).
    S16x2,
    U16x2,
    Bf16,
    Bf16x2,
    Tf32,
    F32,
    F64,
}

impl Ty {
    /// Parses a type modifier (without the dot).
    pub fn from_mod(s: &str) -> Option<Ty> {
        Some(match s {
            "pred" => Ty::Pred,
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "b128" => Ty::B128,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "f16x2" => Ty::F16x2,
            "s16x2" => Ty::S16x2,
            "u16x2" => Ty::U16x2,
            "bf16" => Ty::Bf16,
            "bf16x2" => Ty::Bf16x2,
            "tf32" => Ty::Tf32,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            _ => return None,
        })
    }

    /// Size in bytes (a predicate counts as 1).
    pub fn size(self) -> u32 {
        match self {
            Ty::Pred | Ty::B8 | Ty::U8 | Ty::S8 => 1,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 => 2,
            Ty::B32
            | Ty::U32
            | Ty::S32
            | Ty::F32
            | Ty::F16x2
            | Ty::S16x2
            | Ty::U16x2
            | Ty::Bf16x2
            | Ty::Tf32 => 4,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 8,
            Ty::B128 => 16,
        }
    }

    /// Bits.
    pub fn bits(self) -> u32 {
        self.size() * 8
    }

    /// Signed integer type.
    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    /// Floating-point type (incl. half and packed halves).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            Ty::F16 | Ty::F16x2 | Ty::Bf16 | Ty::Bf16x2 | Ty::F32 | Ty::F64 | Ty::Tf32
        )
    }
}

/// An instruction operand as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A register, special register, symbol or label name (`%r1`, `%tid.x`, `$str`, `$L__BB0_1`).
    Name(String),
    /// `name+offset` outside brackets (`mov.u64 %rd1, $str+4`).
    NameOff(String, i64),
    /// An integer immediate (two's complement).
    Int(i64),
    /// A float immediate written as f32 bits (`0f…`).
    F32(u32),
    /// A float immediate written as f64 bits (`0d…` or decimal).
    F64(u64),
    /// `[base+offset]`; `base` is `None` for an absolute address `[imm]`.
    Addr(Option<String>, i64),
    /// `{a, b, …}`.
    Vector(Vec<Operand>),
    /// `a|b` (e.g. `shfl` value and predicate outputs).
    Pair(String, String),
    /// `!p` (negated predicate source).
    Not(String),
    /// `(a, b, …)` (call return and argument lists).
    List(Vec<Operand>),
}

/// One instruction statement.
#[derive(Debug, Clone)]
pub struct Instruction {
    /// Guard predicate: (negated, register name).
    pub guard: Option<(bool, String)>,
    /// Opcode (`ld`).
    pub opcode: String,
    /// Modifiers in order, without dots (`global`, `v2`, `f32`).
    pub mods: Vec<String>,
    /// Operands in order.
    pub operands: Vec<Operand>,
    /// Position.
    pub line: u32,
    pub col: u32,
}

/// One value of a variable initialiser.
#[derive(Debug, Clone, PartialEq)]
pub enum InitVal {
    Int(i64),
    F32(u32),
    F64(u64),
    /// Address of a symbol (+offset), possibly wrapped in `generic(...)`.
    Sym(String, i64),
}

/// A variable declaration (`.global`, `.const`, `.shared`, `.local`, `.param`).
#[derive(Debug, Clone)]
pub struct VarDecl {
    pub space: StateSpace,
    pub is_extern: bool,
    pub align: Option<u64>,
    /// Vector width (1, 2, 4).
    pub vec: u32,
    pub ty: Ty,
    pub name: String,
    /// Array dimensions; `None` entries are unsized (`x[]`).
    pub dims: Vec<Option<u64>>,
    pub init: Option<Vec<InitVal>>,
    pub line: u32,
    pub col: u32,
}

impl VarDecl {
    /// Total size in bytes (0 for unsized arrays), or `None` on overflow.
    pub fn size(&self) -> Option<u64> {
        let mut n = u64::from(self.ty.size()).checked_mul(u64::from(self.vec))?;
        for d in &self.dims {
            n = n.checked_mul(d.unwrap_or(0))?;
        }
        Some(n)
    }

    /// Alignment: explicit `.align` or the element size.
    pub fn alignment(&self) -> u64 {
        self.align
            .unwrap_or(u64::from(self.ty.size()) * u64::from(self.vec))
            .max(1)
    }
}

/// A register declaration: `.reg .b32 %r<10>;` or `.reg .f32 %f1, %f2;`.
#[derive(Debug, Clone)]
pub struct RegDecl {
    pub ty: Ty,
    /// (name or prefix, Some(count) for `prefix<count>`).
    pub names: Vec<(String, Option<u32>)>,
}

/// A statement of a function body.
#[derive(Debug, Clone)]
pub enum Stmt {
    Reg(RegDecl),
    Var(VarDecl),
    Label(String, u32, u32),
    Inst(Instruction),
    Block(Vec<Stmt>),
}

/// A `.entry` or `.func`.
#[derive(Debug, Clone)]
pub struct Function {
    pub is_entry: bool,
    pub name: String,
    pub rets: Vec<VarDecl>,
    pub params: Vec<VarDecl>,
    pub body: Option<Vec<Stmt>>,
    pub maxntid: Option<[u32; 3]>,
    pub reqntid: Option<[u32; 3]>,
    pub minnctapersm: Option<u32>,
    pub line: u32,
    pub col: u32,
}

/// A top-level item.
#[derive(Debug, Clone)]
pub enum Item {
    Var(VarDecl),
    Func(Function),
}

/// A parsed module.
#[derive(Debug, Clone, Default)]
pub struct AstModule {
    pub version: Option<(u32, u32)>,
    pub target: Option<String>,
    pub address_size: Option<u32>,
    pub items: Vec<Item>,
}
