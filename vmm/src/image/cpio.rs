//! A minimal, reproducible `newc` cpio writer (the format the kernel unpacks as initramfs):
//! entries in the order given, inode numbers from 1, owner root, mtime 0.

use std::io::{self, Write};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
    CharDev {
        path: String,
        mode: u32,
        major: u32,
        minor: u32,
    },
}

fn pad4(w: &mut impl Write, len: usize) -> io::Result<()> {
    w.write_all(&[0u8; 3][..(4 - len % 4) % 4])
}

fn header(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) -> io::Result<()> {
    let namesize = name.len() + 1;
    write!(
        w,
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 1, 0, 0, 0, rdev.0, rdev.1, 0
    )?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad4(w, 110 + namesize)
}

/// Writes `entries` and the trailer.
pub fn write_archive(w: &mut impl Write, entries: &[Entry]) -> io::Result<()> {
    for (i, e) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        let (path, mode, data, rdev): (&str, u32, &[u8], (u32, u32)) = match e {
            Entry::Dir { path, mode } => (path, S_IFDIR | mode, &[], (0, 0)),
            Entry::File { path, mode, data } => (path, S_IFREG | mode, data, (0, 0)),
            Entry::Symlink { path, target } => (path, S_IFLNK | 0o777, target.as_bytes(), (0, 0)),
            Entry::CharDev {
                path,
                mode,
                major,
                minor,
            } => (path, S_IFCHR | mode, &[], (*major, *minor)),
        };
        header(w, ino, mode, data.len(), rdev, path.trim_start_matches('/'))?;
        w.write_all(data)?;
        pad4(w, data.len())?;
    }
    header(w, 0, 0, 0, (0, 0), "TRAILER!!!")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_is_padded_and_terminated() {
        let mut out = Vec::new();
        write_archive(
            &mut out,
            &[
                Entry::Dir {
                    path: "/bin".into(),
                    mode: 0o755,
                },
                Entry::File {
                    path: "/init".into(),
                    mode: 0o755,
                    data: b"#!/bin/sh\n".to_vec(),
                },
                Entry::CharDev {
                    path: "/dev/console".into(),
                    mode: 0o600,
                    major: 5,
                    minor: 1,
                },
            ],
        )
        .unwrap();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("bin\0"));
        assert!(text.contains("init\0"));
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!\0"));
        // Same input, same bytes.
        let mut again = Vec::new();
        write_archive(
            &mut again,
            &[Entry::Dir {
                path: "/bin".into(),
                mode: 0o755,
            }],
        )
        .unwrap();
        assert_eq!(&again[..110], &out[..110]);
    }
}
