//! Recursive-descent parser: tokens → [`crate::ast::AstModule`].

use crate::ast::*;
use crate::error::PtxError;
use crate::lexer::{lex, Tok, Token};

/// Deepest nesting of `{ }` blocks accepted in a function body.
const MAX_NESTING: u32 = 64;
/// Largest number of initialiser values accepted for one variable.
pub(crate) const MAX_INIT_VALUES: usize = 1 << 22;

/// Parses PTX text into a syntax tree.
pub fn parse(src: &str) -> Result<AstModule, PtxError> {
    let toks = lex(src)?;
    let mut p = Parser { toks, pos: 0 };
    p.module()
}

struct Parser<'a> {
    toks: Vec<Token<'a>>,
    pos: usize,
}

type R<T> = Result<T, PtxError>;

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok<'a> {
        self.toks.get(self.pos).map_or(&Tok::Eof, |t| &t.tok)
    }
    fn peek_at(&self, n: usize) -> &Tok<'a> {
        self.toks.get(self.pos + n).map_or(&Tok::Eof, |t| &t.tok)
    }
    fn here(&self) -> (u32, u32) {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map_or((1, 1), |t| (t.line, t.col))
    }
    fn line(&self) -> u32 {
        self.here().0
    }
    fn bump(&mut self) -> Tok<'a> {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        let (l, c) = self.here();
        Err(PtxError::new(l, c, msg))
    }
    fn describe(&self) -> String {
        match self.peek() {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Dot(s) => format!("`.{s}`"),
            Tok::Int(v) => format!("integer {v}"),
            Tok::F32(_) | Tok::F64(_) => "float literal".into(),
            Tok::Str(_) => "string".into(),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Eof => "end of input".into(),
        }
    }
    fn is_punct(&self, c: char) -> bool {
        *self.peek() == Tok::Punct(c)
    }
    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_punct(&mut self, c: char) -> R<()> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            self.err(format!("expected `{c}`, found {}", self.describe()))
        }
    }
    fn ident(&mut self) -> R<String> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                self.pos += 1;
                Ok(s.to_owned())
            }
            _ => self.err(format!("expected a name, found {}", self.describe())),
        }
    }
    fn uint(&mut self) -> R<u64> {
        match self.peek().clone() {
            Tok::Int(v) => {
                self.pos += 1;
                Ok(v)
            }
            _ => self.err(format!("expected an integer, found {}", self.describe())),
        }
    }
    fn u32_val(&mut self) -> R<u32> {
        let v = self.uint()?;
        u32::try_from(v).or_else(|_| self.err("integer too large"))
    }
    /// Skips the rest of the current source line (for `.loc`, `.file`, `.version`, …).
    fn skip_line(&mut self, line: u32) {
        while self.peek() != &Tok::Eof && self.line() == line {
            self.pos += 1;
        }
    }
    fn skip_to_semicolon(&mut self) -> R<()> {
        loop {
            match self.bump() {
                Tok::Punct(';') => return Ok(()),
                Tok::Eof => return self.err("expected `;`, found end of input"),
                _ => {}
            }
        }
    }
    fn skip_braced(&mut self) -> R<()> {
        self.expect_punct('{')?;
        let mut depth = 1u32;
        while depth > 0 {
            match self.bump() {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => depth -= 1,
                Tok::Eof => return self.err("unbalanced `{`"),
                _ => {}
            }
        }
        Ok(())
    }

    fn module(&mut self) -> R<AstModule> {
        let mut m = AstModule::default();
        loop {
            let (line, _) = self.here();
            match self.peek().clone() {
                Tok::Eof => return Ok(m),
                Tok::Dot("version") => {
                    self.pos += 1;
                    if let Tok::F64(bits) = self.peek().clone() {
                        let v = f64::from_bits(bits);
                        m.version = Some((v as u32, ((v * 10.0).round() as u32) % 10));
                    }
                    self.skip_line(line);
                }
                Tok::Dot("target") => {
                    self.pos += 1;
                    if let Tok::Ident(t) = self.peek().clone() {
                        m.target = Some(t.to_owned());
                    }
                    self.skip_line(line);
                }
                Tok::Dot("address_size") => {
                    self.pos += 1;
                    let v = self.u32_val()?;
                    if v != 64 && v != 32 {
                        return self.err("address size must be 32 or 64");
                    }
                    m.address_size = Some(v);
                }
                Tok::Dot("file") | Tok::Dot("loc") => {
                    self.pos += 1;
                    self.skip_line(line);
                }
                Tok::Dot("section") => {
                    self.pos += 1;
                    while !self.is_punct('{') && self.peek() != &Tok::Eof {
                        self.pos += 1;
                    }
                    self.skip_braced()?;
                }
                Tok::Dot("pragma") | Tok::Dot("alias") => {
                    self.pos += 1;
                    self.skip_to_semicolon()?;
                }
                Tok::Dot(_) => self.item(&mut m)?,
                _ => return self.err(format!("expected a directive, found {}", self.describe())),
            }
        }
    }

    fn item(&mut self, m: &mut AstModule) -> R<()> {
        let mut is_extern = false;
        loop {
            match self.peek() {
                Tok::Dot("visible") | Tok::Dot("weak") | Tok::Dot("common") => self.pos += 1,
                Tok::Dot("extern") => {
                    is_extern = true;
                    self.pos += 1
                }
                _ => break,
            }
        }
        match self.peek() {
            Tok::Dot("entry") | Tok::Dot("func") => {
                let f = self.function(is_extern)?;
                m.items.push(Item::Func(f));
            }
            _ => {
                let mut v = self.var_decl(is_extern)?;
                self.expect_punct(';')?;
                v.is_extern = is_extern;
                m.items.push(Item::Var(v));
            }
        }
        Ok(())
    }

    fn space(&mut self) -> R<StateSpace> {
        let s = match self.peek() {
            Tok::Dot("global") => StateSpace::Global,
            Tok::Dot("const") => StateSpace::Const,
            Tok::Dot("shared") => StateSpace::Shared,
            Tok::Dot("local") => StateSpace::Local,
            Tok::Dot("param") => StateSpace::Param,
            Tok::Dot("reg") => StateSpace::Reg,
            _ => return self.err(format!("expected a state space, found {}", self.describe())),
        };
        self.pos += 1;
        Ok(s)
    }

    /// `[space] [.align N] [.ptr …] [.vN] .type name[dims] [= init]` (no `;`).
    fn var_decl(&mut self, is_extern: bool) -> R<VarDecl> {
        let (line, col) = self.here();
        let space = self.space()?;
        let mut align = None;
        let mut vec = 1;
        let mut ty = None;
        loop {
            match self.peek().clone() {
                Tok::Dot("align") => {
                    self.pos += 1;
                    let a = self.uint()?;
                    if !a.is_power_of_two() || a > 1 << 16 {
                        return self.err(format!("bad alignment {a}"));
                    }
                    align = Some(a);
                }
                Tok::Dot("ptr")
                | Tok::Dot("global")
                | Tok::Dot("const")
                | Tok::Dot("shared")
                | Tok::Dot("local") => self.pos += 1,
                Tok::Dot("v2") => {
                    vec = 2;
                    self.pos += 1
                }
                Tok::Dot("v4") => {
                    vec = 4;
                    self.pos += 1
                }
                Tok::Dot("v8") => {
                    vec = 8;
                    self.pos += 1
                }
                Tok::Dot(t) => match Ty::from_mod(t) {
                    Some(t) if ty.is_none() => {
                        ty = Some(t);
                        self.pos += 1
                    }
                    _ => return self.err(format!("unexpected `.{t}` in declaration")),
                },
                _ => break,
            }
        }
        let Some(ty) = ty else {
            return self.err("declaration without a type");
        };
        let name = self.ident()?;
        let mut dims = Vec::new();
        while self.eat_punct('[') {
            if self.eat_punct(']') {
                dims.push(None);
            } else {
                dims.push(Some(self.uint()?));
                self.expect_punct(']')?;
            }
            if dims.len() > 8 {
                return self.err("too many array dimensions");
            }
        }
        let mut init = None;
        if self.eat_punct('=') {
            let mut vals = Vec::new();
            self.init_vals(&mut vals, 0)?;
            init = Some(vals);
        }
        Ok(VarDecl {
            space,
            is_extern,
            align,
            vec,
            ty,
            name,
            dims,
            init,
            line,
            col,
        })
    }

    fn init_vals(&mut self, out: &mut Vec<InitVal>, depth: u32) -> R<()> {
        if depth > 8 {
            return self.err("initialiser nested too deeply");
        }
        if self.eat_punct('{') {
            if self.eat_punct('}') {
                return Ok(());
            }
            loop {
                self.init_vals(out, depth + 1)?;
                if out.len() > MAX_INIT_VALUES {
                    return self.err("initialiser too large");
                }
                if self.eat_punct('}') {
                    return Ok(());
                }
                self.expect_punct(',')?;
            }
        }
        let neg = self.eat_punct('-');
        let v = match self.peek().clone() {
            Tok::Int(v) => InitVal::Int(if neg {
                (v as i64).wrapping_neg()
            } else {
                v as i64
            }),
            Tok::F32(b) => InitVal::F32(if neg { b ^ 0x8000_0000 } else { b }),
            Tok::F64(b) => InitVal::F64(if neg { b ^ (1 << 63) } else { b }),
            Tok::Ident("generic") => {
                self.pos += 1;
                self.expect_punct('(')?;
                let n = self.ident()?;
                self.expect_punct(')')?;
                let off = self.opt_offset()?;
                out.push(InitVal::Sym(n, off));
                return Ok(());
            }
            Tok::Ident(n) => {
                self.pos += 1;
                let off = self.opt_offset()?;
                out.push(InitVal::Sym(n.to_owned(), off));
                return Ok(());
            }
            _ => {
                return self.err(format!(
                    "expected an initialiser value, found {}",
                    self.describe()
                ))
            }
        };
        self.pos += 1;
        out.push(v);
        Ok(())
    }

    /// `+N`, `+-N`, `-N` or nothing.
    fn opt_offset(&mut self) -> R<i64> {
        let mut sign = 1i64;
        if self.eat_punct('+') {
            if self.eat_punct('-') {
                sign = -1;
            }
        } else if self.eat_punct('-') {
            sign = -1;
        } else {
            return Ok(0);
        }
        let v = self.uint()? as i64;
        Ok(v.wrapping_mul(sign))
    }

    fn param_list(&mut self) -> R<Vec<VarDecl>> {
        let mut v = Vec::new();
        self.expect_punct('(')?;
        if self.eat_punct(')') {
            return Ok(v);
        }
        loop {
            v.push(self.var_decl(false)?);
            if self.eat_punct(')') {
                return Ok(v);
            }
            self.expect_punct(',')?;
        }
    }

    fn dims3(&mut self) -> R<[u32; 3]> {
        let mut d = [1u32; 3];
        d[0] = self.u32_val()?;
        for slot in d.iter_mut().skip(1) {
            if !self.eat_punct(',') {
                break;
            }
            *slot = self.u32_val()?;
        }
        Ok(d)
    }

    fn function(&mut self, is_extern: bool) -> R<Function> {
        let (line, col) = self.here();
        let is_entry = self.bump() == Tok::Dot("entry");
        let mut rets = Vec::new();
        if self.is_punct('(') {
            rets = self.param_list()?;
        }
        let name = self.ident()?;
        let params = if self.is_punct('(') {
            self.param_list()?
        } else {
            Vec::new()
        };
        let _ = is_extern;
        let mut f = Function {
            is_entry,
            name,
            rets,
            params,
            body: None,
            maxntid: None,
            reqntid: None,
            minnctapersm: None,
            line,
            col,
        };
        loop {
            match self.peek().clone() {
                Tok::Dot("maxntid") => {
                    self.pos += 1;
                    f.maxntid = Some(self.dims3()?);
                }
                Tok::Dot("reqntid") => {
                    self.pos += 1;
                    f.reqntid = Some(self.dims3()?);
                }
                Tok::Dot("minnctapersm") => {
                    self.pos += 1;
                    f.minnctapersm = Some(self.u32_val()?);
                }
                Tok::Dot("maxnreg")
                | Tok::Dot("maxclusterrank")
                | Tok::Dot("reqnctapercluster")
                | Tok::Dot("explicitcluster")
                | Tok::Dot("noreturn")
                | Tok::Dot("abi_preserve")
                | Tok::Dot("abi_preserve_control") => {
                    self.pos += 1;
                    while matches!(self.peek(), Tok::Int(_)) || self.is_punct(',') {
                        self.pos += 1;
                    }
                }
                Tok::Dot("pragma") => {
                    self.pos += 1;
                    self.skip_to_semicolon()?;
                }
                Tok::Punct(';') => {
                    self.pos += 1;
                    return Ok(f);
                }
                Tok::Punct('{') => {
                    self.pos += 1;
                    f.body = Some(self.block(0)?);
                    return Ok(f);
                }
                _ => {
                    return self.err(format!(
                        "expected function body or `;`, found {}",
                        self.describe()
                    ))
                }
            }
        }
    }

    /// Statements up to and including the closing `}`.
    fn block(&mut self, depth: u32) -> R<Vec<Stmt>> {
        if depth > MAX_NESTING {
            return self.err("blocks nested too deeply");
        }
        let mut out = Vec::new();
        loop {
            let (line, col) = self.here();
            match self.peek().clone() {
                Tok::Punct('}') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Tok::Punct('{') => {
                    self.pos += 1;
                    out.push(Stmt::Block(self.block(depth + 1)?));
                }
                Tok::Eof => {
                    return self.err("unexpected end of input in function body (missing `}`)")
                }
                Tok::Dot("loc") | Tok::Dot("file") => {
                    self.pos += 1;
                    self.skip_line(line);
                }
                Tok::Dot("pragma") => {
                    self.pos += 1;
                    self.skip_to_semicolon()?;
                }
                Tok::Dot("reg") => {
                    self.pos += 1;
                    out.push(Stmt::Reg(self.reg_decl()?));
                }
                Tok::Dot("local")
                | Tok::Dot("shared")
                | Tok::Dot("param")
                | Tok::Dot("global")
                | Tok::Dot("const") => {
                    let v = self.var_decl(false)?;
                    self.expect_punct(';')?;
                    out.push(Stmt::Var(v));
                }
                Tok::Dot("extern") => {
                    self.pos += 1;
                    let mut v = self.var_decl(true)?;
                    v.is_extern = true;
                    self.expect_punct(';')?;
                    out.push(Stmt::Var(v));
                }
                Tok::Ident(name) if self.peek_at(1) == &Tok::Punct(':') => {
                    self.pos += 2;
                    out.push(Stmt::Label(name.to_owned(), line, col));
                }
                Tok::Ident(_) | Tok::Punct('@') => out.push(Stmt::Inst(self.instruction()?)),
                _ => {
                    return self.err(format!(
                        "expected an instruction, found {}",
                        self.describe()
                    ))
                }
            }
        }
    }

    fn reg_decl(&mut self) -> R<RegDecl> {
        let mut ty = None;
        let mut vec = 1;
        loop {
            match self.peek().clone() {
                Tok::Dot("v2") => vec = 2,
                Tok::Dot("v4") => vec = 4,
                Tok::Dot("align") => {
                    self.pos += 1;
                    self.uint()?;
                    continue;
                }
                Tok::Dot(t) => match Ty::from_mod(t) {
                    Some(t) => ty = Some(t),
                    None => return self.err(format!("unknown register type `.{t}`")),
                },
                _ => break,
            }
            self.pos += 1;
        }
        let Some(ty) = ty else {
            return self.err("register declaration without a type");
        };
        if vec != 1 {
            return self.err("vector registers are not supported");
        }
        let mut names = Vec::new();
        loop {
            let n = self.ident()?;
            if self.eat_punct('<') {
                let c = self.u32_val()?;
                self.expect_punct('>')?;
                names.push((n, Some(c)));
            } else {
                names.push((n, None));
            }
            if self.eat_punct(';') {
                return Ok(RegDecl { ty, names });
            }
            self.expect_punct(',')?;
        }
    }

    fn instruction(&mut self) -> R<Instruction> {
        let (line, col) = self.here();
        let mut guard = None;
        if self.eat_punct('@') {
            let neg = self.eat_punct('!');
            guard = Some((neg, self.ident()?));
        }
        let opcode = self.ident()?;
        let mut mods = Vec::new();
        while let Tok::Dot(m) = self.peek().clone() {
            mods.push(m.to_owned());
            self.pos += 1;
        }
        let mut operands = Vec::new();
        if !self.eat_punct(';') {
            loop {
                operands.push(self.operand(0)?);
                if self.eat_punct(';') {
                    break;
                }
                if !self.eat_punct(',') {
                    return self.err(format!(
                        "expected `,` or `;` after operand, found {}",
                        self.describe()
                    ));
                }
                if operands.len() > 64 {
                    return self.err("too many operands");
                }
            }
        }
        Ok(Instruction {
            guard,
            opcode,
            mods,
            operands,
            line,
            col,
        })
    }

    /// A name possibly followed by `.x`-style suffixes (special registers like `%tid.x`).
    fn dotted_name(&mut self) -> R<String> {
        let mut n = self.ident()?;
        while let Tok::Dot(s) = self.peek().clone() {
            n.push('.');
            n.push_str(s);
            self.pos += 1;
        }
        Ok(n)
    }

    fn operand(&mut self, depth: u32) -> R<Operand> {
        if depth > 4 {
            return self.err("operand nested too deeply");
        }
        match self.peek().clone() {
            Tok::Punct('[') => {
                self.pos += 1;
                let op = match self.peek().clone() {
                    Tok::Ident(_) => {
                        let n = self.dotted_name()?;
                        let off = self.opt_offset()?;
                        Operand::Addr(Some(n), off)
                    }
                    Tok::Int(v) => {
                        self.pos += 1;
                        let off = self.opt_offset()?;
                        Operand::Addr(None, (v as i64).wrapping_add(off))
                    }
                    _ => {
                        return self.err(format!("expected an address, found {}", self.describe()))
                    }
                };
                self.expect_punct(']')?;
                Ok(op)
            }
            Tok::Punct('{') => {
                self.pos += 1;
                let mut v = Vec::new();
                loop {
                    v.push(self.operand(depth + 1)?);
                    if self.eat_punct('}') {
                        return Ok(Operand::Vector(v));
                    }
                    self.expect_punct(',')?;
                    if v.len() > 16 {
                        return self.err("vector operand too long");
                    }
                }
            }
            Tok::Punct('(') => {
                self.pos += 1;
                let mut v = Vec::new();
                if self.eat_punct(')') {
                    return Ok(Operand::List(v));
                }
                loop {
                    v.push(self.operand(depth + 1)?);
                    if self.eat_punct(')') {
                        return Ok(Operand::List(v));
                    }
                    self.expect_punct(',')?;
                    if v.len() > 4096 {
                        return self.err("argument list too long");
                    }
                }
            }
            Tok::Punct('!') => {
                self.pos += 1;
                Ok(Operand::Not(self.ident()?))
            }
            Tok::Punct('-') => {
                self.pos += 1;
                match self.bump() {
                    Tok::Int(v) => Ok(Operand::Int((v as i64).wrapping_neg())),
                    Tok::F32(b) => Ok(Operand::F32(b ^ 0x8000_0000)),
                    Tok::F64(b) => Ok(Operand::F64(b ^ (1 << 63))),
                    _ => {
                        self.pos -= 1;
                        self.err("expected a number after `-`")
                    }
                }
            }
            Tok::Int(v) => {
                self.pos += 1;
                Ok(Operand::Int(v as i64))
            }
            Tok::F32(b) => {
                self.pos += 1;
                Ok(Operand::F32(b))
            }
            Tok::F64(b) => {
                self.pos += 1;
                Ok(Operand::F64(b))
            }
            Tok::Ident(_) => {
                let n = self.dotted_name()?;
                if self.eat_punct('|') {
                    let m = self.ident()?;
                    return Ok(Operand::Pair(n, m));
                }
                if self.is_punct('+')
                    || self.is_punct('-') && matches!(self.peek_at(1), Tok::Int(_))
                {
                    let off = self.opt_offset()?;
                    return Ok(Operand::NameOff(n, off));
                }
                Ok(Operand::Name(n))
            }
            _ => self.err(format!("expected an operand, found {}", self.describe())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_small_module() {
        let m = parse(
            r#"
.version 8.5
.target sm_80
.address_size 64
.global .align 4 .b8 tab[8] = {1, 2, 3, 4, 5, 6, 7, 8};
.extern .shared .align 16 .b8 dyn[];
.visible .entry k(.param .u64 k_param_0, .param .align 8 .b8 k_param_1[16])
.maxntid 256, 1, 1
{
    .reg .pred %p<2>;
    .reg .b32 %r<5>;
    .loc 1 2 3
    mov.u32 %r1, %tid.x;
    @!%p1 bra $L__BB0_1;
    ld.global.v2.f32 {%r1, %r2}, [%rd1+-8];
    { .param .b32 param0; call.uni (retval0), f, (param0); }
$L__BB0_1:
    ret;
}
"#,
        )
        .unwrap();
        assert_eq!(m.version, Some((8, 5)));
        assert_eq!(m.items.len(), 3);
        let Item::Func(f) = &m.items[2] else { panic!() };
        assert_eq!(f.params[1].size(), Some(16));
        assert_eq!(f.maxntid, Some([256, 1, 1]));
        let body = f.body.as_ref().unwrap();
        let Stmt::Inst(i) = &body[2] else { panic!() };
        assert_eq!(i.operands[1], Operand::Name("%tid.x".into()));
        let Stmt::Inst(i) = &body[3] else { panic!() };
        assert_eq!(i.guard, Some((true, "%p1".into())));
        let Stmt::Inst(i) = &body[4] else { panic!() };
        assert_eq!(i.operands[1], Operand::Addr(Some("%rd1".into()), -8));
    }

    #[test]
    fn errors_have_positions() {
        let e = parse(".version 8.0\n.entry k()\n{\n  add.s32 %r1, %r2 %r3;\n}").unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.contains("expected `,`"), "{e}");
        let e = parse(".entry k() {\n ret;\n").unwrap_err();
        assert!(e.message.contains("missing `}`"), "{e}");
    }
}
