//! Device `printf` (`call vprintf, (fmt, args)`): reads the format string and the packed argument
//! buffer (each argument aligned to its size; floats promoted to double) from device memory and
//! formats them C-style: `%d %i %u %x %X %o %c %s %f %F %e %E %g %G %a %p %%` with flags `-+ #0`,
//! width, precision and length modifiers (`hh h l ll z j t L`). Output is handed to the launch's
//! printf callback line by line; `vprintf` returns the number of arguments.

use crate::error::ExecError;
use crate::ir::MemSpace;
use crate::ops::Ctx;

/// Longest format string or `%s` argument read.
const MAX_STR: usize = 4096;

/// `vprintf` call: frame offsets of the format pointer, the argument-buffer pointer and the result.
#[derive(Debug, Clone)]
pub(crate) struct PrintfOp {
    pub(crate) fmt: i64,
    pub(crate) args: i64,
    pub(crate) ret: Option<i64>,
}

fn read_cstr(cx: &mut Ctx<'_, '_>, addr: u64, lane: usize) -> Result<Vec<u8>, ExecError> {
    let mut s = Vec::new();
    while s.len() < MAX_STR {
        let b = cx.load(
            MemSpace::Generic,
            addr.wrapping_add(s.len() as u64),
            1,
            lane,
        )? as u8;
        if b == 0 {
            break;
        }
        s.push(b);
    }
    Ok(s)
}

/// Where `format` takes its arguments from.
pub(crate) trait Source {
    /// The next argument, `size` bytes (4 or 8).
    fn arg(&mut self, size: u32) -> Result<u64, ExecError>;
    /// The bytes of the NUL-terminated string at `ptr`.
    fn string(&mut self, ptr: u64) -> Result<Vec<u8>, ExecError>;
}

/// Arguments packed in device memory by one lane.
struct DevArgs<'c, 'a, 'e> {
    cx: &'c mut Ctx<'a, 'e>,
    lane: usize,
    base: u64,
    off: u64,
    n: u64,
}

impl Source for DevArgs<'_, '_, '_> {
    fn arg(&mut self, size: u32) -> Result<u64, ExecError> {
        self.off = self.off.div_ceil(u64::from(size)) * u64::from(size);
        let v = self.cx.load(
            MemSpace::Generic,
            self.base.wrapping_add(self.off),
            size,
            self.lane,
        )?;
        self.off += u64::from(size);
        self.n += 1;
        Ok(v)
    }
    fn string(&mut self, ptr: u64) -> Result<Vec<u8>, ExecError> {
        if ptr == 0 {
            return Ok(b"(null)".to_vec());
        }
        read_cstr(self.cx, ptr, self.lane)
    }
}

pub(crate) fn exec(op: &PrintfOp, cx: &mut Ctx<'_, '_>, m: u32) -> Result<(), ExecError> {
    let mut results = [0u64; 32];
    for l in 0..32usize {
        if m >> l & 1 == 0 {
            continue;
        }
        let fmt_ptr = cx.load(
            MemSpace::Local,
            cx.local_base.wrapping_add(op.fmt as u64),
            8,
            l,
        )?;
        let arg_ptr = cx.load(
            MemSpace::Local,
            cx.local_base.wrapping_add(op.args as u64),
            8,
            l,
        )?;
        let fmt = read_cstr(cx, fmt_ptr, l)?;
        let mut src = DevArgs {
            cx: &mut *cx,
            lane: l,
            base: arg_ptr,
            off: 0,
            n: 0,
        };
        let text = format(&fmt, &mut src)?;
        results[l] = src.n;
        cx.print(&text);
    }
    if let Some(r) = op.ret {
        for (l, v) in results.iter().enumerate() {
            if m >> l & 1 != 0 {
                cx.store(
                    MemSpace::Local,
                    cx.local_base.wrapping_add(r as u64),
                    4,
                    l,
                    *v,
                )?;
            }
        }
    }
    Ok(())
}

struct Spec {
    left: bool,
    plus: bool,
    space: bool,
    alt: bool,
    zero: bool,
    width: usize,
    prec: Option<usize>,
}

fn pad(out: &mut String, spec: &Spec, prefix: &str, body: &str, numeric: bool) {
    let len = prefix.len() + body.len();
    let fill = spec.width.saturating_sub(len).min(1 << 12);
    if spec.left {
        out.push_str(prefix);
        out.push_str(body);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if spec.zero && numeric {
        out.push_str(prefix);
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(body);
    } else {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(prefix);
        out.push_str(body);
    }
}

fn exp_form(v: f64, prec: usize, upper: bool) -> String {
    let s = format!("{:.*e}", prec, v);
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = exp.parse().unwrap_or(0);
    let r = format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    if upper {
        r.to_uppercase()
    } else {
        r
    }
}

fn strip_zeros(s: &str) -> String {
    let (m, e) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let m = if m.contains('.') {
        m.trim_end_matches('0').trim_end_matches('.')
    } else {
        m
    };
    format!("{m}{e}")
}

fn float_body(v: f64, conv: u8, spec: &Spec) -> String {
    let upper = conv.is_ascii_uppercase();
    if !v.is_finite() {
        let s = if v.is_nan() { "nan" } else { "inf" };
        return if upper { s.to_uppercase() } else { s.into() };
    }
    let a = v.abs();
    let prec = spec.prec.unwrap_or(6).min(512);
    match conv.to_ascii_lowercase() {
        b'f' => format!("{:.*}", prec, a),
        b'e' | b'a' => exp_form(a, prec, upper),
        _ => {
            let p = if prec == 0 { 1 } else { prec };
            let x = if a == 0.0 {
                0
            } else {
                let e = exp_form(a, p - 1, false);
                e.split_once('e')
                    .and_then(|(_, x)| x.parse::<i32>().ok())
                    .unwrap_or(0)
            };
            let s = if (x as i64) < p as i64 && x >= -4 {
                format!("{:.*}", (p as i64 - 1 - x as i64).max(0) as usize, a)
            } else {
                exp_form(a, p - 1, upper)
            };
            if spec.alt {
                s
            } else {
                strip_zeros(&s)
            }
        }
    }
}

/// Formats `fmt` taking raw argument words and strings from `src`.
pub(crate) fn format(fmt: &[u8], src: &mut dyn Source) -> Result<String, ExecError> {
    let mut out = String::new();
    let mut i = 0;
    let mut lit = Vec::new();
    while i < fmt.len() {
        if fmt[i] != b'%' {
            lit.push(fmt[i]);
            i += 1;
            continue;
        }
        out.push_str(&String::from_utf8_lossy(&lit));
        lit.clear();
        let start = i;
        i += 1;
        let mut spec = Spec {
            left: false,
            plus: false,
            space: false,
            alt: false,
            zero: false,
            width: 0,
            prec: None,
        };
        while let Some(&c) = fmt.get(i) {
            match c {
                b'-' => spec.left = true,
                b'+' => spec.plus = true,
                b' ' => spec.space = true,
                b'#' => spec.alt = true,
                b'0' => spec.zero = true,
                _ => break,
            }
            i += 1;
        }
        if fmt.get(i) == Some(&b'*') {
            spec.width = (src.arg(4)? as i32).unsigned_abs() as usize;
            i += 1;
        }
        while let Some(d) = fmt.get(i).filter(|c| c.is_ascii_digit()) {
            spec.width = (spec.width * 10 + usize::from(d - b'0')).min(1 << 12);
            i += 1;
        }
        if fmt.get(i) == Some(&b'.') {
            i += 1;
            let mut p = 0usize;
            if fmt.get(i) == Some(&b'*') {
                p = (src.arg(4)? as i32).max(0) as usize;
                i += 1;
            }
            while let Some(d) = fmt.get(i).filter(|c| c.is_ascii_digit()) {
                p = (p * 10 + usize::from(d - b'0')).min(1 << 12);
                i += 1;
            }
            spec.prec = Some(p);
        }
        let mut long = 0;
        while let Some(&c) = fmt.get(i) {
            match c {
                b'l' | b'z' | b'j' | b't' | b'L' | b'q' => long += 1,
                b'h' => {}
                _ => break,
            }
            i += 1;
        }
        let Some(&conv) = fmt.get(i) else {
            out.push_str(&String::from_utf8_lossy(&fmt[start..]));
            break;
        };
        i += 1;
        let isize = if long > 0 { 8 } else { 4 };
        match conv {
            b'%' => out.push('%'),
            b'd' | b'i' => {
                let raw = src.arg(isize)?;
                let v = if isize == 8 {
                    raw as i64
                } else {
                    i64::from(raw as i32)
                };
                let mut body = v.unsigned_abs().to_string();
                if let Some(p) = spec.prec {
                    if body.len() < p {
                        body = "0".repeat(p - body.len()) + &body;
                    }
                    if p == 0 && v == 0 {
                        body.clear();
                    }
                }
                let sign = if v < 0 {
                    "-"
                } else if spec.plus {
                    "+"
                } else if spec.space {
                    " "
                } else {
                    ""
                };
                pad(&mut out, &spec, sign, &body, spec.prec.is_none());
            }
            b'u' | b'x' | b'X' | b'o' => {
                let raw = src.arg(isize)?;
                let v = if isize == 8 {
                    raw
                } else {
                    u64::from(raw as u32)
                };
                let mut body = match conv {
                    b'u' => v.to_string(),
                    b'x' => format!("{v:x}"),
                    b'X' => format!("{v:X}"),
                    _ => format!("{v:o}"),
                };
                if let Some(p) = spec.prec {
                    if body.len() < p {
                        body = "0".repeat(p - body.len()) + &body;
                    }
                }
                let prefix = match conv {
                    b'x' if spec.alt && v != 0 => "0x",
                    b'X' if spec.alt && v != 0 => "0X",
                    b'o' if spec.alt && !body.starts_with('0') => "0",
                    _ => "",
                };
                pad(&mut out, &spec, prefix, &body, spec.prec.is_none());
            }
            b'c' => {
                let v = src.arg(4)? as u8;
                pad(&mut out, &spec, "", &char::from(v).to_string(), false);
            }
            b's' => {
                let p = src.arg(8)?;
                let mut s = src.string(p)?;
                if let Some(pr) = spec.prec {
                    s.truncate(pr);
                }
                pad(&mut out, &spec, "", &String::from_utf8_lossy(&s), false);
            }
            b'p' => {
                let v = src.arg(8)?;
                pad(&mut out, &spec, "0x", &format!("{v:x}"), false);
            }
            b'f' | b'F' | b'e' | b'E' | b'g' | b'G' | b'a' | b'A' => {
                let v = f64::from_bits(src.arg(8)?);
                let body = float_body(v, conv, &spec);
                let sign = if v.is_sign_negative() && !v.is_nan() {
                    "-"
                } else if spec.plus {
                    "+"
                } else if spec.space {
                    " "
                } else {
                    ""
                };
                pad(&mut out, &spec, sign, &body, v.is_finite());
            }
            _ => out.push_str(&String::from_utf8_lossy(&fmt[start..i])),
        }
    }
    out.push_str(&String::from_utf8_lossy(&lit));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake<'a>(std::slice::Iter<'a, u64>, std::slice::Iter<'a, &'a str>);
    impl Source for Fake<'_> {
        fn arg(&mut self, _: u32) -> Result<u64, ExecError> {
            Ok(self.0.next().copied().unwrap_or(0))
        }
        fn string(&mut self, _: u64) -> Result<Vec<u8>, ExecError> {
            Ok(self
                .1
                .next()
                .map(|x| x.as_bytes().to_vec())
                .unwrap_or_default())
        }
    }

    fn fmt(f: &str, args: &[u64], strs: &[&str]) -> String {
        format(f.as_bytes(), &mut Fake(args.iter(), strs.iter())).unwrap()
    }

    #[test]
    fn c_formatting() {
        let d = |v: f64| v.to_bits();
        assert_eq!(
            fmt(
                "%d|%5d|%-5d|%05d|%+d",
                &[(-3i32) as u64, 42, 42, 42, 7],
                &[]
            ),
            "-3|   42|42   |00042|+7"
        );
        assert_eq!(
            fmt(
                "%u %x %X %#x %o %#o",
                &[u64::from(u32::MAX), 255, 255, 255, 8, 8],
                &[]
            ),
            "4294967295 ff FF 0xff 10 010"
        );
        assert_eq!(
            fmt("%ld %lld %llu", &[(-5i64) as u64, 1 << 40, u64::MAX], &[]),
            "-5 1099511627776 18446744073709551615"
        );
        assert_eq!(
            fmt(
                "%f %.2f %8.3f %e %E",
                &[d(1.5), d(1.23456), d(-2.5), d(31415.9), d(0.00123)],
                &[]
            ),
            "1.500000 1.23   -2.500 3.141590e+04 1.230000E-03"
        );
        assert_eq!(
            fmt(
                "%g %g %g %g %.3g",
                &[d(100000.0), d(1e6), d(0.0001), d(1.5), d(1.23456)],
                &[]
            ),
            "100000 1e+06 0.0001 1.5 1.23"
        );
        assert_eq!(
            fmt("%s|%-6s|%.2s|%c", &[0, 0, 0, 65], &["hi", "ab", "xyz"]),
            "hi|ab    |xy|A"
        );
        assert_eq!(fmt("100%% %p", &[0x1000], &[]), "100% 0x1000");
        assert_eq!(
            fmt("%f %f", &[d(f64::INFINITY), d(f64::NAN)], &[]),
            "inf nan"
        );
        assert_eq!(fmt("%.0d|%.3d", &[0, 5], &[]), "|005");
        assert_eq!(fmt("trailing %", &[], &[]), "trailing %");
    }
}
