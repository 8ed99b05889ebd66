//! Loading the kernel, initrd and command line, and writing the boot information a kernel reads:
//! Linux `boot_params` with the e820 map (bzImage, and ELF without a PVH note), or PVH
//! `hvm_start_info` with its memory map (ELF with a PVH entry note).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{
    load_cmdline, BzImage, Cmdline, Elf, KernelLoader, KernelLoaderResult, PvhBootCapability,
};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::layout::*;
use crate::arch::x86_64::regs::EntryMode;

/// Why the guest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open {what} {path}: {source} (check the path given to --{what})")]
    Open {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read kernel {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel {0} is neither an ELF (vmlinux, PVH) nor a bzImage")]
    UnknownFormat(PathBuf),
    #[error(
        "cannot load kernel {path}: {source} (is it an x86_64 kernel that fits in guest RAM?)"
    )]
    Load {
        path: PathBuf,
        source: linux_loader::loader::Error,
    },
    #[error("initrd {path} ({size} bytes) does not fit in guest RAM below {limit:#x}; give the guest more --mem")]
    InitrdTooBig {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("cannot write {what} to guest memory: {source}")]
    Memory {
        what: &'static str,
        source: vm_memory::GuestMemoryError,
    },
    #[error("kernel command line: {0} (at most {CMDLINE_MAX_SIZE} bytes, printable ASCII)")]
    Cmdline(linux_loader::cmdline::Error),
    #[error(
        "kernel {path} is truncated: its {what} ends at byte {needs}, the file has {has} bytes"
    )]
    Truncated {
        path: PathBuf,
        what: String,
        needs: u64,
        has: u64,
    },
    #[error(
        "kernel {path} needs guest RAM up to {needs:#x} ({} MiB), the guest has {} MiB; \
         give it more --mem",
        needs.div_ceil(1 << 20),
        has >> 20
    )]
    KernelTooBig { path: PathBuf, needs: u64, has: u64 },
    #[error(
        "initrd {0} is not an initramfs or ramdisk image (no cpio, gzip, bzip2, xz, lzma, lzo, \
         lz4, zstd, ext2, squashfs, cramfs or romfs signature)"
    )]
    NotAnInitrd(PathBuf),
    #[error("guest argument {0:?}: {1}")]
    GuestArg(String, &'static str),
}

/// Most arguments Linux passes to init (CONFIG_INIT_ENV_ARG_LIMIT is 32, `init` itself is one).
pub const MAX_GUEST_ARGS: usize = 31;

/// Where and how the boot vCPU starts.
#[derive(Debug, Clone, Copy)]
pub struct BootEntry {
    pub mode: EntryMode,
    pub addr: u64,
    /// The image is a Linux kernel (a bzImage, or an ELF with Linux's `Linux` ELF note).
    pub linux: bool,
}

/// Magic numbers of the boot protocols.
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
/// bzImage 64-bit entry: `startup_64` is 0x200 past the protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// `xloadflags` bit: the kernel has a 64-bit entry point.
const XLF_KERNEL_64: u16 = 1;

/// Builds the command line: the user's, then one `virtio_mmio.device=` per device, then
/// `-- guest args` (Linux passes those to init).
pub fn build_cmdline(
    base: &str,
    devices: &[(u64, u32)],
    guest_args: &[String],
) -> Result<Cmdline, BootError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(BootError::Cmdline)?;
    if !base.trim().is_empty() {
        cmdline
            .insert_str(base.trim())
            .map_err(BootError::Cmdline)?;
    }
    for (addr, irq) in devices {
        cmdline
            .add_virtio_mmio_device(VIRTIO_MMIO_SIZE, GuestAddress(*addr), *irq, None)
            .map_err(BootError::Cmdline)?;
    }
    if !guest_args.is_empty() {
        if guest_args.len() > MAX_GUEST_ARGS {
            return Err(BootError::GuestArg(
                guest_args[MAX_GUEST_ARGS].clone(),
                "Linux passes at most 31 arguments to init",
            ));
        }
        let quoted = guest_args
            .iter()
            .map(|a| quote_init_arg(a))
            .collect::<Result<Vec<_>, _>>()?;
        cmdline
            .insert_init_args(quoted.join(" "))
            .map_err(BootError::Cmdline)?;
    }
    Ok(cmdline)
}

/// One argument for init, as Linux's command-line parser (`next_arg`) reads it back: an
/// argument with blanks goes in double quotes, which the kernel removes. A double quote or a
/// control character cannot be expressed, and an empty argument would vanish.
fn quote_init_arg(arg: &str) -> Result<String, BootError> {
    let bad = |why| Err(BootError::GuestArg(arg.to_string(), why));
    if arg.is_empty() {
        return bad("an empty argument cannot be passed on the kernel command line");
    }
    if arg.contains('"') {
        return bad("a double quote cannot be passed on the kernel command line");
    }
    if arg.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return bad("only printable ASCII can be passed on the kernel command line");
    }
    Ok(if arg.contains(' ') {
        format!("\"{arg}\"")
    } else {
        arg.to_string()
    })
}

fn open(what: &'static str, path: &Path) -> Result<File, BootError> {
    File::open(path).map_err(|source| BootError::Open {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Whether an ELF kernel carries Linux's ELF notes (note name "Linux", e.g. the kernel version):
/// reads only the program headers and the PT_NOTE segments (bounded), never the whole image.
fn has_linux_note(file: &mut File) -> bool {
    const PT_NOTE: u32 = 4;
    let mut read_at = |off: u64, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        file.seek(SeekFrom::Start(off)).ok()?;
        file.read_exact(&mut buf).ok()?;
        Some(buf)
    };
    let Some(ehdr) = read_at(0, 64) else {
        return false;
    };
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |b: &[u8], o: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(x)
    };
    let (phoff, phentsize, phnum) = (
        u64_at(&ehdr, 0x20),
        u16_at(&ehdr, 0x36),
        u16_at(&ehdr, 0x38),
    );
    if usize::from(phentsize) < 56 {
        return false;
    }
    for i in 0..u64::from(phnum.min(64)) {
        let Some(ph) = read_at(phoff.saturating_add(i * u64::from(phentsize)), 56) else {
            return false;
        };
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) != PT_NOTE {
            continue;
        }
        let size = usize::try_from(u64_at(&ph, 0x20))
            .unwrap_or(0)
            .min(64 << 10);
        if let Some(notes) = read_at(u64_at(&ph, 0x08), size) {
            if notes.windows(8).any(|w| w == b"Linux\0\0\0") {
                return true;
            }
        }
    }
    false
}

/// Reads a little-endian integer of `N` bytes at `off`, if the file has it.
fn le<const N: usize>(head: &[u8], off: usize) -> Option<u64> {
    let b: [u8; N] = head.get(off..off + N)?.try_into().ok()?;
    let mut v = [0u8; 8];
    v[..N].copy_from_slice(&b);
    Some(u64::from_le_bytes(v))
}

/// Checks, before anything is loaded, that the kernel file is whole and fits the guest's RAM,
/// so that a truncated or oversized kernel gets a message saying so (the loader would report
/// a bare read error, and a truncated bzImage would boot into garbage and triple-fault).
fn check_kernel(file: &mut File, path: &Path, mem_size: u64) -> Result<(), BootError> {
    let read_err = |source| BootError::Read {
        path: path.to_owned(),
        source,
    };
    let len = file.seek(SeekFrom::End(0)).map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut head = vec![0u8; 0x1000.min(len as usize)];
    file.read_exact(&mut head).map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let truncated = |what: String, needs: u64| BootError::Truncated {
        path: path.to_owned(),
        what,
        needs,
        has: len,
    };
    let too_big = |needs: u64| BootError::KernelTooBig {
        path: path.to_owned(),
        needs,
        has: mem_size,
    };
    if head.starts_with(b"\x7fELF") && head.get(4) == Some(&2) {
        // ELF64: every PT_LOAD segment's bytes must be in the file and its memory in RAM.
        let (Some(phoff), Some(phentsize), Some(phnum)) = (
            le::<8>(&head, 0x20),
            le::<2>(&head, 0x36),
            le::<2>(&head, 0x38),
        ) else {
            return Err(truncated("ELF header".into(), 64));
        };
        let table_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
        if table_end > len {
            return Err(truncated("program header table".into(), table_end));
        }
        let mut table = vec![0u8; (phentsize * phnum) as usize];
        file.seek(SeekFrom::Start(phoff)).map_err(read_err)?;
        file.read_exact(&mut table).map_err(read_err)?;
        file.seek(SeekFrom::Start(0)).map_err(read_err)?;
        for i in 0..phnum as usize {
            let ph = &table[i * phentsize as usize..];
            let field = |off| le::<8>(ph, off).unwrap_or(0);
            if le::<4>(ph, 0) != Some(1) {
                continue; // not PT_LOAD
            }
            let (offset, paddr, filesz, memsz) =
                (field(0x08), field(0x18), field(0x20), field(0x28));
            let file_end = offset.saturating_add(filesz);
            if file_end > len {
                return Err(truncated(format!("loadable segment {i}"), file_end));
            }
            let mem_end = paddr.saturating_add(memsz);
            if mem_end > mem_size {
                return Err(too_big(mem_end));
            }
        }
    } else if head.get(0x202..0x206) == Some(b"HdrS") {
        // bzImage: the setup sectors, then `syssize` 16-byte paragraphs of protected-mode code,
        // which needs `init_size` bytes of RAM from where it runs (at least 1 MiB).
        let setup_sects = match le::<1>(&head, 0x1f1) {
            Some(0) | None => 4,
            Some(n) => n,
        };
        let syssize = le::<4>(&head, 0x1f4).unwrap_or(0);
        let needs = (setup_sects + 1) * 512 + syssize * 16;
        if needs > len {
            return Err(truncated("compressed kernel".into(), needs));
        }
        let init_size = le::<4>(&head, 0x260).unwrap_or(0);
        let pref = le::<8>(&head, 0x258).unwrap_or(HIGH_MEMORY_START);
        let mem_end = pref.max(HIGH_MEMORY_START).saturating_add(init_size);
        if mem_end > mem_size.min(MMIO_GAP_START) {
            return Err(too_big(mem_end));
        }
    }
    Ok(())
}

/// Whether `head` (an initrd's first bytes) starts like something Linux can unpack or mount.
fn looks_like_initrd(head: &[u8]) -> bool {
    const MAGICS: &[&[u8]] = &[
        b"070701",           // cpio newc
        b"070702",           // cpio newc with checksums
        b"070707",           // cpio odc
        b"\xc7\x71",         // cpio binary (little-endian)
        b"\x1f\x8b",         // gzip
        b"\x1f\x9e",         // old gzip
        b"BZh",              // bzip2
        b"\xfd7zXZ\0",       // xz
        b"\x5d\0\0",         // lzma
        b"\x89LZO",          // lzo
        b"\x02\x21\x4c\x18", // lz4 legacy
        b"\x28\xb5\x2f\xfd", // zstd
        b"hsqs",             // squashfs
        b"\x45\x3d\xcd\x28", // cramfs
        b"-rom1fs-",         // romfs
    ];
    MAGICS.iter().any(|m| head.starts_with(m))
        || head.get(0x438..0x43a) == Some(&[0x53, 0xef]) // ext2/3/4
        || head.get(512..516) == Some(&[0x45, 0x3d, 0xcd, 0x28]) // cramfs after a boot block
}

/// Loads the kernel at `path` and returns its entry and boot protocol.
fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
) -> Result<(KernelLoaderResult, BootEntry), BootError> {
    let mut file = open("kernel", path)?;
    let read_err = |source| BootError::Read {
        path: path.to_owned(),
        source,
    };
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(read_err)?;
    let mut hdrs = [0u8; 4];
    let is_bzimage = file.seek(SeekFrom::Start(0x202)).is_ok()
        && file.read_exact(&mut hdrs).is_ok()
        && &hdrs == b"HdrS";
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let load_err = |source| BootError::Load {
        path: path.to_owned(),
        source,
    };
    let high = Some(GuestAddress(HIGH_MEMORY_START));
    if &magic == b"\x7fELF" {
        let result = Elf::load(mem, None, &mut file, high).map_err(load_err)?;
        let entry = match result.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => BootEntry {
                mode: EntryMode::Pvh,
                addr: addr.raw_value(),
                linux: has_linux_note(&mut file),
            },
            _ => BootEntry {
                mode: EntryMode::Linux64,
                addr: result.kernel_load.raw_value(),
                linux: has_linux_note(&mut file),
            },
        };
        Ok((result, entry))
    } else if is_bzimage {
        let result = BzImage::load(mem, None, &mut file, high).map_err(load_err)?;
        let has_64bit_entry = result
            .setup_header
            .is_some_and(|h| h.xloadflags & XLF_KERNEL_64 != 0);
        if !has_64bit_entry {
            return Err(BootError::UnknownFormat(path.to_owned()));
        }
        let addr = result.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY_OFFSET;
        Ok((
            result,
            BootEntry {
                mode: EntryMode::Linux64,
                addr,
                linux: true,
            },
        ))
    } else {
        Err(BootError::UnknownFormat(path.to_owned()))
    }
}

/// Loads the initrd as high as possible below `limit` (page aligned); returns (address, size).
fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    limit: u64,
) -> Result<(u64, u64), BootError> {
    let mut file = open("initrd", path)?;
    let read_err = |source| BootError::Read {
        path: path.to_owned(),
        source,
    };
    let size = file.seek(SeekFrom::End(0)).map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut head = vec![0u8; 0x1000.min(size as usize)];
    file.read_exact(&mut head).map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    if !looks_like_initrd(&head) {
        return Err(BootError::NotAnInitrd(path.to_owned()));
    }
    let too_big = || BootError::InitrdTooBig {
        path: path.to_owned(),
        size,
        limit,
    };
    let addr = limit.checked_sub(size).ok_or_else(too_big)? & !0xfff;
    if addr < kernel_end {
        return Err(too_big());
    }
    let len = usize::try_from(size).map_err(|_| too_big())?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(|source| BootError::Memory {
            what: "initrd",
            source,
        })?;
    Ok((addr, size))
}

fn mem_err(what: &'static str) -> impl Fn(vm_memory::GuestMemoryError) -> BootError {
    move |source| BootError::Memory { what, source }
}

/// Loads everything and writes the boot information; returns where the boot vCPU starts.
pub fn load(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &Cmdline,
) -> Result<BootEntry, BootError> {
    check_kernel(&mut open("kernel", kernel)?, kernel, mem_size)?;
    let (result, entry) = load_kernel(mem, kernel)?;
    let low_ram_end = mem_size.min(MMIO_GAP_START);
    let initrd_limit = result.setup_header.map_or(low_ram_end, |h| {
        low_ram_end.min(u64::from(h.initrd_addr_max) + 1)
    });
    let initrd = initrd
        .map(|p| load_initrd(mem, p, result.kernel_end, initrd_limit))
        .transpose()?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), cmdline).map_err(|e| BootError::Load {
        path: kernel.to_owned(),
        source: e,
    })?;
    let cmdline_size = cmdline
        .as_cstring()
        .map_err(BootError::Cmdline)?
        .as_bytes_with_nul()
        .len() as u32;
    match entry.mode {
        EntryMode::Linux64 => write_boot_params(mem, mem_size, &result, initrd, cmdline_size)?,
        EntryMode::Pvh => write_pvh_start_info(mem, mem_size, initrd)?,
    }
    Ok(entry)
}

fn write_boot_params(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    result: &KernelLoaderResult,
    initrd: Option<(u64, u64)>,
    cmdline_size: u32,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(hdr) = result.setup_header {
        params.hdr = hdr;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_size;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let ram = usable_ram(mem_size);
    for (i, (addr, size)) in ram.iter().enumerate() {
        params.e820_table[i].addr = *addr;
        params.e820_table[i].size = *size;
        params.e820_table[i].r#type = E820_RAM;
    }
    params.e820_entries = ram.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(mem_err("boot_params"))
}

fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let ram = usable_ram(mem_size);
    for (i, (addr, size)) in ram.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: *addr,
            size: *size,
            type_: E820_RAM,
            reserved: 0,
        };
        let at = PVH_MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_obj(entry, GuestAddress(at))
            .map_err(mem_err("PVH memory map"))?;
    }
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: ram.len() as u32,
        ..Default::default()
    };
    if let Some((addr, size)) = initrd {
        // The module list goes right after the start info.
        let modlist = PVH_INFO_ADDR + std::mem::size_of::<hvm_start_info>() as u64;
        let module = hvm_modlist_entry {
            paddr: addr,
            size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(modlist))
            .map_err(mem_err("PVH module list"))?;
        info.nr_modules = 1;
        info.modlist_paddr = modlist;
    }
    mem.write_obj(info, GuestAddress(PVH_INFO_ADDR))
        .map_err(mem_err("PVH start info"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_announces_devices_and_guest_args() {
        let c = build_cmdline(
            "console=ttyS0",
            &[(0xc000_1000, 5), (0xc000_2000, 6)],
            &["hello".into(), "x".into()],
        )
        .unwrap();
        assert_eq!(
            c.as_cstring().unwrap().to_str().unwrap(),
            "console=ttyS0 virtio_mmio.device=4K@0xc0001000:5 \
             virtio_mmio.device=4K@0xc0002000:6 -- hello x"
        );
    }

    proptest::proptest! {
        /// Arbitrary bytes behind an ELF or bzImage signature never panic the loader.
        #[test]
        fn malformed_kernels_fail_cleanly(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            elf in proptest::prelude::any::<bool>(),
        ) {
            let mut image = body;
            if elf {
                image.splice(0..0, *b"\x7fELF\x02\x01\x01");
            } else {
                image.resize(image.len().max(0x400), 0);
                image[0x202..0x206].copy_from_slice(b"HdrS");
            }
            let path = std::env::temp_dir().join(format!(
                "vcuda-fuzz-kernel-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::write(&path, &image).unwrap();
            let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
            let c = build_cmdline("", &[], &[]).unwrap();
            let _ = load(&mem, 16 << 20, &path, None, &c);
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn finds_the_linux_elf_note() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        ph[0x08..0x10].copy_from_slice(&120u64.to_le_bytes());
        ph[0x20..0x28].copy_from_slice(&24u64.to_le_bytes());
        elf.extend_from_slice(&ph);
        for word in [6u32, 4, 0] {
            elf.extend_from_slice(&word.to_le_bytes());
        }
        elf.extend_from_slice(b"Linux\0\0\0\x01\0\0\0");
        let path = std::env::temp_dir().join(format!("vcuda-note-{}", std::process::id()));
        std::fs::write(&path, &elf).unwrap();
        assert!(has_linux_note(&mut File::open(&path).unwrap()));
        elf[120 + 12] = b'X';
        std::fs::write(&path, &elf).unwrap();
        assert!(!has_linux_note(&mut File::open(&path).unwrap()));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn guest_args_with_blanks_are_quoted_and_inexpressible_ones_refused() {
        let c = build_cmdline(
            "x",
            &[],
            &["sh".into(), "-c".into(), "echo a=$(b c)".into()],
        )
        .unwrap();
        assert_eq!(
            c.as_cstring().unwrap().to_str().unwrap(),
            "x -- sh -c \"echo a=$(b c)\""
        );
        for bad in ["say \"hi\"", "", "tab\there", "caf\u{e9}"] {
            let err = build_cmdline("", &[], &[bad.into()]).unwrap_err();
            assert!(matches!(err, BootError::GuestArg(..)), "{bad:?}: {err}");
        }
        let many: Vec<String> = (0..=MAX_GUEST_ARGS).map(|i| i.to_string()).collect();
        let err = build_cmdline("", &[], &many).unwrap_err();
        assert!(err.to_string().contains("at most 31"), "{err}");
    }

    /// A minimal ELF64 with one PT_LOAD segment of `filesz` bytes at file offset 0x1000,
    /// `memsz` bytes at 16 MiB.
    fn elf_with_segment(filesz: u64, memsz: u64) -> Vec<u8> {
        let mut elf = vec![0u8; 0x1000];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        elf[ph + 0x08..ph + 0x10].copy_from_slice(&0x1000u64.to_le_bytes());
        elf[ph + 0x18..ph + 0x20].copy_from_slice(&(16u64 << 20).to_le_bytes());
        elf[ph + 0x20..ph + 0x28].copy_from_slice(&filesz.to_le_bytes());
        elf[ph + 0x28..ph + 0x30].copy_from_slice(&memsz.to_le_bytes());
        elf
    }

    fn check(image: &[u8], mem: u64) -> Result<(), BootError> {
        let path = std::env::temp_dir().join(format!(
            "vcuda-check-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, image).unwrap();
        let r = check_kernel(&mut File::open(&path).unwrap(), &path, mem);
        std::fs::remove_file(path).unwrap();
        r
    }

    #[test]
    fn truncated_and_oversized_kernels_are_named_before_loading() {
        let mut whole = elf_with_segment(0x2000, 0x4000);
        whole.resize(0x3000, 0);
        check(&whole, 64 << 20).unwrap();
        let err = check(&whole[..0x2000], 64 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::Truncated {
                    needs: 0x3000,
                    has: 0x2000,
                    ..
                }
            ),
            "{err}"
        );
        let err = check(&whole, 16 << 20).unwrap_err();
        assert!(err.to_string().contains("more --mem"), "{err}");

        // A bzImage: 4 setup sectors (setup_sects 0), 0x100 paragraphs of payload.
        let mut bz = vec![0u8; 5 * 512 + 0x1000];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x1f4..0x1f8].copy_from_slice(&0x100u32.to_le_bytes());
        bz[0x258..0x260].copy_from_slice(&(16u64 << 20).to_le_bytes());
        bz[0x260..0x264].copy_from_slice(&(32u32 << 20).to_le_bytes());
        check(&bz, 64 << 20).unwrap();
        let err = check(&bz[..5 * 512 + 0x800], 64 << 20).unwrap_err();
        assert!(matches!(err, BootError::Truncated { .. }), "{err}");
        let err = check(&bz, 32 << 20).unwrap_err();
        assert!(
            matches!(err, BootError::KernelTooBig { needs, .. } if needs == 48 << 20),
            "{err}"
        );
    }

    #[test]
    fn initrd_signatures() {
        for good in [
            &b"070701000"[..],
            b"\x1f\x8b\x08",
            b"\x28\xb5\x2f\xfd..",
            b"\xfd7zXZ\0",
        ] {
            assert!(looks_like_initrd(good), "{good:?}");
        }
        let mut ext2 = vec![0u8; 0x800];
        ext2[0x438..0x43a].copy_from_slice(&[0x53, 0xef]);
        assert!(looks_like_initrd(&ext2));
        for bad in [&b"{\"name\": 1}"[..], b"\x7fELF", b""] {
            assert!(!looks_like_initrd(bad), "{bad:?}");
        }
    }

    #[test]
    fn garbage_kernel_is_rejected() {
        let dir = std::env::temp_dir().join(format!("vcuda-boot-{}", std::process::id()));
        std::fs::write(&dir, b"not a kernel at all").unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let c = build_cmdline("", &[], &[]).unwrap();
        let err = load(&mem, 16 << 20, &dir, None, &c).unwrap_err();
        assert!(matches!(err, BootError::UnknownFormat(_)), "{err}");
        let err = load(&mem, 16 << 20, Path::new("/nonexistent/k"), None, &c).unwrap_err();
        assert!(err.to_string().contains("--kernel"), "{err}");
        std::fs::remove_file(dir).unwrap();
    }
}
