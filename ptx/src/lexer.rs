//! Hand-written PTX lexer: text → tokens with 1-based line/column.

use crate::error::PtxError;

/// One token. Identifiers borrow from the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok<'a> {
    /// `name`, `%r1`, `$L__BB0_1`, `_`.
    Ident(&'a str),
    /// `.name` (without the dot); may contain `::` (`.L1::evict_last`).
    Dot(&'a str),
    /// Integer literal (two's complement bits; the sign is a separate `-` token).
    Int(u64),
    /// `0fXXXXXXXX`: f32 bits.
    F32(u32),
    /// `0dXXXXXXXXXXXXXXXX` or a decimal float: f64 bits.
    F64(u64),
    /// `"..."`.
    Str(String),
    /// Punctuation: `, ; : ( ) [ ] { } < > + - ! @ = |`.
    Punct(char),
    /// End of input.
    Eof,
}

/// A token and where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Token<'a> {
    pub(crate) tok: Tok<'a>,
    pub(crate) line: u32,
    pub(crate) col: u32,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c == b'%'
}
fn is_ident_cont(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

/// Tokenizes the whole input; the last token is [`Tok::Eof`].
pub(crate) fn lex(src: &str) -> Result<Vec<Token<'_>>, PtxError> {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(src.len() / 4);
    let (mut i, mut line, mut line_start) = (0usize, 1u32, 0usize);
    while i < b.len() {
        let c = b[i];
        let col = (i - line_start + 1) as u32;
        let err = move |msg: String| PtxError::new(line, col, msg);
        match c {
            b'\n' => {
                i += 1;
                line += 1;
                line_start = i;
            }
            b' ' | b'\t' | b'\r' | 0x0c => i += 1,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                loop {
                    if i + 1 >= b.len() {
                        return Err(err("unterminated block comment".into()));
                    }
                    if b[i] == b'*' && b[i + 1] == b'/' {
                        i += 2;
                        break;
                    }
                    if b[i] == b'\n' {
                        line += 1;
                        line_start = i + 1;
                    }
                    i += 1;
                }
            }
            b'"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None | Some(b'\n') => return Err(err("unterminated string".into())),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let e = src
                                .get(i + 1..)
                                .and_then(|r| r.chars().next())
                                .unwrap_or('\\');
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                '0' => '\0',
                                other => other,
                            });
                            i += 1 + e.len_utf8();
                        }
                        Some(_) => {
                            // Copy one UTF-8 character.
                            let rest = &src[i..];
                            let ch = rest.chars().next().unwrap_or('?');
                            s.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                out.push(Token {
                    tok: Tok::Str(s),
                    line,
                    col,
                });
            }
            b'.' if b
                .get(i + 1)
                .is_some_and(|&n| is_ident_start(n) || n.is_ascii_digit()) =>
            {
                let start = i + 1;
                i += 1;
                while i < b.len() {
                    if is_ident_cont(b[i]) {
                        i += 1;
                    } else if b[i] == b':' && b.get(i + 1) == Some(&b':') {
                        i += 2;
                    } else {
                        break;
                    }
                }
                out.push(Token {
                    tok: Tok::Dot(&src[start..i]),
                    line,
                    col,
                });
            }
            c if is_ident_start(c) => {
                let start = i;
                i += 1;
                while i < b.len() && is_ident_cont(b[i]) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Ident(&src[start..i]),
                    line,
                    col,
                });
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    // A sign directly after an exponent marker belongs to the number.
                    i += 1;
                    if i < b.len()
                        && (b[i] == b'+' || b[i] == b'-')
                        && matches!(b[i - 1], b'e' | b'E')
                        && !src[start..i].starts_with("0x")
                        && !src[start..i].starts_with("0f")
                        && !src[start..i].starts_with("0d")
                    {
                        i += 1;
                    }
                }
                let text = &src[start..i];
                out.push(Token {
                    tok: number(text).ok_or_else(|| err(format!("bad number `{text}`")))?,
                    line,
                    col,
                });
            }
            b',' | b';' | b':' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'<' | b'>' | b'+'
            | b'-' | b'!' | b'@' | b'=' | b'|' | b'*' => {
                out.push(Token {
                    tok: Tok::Punct(c as char),
                    line,
                    col,
                });
                i += 1;
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(err(format!("unexpected character `{}`", ch.escape_debug())));
            }
        }
    }
    let col = (b.len() - line_start + 1) as u32;
    out.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(out)
}

fn number(t: &str) -> Option<Tok<'static>> {
    let lower = t.to_ascii_lowercase();
    let l = lower.as_str();
    let strip_u = |s: &str| {
        s.strip_suffix('u')
            .map(str::to_owned)
            .unwrap_or_else(|| s.to_owned())
    };
    if let Some(h) = l.strip_prefix("0f") {
        if h.len() == 8 {
            return u32::from_str_radix(h, 16).ok().map(Tok::F32);
        }
        return None;
    }
    if let Some(h) = l.strip_prefix("0d") {
        if h.len() == 16 {
            return u64::from_str_radix(h, 16).ok().map(Tok::F64);
        }
        return None;
    }
    if let Some(h) = l.strip_prefix("0x") {
        return u64::from_str_radix(&strip_u(h), 16).ok().map(Tok::Int);
    }
    if let Some(h) = l.strip_prefix("0b") {
        return u64::from_str_radix(&strip_u(h), 2).ok().map(Tok::Int);
    }
    if l.contains('.') || l.contains('e') {
        return l
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| Tok::F64(f.to_bits()));
    }
    let d = strip_u(l);
    if d.len() > 1 && d.starts_with('0') {
        return u64::from_str_radix(&d[1..], 8).ok().map(Tok::Int);
    }
    d.parse::<u64>().ok().map(Tok::Int)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok<'_>> {
        lex(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn lexes_instruction() {
        assert_eq!(
            toks("@!%p1 ld.global.L1::evict_last.f32 %f1, [%rd1+-4]; // c"),
            vec![
                Tok::Punct('@'),
                Tok::Punct('!'),
                Tok::Ident("%p1"),
                Tok::Ident("ld"),
                Tok::Dot("global"),
                Tok::Dot("L1::evict_last"),
                Tok::Dot("f32"),
                Tok::Ident("%f1"),
                Tok::Punct(','),
                Tok::Punct('['),
                Tok::Ident("%rd1"),
                Tok::Punct('+'),
                Tok::Punct('-'),
                Tok::Int(4),
                Tok::Punct(']'),
                Tok::Punct(';'),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(
            toks("0f3F800000 0d3FF0000000000000 0x10 017 9.0 1.5e-3 0b101 42U"),
            vec![
                Tok::F32(0x3F80_0000),
                Tok::F64(1.0f64.to_bits()),
                Tok::Int(16),
                Tok::Int(15),
                Tok::F64(9.0f64.to_bits()),
                Tok::F64(1.5e-3f64.to_bits()),
                Tok::Int(5),
                Tok::Int(42),
                Tok::Eof
            ]
        );
        assert!(lex("0f3F80").is_err());
        assert!(lex("99999999999999999999999").is_err());
    }

    #[test]
    fn positions_and_errors() {
        let t = lex("a\n  /* x\n y */ b").unwrap();
        assert_eq!((t[1].line, t[1].col), (3, 7));
        let e = lex("a\n  #").unwrap_err();
        assert_eq!((e.line, e.column), (2, 3));
        assert!(lex("/* open").is_err());
        assert!(lex("\"open").is_err());
    }
}
