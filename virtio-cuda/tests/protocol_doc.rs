//! docs/PROTOCOL.md §6 is the normative list of opcodes; `protocol::CALLS` is the code's. This
//! test keeps them one list: every call has a row with its opcode, name, mode (`sync`/`async`,
//! `+ latched`) and field names in order, and every row names a call.

use std::collections::BTreeMap;

use virtio_cuda::protocol::CALLS;

/// Splits `s` at `sep` where it is not inside brackets or parentheses.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '<' => depth += 1,
            ')' | ']' | '>' => depth -= 1,
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

struct Row {
    name: String,
    mode: String,
    fields: Vec<String>,
}

fn doc_rows() -> BTreeMap<u16, Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    let text = std::fs::read_to_string(path).expect("docs/PROTOCOL.md");
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| 0x0301 | MemAlloc | sync | fields | reply |` splits into 7 cells.
        let Some(hex) = cells.get(1).and_then(|c| c.strip_prefix("0x")) else {
            continue;
        };
        let opcode = u16::from_str_radix(hex, 16).expect("opcode cell");
        if cells[2].starts_with("(retired") {
            continue;
        }
        // The field list ends at the first top-level `;` (prose follows it).
        let list = split_top(cells[4], ';')[0];
        let fields = split_top(list, ',')
            .into_iter()
            .map(str::trim)
            .filter(|f| !f.is_empty() && *f != "–")
            .map(|f| f.split_whitespace().next().unwrap_or("").to_string())
            .collect();
        let row = Row {
            name: cells[2].to_string(),
            mode: cells[3].to_string(),
            fields,
        };
        assert!(
            rows.insert(opcode, row).is_none(),
            "opcode {opcode:#06x} has two rows"
        );
    }
    rows
}

#[test]
fn every_call_has_its_row_in_protocol_md() {
    let mut rows = doc_rows();
    let mut problems = Vec::new();
    for c in CALLS {
        let Some(row) = rows.remove(&c.opcode) else {
            problems.push(format!("{:#06x} {}: no row in §6", c.opcode, c.name));
            continue;
        };
        let mode = format!(
            "{}{}",
            if c.is_async { "async" } else { "sync" },
            if c.reports_latched { " + latched" } else { "" }
        );
        if row.name != c.name {
            problems.push(format!(
                "{:#06x}: row says {}, code {}",
                c.opcode, row.name, c.name
            ));
        }
        if row.mode != mode {
            problems.push(format!(
                "{}: mode `{}` in the doc, `{mode}` in code",
                c.name, row.mode
            ));
        }
        let names: Vec<&str> = c.fields.iter().map(|f| f.name).collect();
        if row.fields != names {
            problems.push(format!(
                "{}: fields {:?} in the doc, {names:?} in code",
                c.name, row.fields
            ));
        }
    }
    for (op, row) in rows {
        problems.push(format!("{op:#06x} {}: a row with no call", row.name));
    }
    assert!(
        problems.is_empty(),
        "docs/PROTOCOL.md §6 is out of step:\n{}",
        problems.join("\n")
    );
}
