//! Parser tests against real nvcc 13.0 output (`fixtures/regen.sh`) and hostile inputs.

use proptest::prelude::*;

use super::*;

const DEFAULT: &[u8] = include_bytes!("fixtures/axpy_default.fatbin");
const COMPRESSED: &[u8] = include_bytes!("fixtures/axpy_compressed.fatbin");
const MULTI: &[u8] = include_bytes!("fixtures/axpy_multi.fatbin");
const CUBIN: &[u8] = include_bytes!("fixtures/axpy_sm86.cubin");
const PTX: &str = include_str!("fixtures/axpy.ptx");

const V9_0: Option<PtxVersion> = Some(PtxVersion { major: 9, minor: 0 });

/// A synthetic fatbin entry: (kind, flags, arch, stored payload, declared uncompressed size).
#[derive(Clone)]
struct Synth<'a> {
    kind: u16,
    flags: u64,
    arch: u32,
    payload: &'a [u8],
    uncompressed: u64,
}

fn synth_fatbin(entries: &[Synth]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in entries {
        let padded = e.payload.len().next_multiple_of(8);
        body.extend_from_slice(&e.kind.to_le_bytes());
        body.extend_from_slice(&0x0101u16.to_le_bytes());
        body.extend_from_slice(&64u32.to_le_bytes());
        body.extend_from_slice(&(padded as u64).to_le_bytes());
        let compressed = if e.flags & 0xa000 != 0 {
            e.payload.len() as u32
        } else {
            0
        };
        body.extend_from_slice(&compressed.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes()); // minor
        body.extend_from_slice(&9u16.to_le_bytes()); // major
        body.extend_from_slice(&e.arch.to_le_bytes());
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&e.flags.to_le_bytes());
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&e.uncompressed.to_le_bytes());
        body.extend_from_slice(e.payload);
        body.resize(body.len() + padded - e.payload.len(), 0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&FATBIN_MAGIC.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// PTX's tokens outside comments.
fn tokens(ptx: &str) -> Vec<&str> {
    ptx.lines()
        .flat_map(|l| l.split("//").next().unwrap_or("").split_whitespace())
        .collect()
}

#[test]
fn nvcc_default_fatbin_has_sass_and_zstd_ptx() {
    let image = parse(DEFAULT).unwrap();
    assert_eq!(image.format, Format::Fatbin);
    let [elf, ptx] = &image.entries[..] else {
        panic!("expected 2 entries: {image:?}");
    };
    assert_eq!(
        (elf.kind, elf.arch, elf.compression),
        (EntryKind::Elf, 75, Compression::None)
    );
    assert!(elf.data.starts_with(b"\x7fELF"));
    assert_eq!(elf.data.len(), image_len(&elf.data).unwrap());
    assert_eq!(
        (ptx.kind, ptx.arch, ptx.compression, ptx.ptx_version),
        (EntryKind::Ptx, 75, Compression::Zstd, V9_0)
    );
    // The embedded PTX is what `nvcc -ptx` prints for the same source, less comments and tabs.
    assert_eq!(tokens(ptx.ptx().unwrap()), tokens(PTX));
    assert_eq!(image.best_ptx().as_deref(), ptx.ptx());
}

#[test]
fn compress_all_fatbin_decompresses_sass_too() {
    let image = parse(COMPRESSED).unwrap();
    let compressions: Vec<_> = image.entries.iter().map(|e| e.compression).collect();
    assert_eq!(compressions, [Compression::Zstd, Compression::Zstd]);
    let plain = parse(DEFAULT).unwrap();
    assert_eq!(image.entries[0].data, plain.entries[0].data);
    assert_eq!(image.best_ptx(), plain.best_ptx());
}

#[test]
fn multi_arch_fatbin_picks_ptx_for_the_cpu_backend() {
    let image = parse(MULTI).unwrap();
    assert_eq!(image.archs(EntryKind::Elf), [75, 80]);
    assert_eq!(image.archs(EntryKind::Ptx), [80, 90]);
    let best = image.best_ptx().unwrap();
    assert!(best.contains(".target sm_80"), "{best}");
    // Nothing at or below sm_70: the lowest arch wins.
    assert!(image.best_ptx_for(70).unwrap().contains(".target sm_80"));
    assert!(image.best_ptx_for(100).unwrap().contains(".target sm_90"));
}

#[test]
fn cubin_reports_its_arch() {
    let image = parse(CUBIN).unwrap();
    assert_eq!(image.format, Format::Elf);
    assert_eq!(image.entries.len(), 1);
    assert_eq!(
        (image.entries[0].kind, image.entries[0].arch),
        (EntryKind::Elf, 86)
    );
    assert_eq!(image.entries[0].data, CUBIN);
    assert_eq!(image.best_ptx(), None);
}

#[test]
fn ptx_text_with_and_without_nul() {
    let image = parse(PTX.as_bytes()).unwrap();
    assert_eq!(image.format, Format::Ptx);
    assert_eq!(
        (image.entries[0].arch, image.entries[0].ptx_version),
        (75, V9_0)
    );
    let mut terminated = PTX.as_bytes().to_vec();
    terminated.push(0);
    terminated.extend_from_slice(b"trailing garbage \xff");
    assert_eq!(image_len(&terminated).unwrap(), PTX.len() + 1);
    assert_eq!(parse(&terminated).unwrap().best_ptx().as_deref(), Some(PTX));
    assert!(matches!(
        image_len(PTX.as_bytes()),
        Err(ImageError::Truncated { needed, .. }) if needed == PTX.len() + 1
    ));
    assert!(matches!(
        parse(b".version 9.0\n\xff\xfe"),
        Err(ImageError::PtxNotUtf8(13))
    ));
    assert!(matches!(
        parse(b"hello world"),
        Err(ImageError::PtxNoVersion)
    ));
}

/// What the shim does with a bare pointer: read a little, ask, read what is needed, repeat.
fn len_by_rounds(image: &[u8]) -> (usize, usize) {
    let mut have = 4;
    for round in 1..=8 {
        match image_len(&image[..have.min(image.len())]) {
            Ok(len) => return (len, round),
            Err(ImageError::Truncated { needed, .. }) => {
                assert!(needed > have, "no progress at {have}");
                have = needed;
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("image_len did not converge");
}

#[test]
fn image_len_of_every_format() {
    assert_eq!(len_by_rounds(DEFAULT), (DEFAULT.len(), 2));
    assert_eq!(len_by_rounds(COMPRESSED).0, COMPRESSED.len());
    assert_eq!(len_by_rounds(MULTI).0, MULTI.len());
    let (len, rounds) = len_by_rounds(CUBIN);
    assert_eq!(len, CUBIN.len());
    assert!(rounds <= 4, "{rounds} rounds");
    // Trailing bytes after a fatbin are not part of it.
    let mut padded = DEFAULT.to_vec();
    padded.extend_from_slice(&[0xee; 100]);
    assert_eq!(image_len(&padded).unwrap(), DEFAULT.len());
    assert_eq!(parse(&padded).unwrap(), parse(DEFAULT).unwrap());
    assert!(matches!(image_len(&[]), Err(ImageError::Empty)));
}

#[test]
fn wrapper_is_typed_not_followed() {
    let mut w = Vec::new();
    w.extend_from_slice(&WRAPPER_MAGIC.to_le_bytes());
    w.extend_from_slice(&1u32.to_le_bytes());
    w.extend_from_slice(&0x7f00_1234_5000u64.to_le_bytes());
    w.extend_from_slice(&0u64.to_le_bytes());
    let expected = FatbinWrapper {
        version: 1,
        data: 0x7f00_1234_5000,
        filename_or_fatbins: 0,
    };
    assert_eq!(FatbinWrapper::parse(&w).unwrap(), expected);
    assert_eq!(image_len(&w).unwrap(), 24);
    match parse(&w) {
        Err(ImageError::Wrapper(got)) => assert_eq!(got, expected),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        FatbinWrapper::parse(&w[..20]),
        Err(ImageError::Truncated { needed: 24, .. })
    ));
}

#[test]
fn lz4_entries_from_older_toolkits() {
    let text = format!("{PTX}\0");
    let stored = lz4_flex::block::compress(text.as_bytes());
    let fatbin = synth_fatbin(&[Synth {
        kind: 1,
        flags: 0x2011,
        arch: 52,
        payload: &stored,
        uncompressed: text.len() as u64,
    }]);
    let image = parse(&fatbin).unwrap();
    assert_eq!(image.entries[0].compression, Compression::Lz4);
    assert_eq!(image.best_ptx().as_deref(), Some(PTX));
}

#[test]
fn lying_headers_are_rejected() {
    // A zstd entry claiming fewer bytes than it decodes to.
    let image = parse(DEFAULT).unwrap();
    let zstd_start = DEFAULT.len() - 384;
    let stored = &DEFAULT[zstd_start..zstd_start + 0x17b];
    let fatbin = synth_fatbin(&[Synth {
        kind: 1,
        flags: 0x8011,
        arch: 75,
        payload: stored,
        uncompressed: 100,
    }]);
    assert!(matches!(
        parse(&fatbin),
        Err(ImageError::DecompressedSize { declared: 100, .. })
    ));
    // A zstd bomb: 64 MiB of zeros in a few kilobytes, declared honestly; refused by its ratio
    // before it is inflated.
    let zeros = vec![0u8; 64 << 20];
    let bomb =
        ruzstd::encoding::compress_to_vec(&zeros[..], ruzstd::encoding::CompressionLevel::Fastest);
    assert!(bomb.len() < (64 << 20) / 1024, "{} bytes", bomb.len());
    let fatbin = synth_fatbin(&[Synth {
        kind: 1,
        flags: 0x8011,
        arch: 75,
        payload: &bomb,
        uncompressed: zeros.len() as u64,
    }]);
    assert!(matches!(
        parse(&fatbin),
        Err(ImageError::DecompressedSize { .. })
    ));
    // An LZ4 entry claiming a gigabyte from a few bytes.
    let fatbin = synth_fatbin(&[Synth {
        kind: 1,
        flags: 0x2011,
        arch: 75,
        payload: b"\x10a",
        uncompressed: MAX_IMAGE_SIZE,
    }]);
    assert!(matches!(
        parse(&fatbin),
        Err(ImageError::DecompressedSize { .. })
    ));
    // Many small entries each claiming a large share: refused (here already by the ratio; the
    // image's total is bounded too).
    let claim = MAX_IMAGE_SIZE / 3 + 1;
    let bomb = Synth {
        kind: 1,
        flags: 0x8011,
        arch: 75,
        payload: stored,
        uncompressed: claim,
    };
    let many = synth_fatbin(&[bomb.clone(), bomb.clone(), bomb.clone(), bomb]);
    assert!(
        matches!(
            parse(&many),
            Err(ImageError::OutOfBounds { len, .. }) if len == claim
        ) || matches!(parse(&many), Err(ImageError::DecompressedSize { .. }))
    );
    // An entry whose payload runs past the container.
    let mut bad = DEFAULT.to_vec();
    bad[16 + 8..16 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(parse(&bad), Err(ImageError::OutOfBounds { .. })));
    // A container longer than its bytes.
    assert!(matches!(
        parse(&DEFAULT[..DEFAULT.len() - 1]),
        Err(ImageError::Truncated { .. })
    ));
    let mut v2 = DEFAULT.to_vec();
    v2[4] = 2;
    assert!(matches!(parse(&v2), Err(ImageError::FatbinVersion(2))));
    // Unknown entry kinds are kept, not fatal.
    let fatbin = synth_fatbin(&[Synth {
        kind: 8,
        flags: 0x11,
        arch: 90,
        payload: b"lto-ir",
        uncompressed: 0,
    }]);
    assert_eq!(parse(&fatbin).unwrap().entries[0].kind, EntryKind::Other(8));
    assert!(image.entries.len() == 2);
    assert!(matches!(
        parse(&[0x01, 0x02, 0x03, 0x04, 0x05]),
        Err(ImageError::UnknownFormat(_))
    ));
}

#[test]
fn linked_images_run_part_zero_or_join_the_parts_ptx() {
    let sass_only = synth_fatbin(&[Synth {
        kind: 2,
        flags: 0x11,
        arch: 75,
        payload: CUBIN,
        uncompressed: 0,
    }]);
    let unit_a = ".version 8.0\n.target sm_75\n.address_size 64\n\
                  .extern .func (.param .b32 r) twice(.param .b32 x);\n.visible .entry k() { ret; }\n";
    let unit_b = ".version 9.0\n.target sm_80\n.address_size 64\n\
                  .visible .func (.param .b32 r) twice(.param .b32 x) { ret; }\n";
    // rdc registration: a SASS-only linked image, then the units (one as a fatbin with PTX).
    let fat_b = synth_fatbin(&[Synth {
        kind: 1,
        flags: 0x11,
        arch: 75,
        payload: unit_b.as_bytes(),
        uncompressed: 0,
    }]);
    let bytes = linked::encode(&[&sass_only, unit_a.as_bytes(), &fat_b]);
    assert_eq!(image_len(&bytes).unwrap(), bytes.len());
    let image = parse(&bytes).unwrap();
    assert_eq!(image.format, Format::Linked);
    assert_eq!(image.archs(EntryKind::Elf), vec![75]);
    assert_eq!(image.parts.len(), 2);
    let joined = image.best_ptx().unwrap();
    assert!(
        joined.starts_with(".version 9.0\n.target sm_75\n.address_size 64\n"),
        "{joined}"
    );
    assert!(
        joined.contains(".extern .func") && joined.contains(".visible .func"),
        "{joined}"
    );
    assert_eq!(joined.matches(".address_size").count(), 1, "{joined}");
    // Part 0 with PTX of its own wins; a single part's PTX is used as it is.
    let own = linked::encode(&[PTX.as_bytes(), unit_a.as_bytes()]);
    assert_eq!(
        parse(&own).unwrap().best_ptx().unwrap(),
        PTX.trim_end_matches('\0')
    );
    let single = linked::encode(&[b"", unit_b.as_bytes()]);
    assert_eq!(parse(&single).unwrap().best_ptx().unwrap(), unit_b);
    // No PTX anywhere: nothing for the cpu backend. A linked image inside one is refused.
    assert!(parse(&linked::encode(&[&sass_only]))
        .unwrap()
        .best_ptx()
        .is_none());
    assert!(matches!(
        parse(&linked::encode(&[b"", &bytes])),
        Err(ImageError::NestedLinked)
    ));
    assert!(matches!(
        parse(&bytes[..bytes.len() - 8]),
        Err(ImageError::Linked(_))
    ));
}

fn check_never_panics(bytes: &[u8]) {
    let _ = format(bytes);
    let _ = image_len(bytes);
    if let Ok(image) = parse(bytes) {
        let _ = image.best_ptx();
        for e in &image.entries {
            assert!(e.data.len() as u64 <= MAX_IMAGE_SIZE);
        }
    }
    let _ = FatbinWrapper::parse(bytes);
}

fn fixture() -> impl Strategy<Value = &'static [u8]> {
    prop::sample::select(vec![DEFAULT, COMPRESSED, MULTI, CUBIN, PTX.as_bytes()])
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_never_panics(&bytes);
    }

    #[test]
    fn arbitrary_tails_after_magics_never_panic(
        magic in prop::sample::select(vec![
            FATBIN_MAGIC.to_le_bytes().to_vec(),
            WRAPPER_MAGIC.to_le_bytes().to_vec(),
            linked::MAGIC.to_le_bytes().to_vec(),
            [&linked::MAGIC.to_le_bytes()[..], &1u32.to_le_bytes(), &2u32.to_le_bytes()].concat(),
            b"\x7fELF\x02\x01".to_vec(),
            b"\x7fELF\x01\x01".to_vec(),
            b".version 9.0\n".to_vec(),
        ]),
        tail in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = magic;
        bytes.extend_from_slice(&tail);
        check_never_panics(&bytes);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        base in fixture(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = base.to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        check_never_panics(&bytes);
    }

    #[test]
    fn mutated_headers_never_panic(
        base in fixture(),
        edits in prop::collection::vec((0usize..160, any::<u8>()), 1..6),
    ) {
        // Concentrates mutations in the container and first entry headers.
        let mut bytes = base.to_vec();
        for (i, value) in edits {
            if let Some(b) = bytes.get_mut(i) {
                *b = value;
            }
        }
        check_never_panics(&bytes);
    }
}
