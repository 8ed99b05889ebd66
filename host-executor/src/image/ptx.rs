//! PTX text: validated as UTF-8, with `.version` and `.target` read from its directives.

use super::{Compression, Entry, EntryKind, ImageError, PtxVersion};

/// PTX text up to its NUL (or the end of `bytes`).
pub(super) fn parse(bytes: &[u8]) -> Result<Entry, ImageError> {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = bytes.get(..len).unwrap_or(bytes);
    let text = std::str::from_utf8(text).map_err(|e| ImageError::PtxNotUtf8(e.valid_up_to()))?;
    let version = directive(text, ".version")
        .and_then(parse_version)
        .ok_or(ImageError::PtxNoVersion)?;
    let arch = directive(text, ".target")
        .and_then(parse_target)
        .unwrap_or(0);
    Ok(Entry {
        kind: EntryKind::Ptx,
        arch,
        ptx_version: Some(version),
        compression: Compression::None,
        data: text.as_bytes().to_vec(),
    })
}

/// The first argument of the first line starting with `name` (outside `//` comments).
fn directive<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or("").trim())
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            // `.version` must be a whole word: not a prefix of some other directive.
            rest.starts_with(|c: char| c.is_ascii_whitespace())
                .then(|| rest.trim())
        })
}

/// `9.0` → 9.0.
fn parse_version(arg: &str) -> Option<PtxVersion> {
    let (major, minor) = arg.split_once('.')?;
    Some(PtxVersion {
        major: major.trim().parse().ok()?,
        minor: minor
            .trim()
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .ok()?,
    })
}

/// `sm_75`, `sm_90a, debug` → 75, 90.
fn parse_target(arg: &str) -> Option<u32> {
    let first = arg.split(',').next()?.trim();
    let digits = first
        .strip_prefix("sm_")
        .or_else(|| first.strip_prefix("compute_"))?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits.get(..end)?.parse().ok()
}

/// Joins PTX modules into one, as the driver's linker does for PTX inputs: the highest
/// `.version`, the first `.target`, then every module's body in order. An `.extern` declaration
/// in one module is resolved by the definition in another, since PTX allows a declaration
/// before the definition in the same module.
pub(super) fn join(modules: &[&str]) -> String {
    let mut version: Option<PtxVersion> = None;
    let mut target: Option<&str> = None;
    let mut bodies = String::new();
    for text in modules {
        for line in text.lines() {
            let t = line.split("//").next().unwrap_or("").trim();
            if let Some(arg) = t.strip_prefix(".version") {
                if let Some(v) = parse_version(arg) {
                    version = Some(version.map_or(v, |old| old.max(v)));
                }
            } else if t.starts_with(".target") {
                target.get_or_insert(t);
            } else if !t.starts_with(".address_size") {
                bodies.push_str(line);
                bodies.push('\n');
            }
        }
    }
    let v = version.unwrap_or(PtxVersion { major: 8, minor: 0 });
    format!(
        ".version {}.{}\n{}\n.address_size 64\n{bodies}",
        v.major,
        v.minor,
        target.unwrap_or(".target sm_80")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives() {
        let text = "// .version 1.0 in a comment\n.version 8.5 \n.target sm_90a, debug\n";
        let e = parse(text.as_bytes()).unwrap();
        assert_eq!(e.ptx_version, Some(PtxVersion { major: 8, minor: 5 }));
        assert_eq!(e.arch, 90);
        assert_eq!(parse_target("sm_52"), Some(52));
        assert_eq!(parse_target("gfx90"), None);
        assert!(matches!(
            parse(b".versionx 1.0\n"),
            Err(ImageError::PtxNoVersion)
        ));
    }
}
