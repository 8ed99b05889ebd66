//! Random and mutated PTX never panics the front end (and, when it parses, never panics a launch).

use std::sync::Arc;

use proptest::prelude::*;
use vcuda_ptx::memory::Arena;
use vcuda_ptx::{launch, LaunchConfig, LaunchOptions, LoadedModule, Module};

const PTX: &str = include_str!("fixtures/kernels.ptx");

fn try_run(src: &str) {
    let Ok(m) = Module::parse(src) else { return };
    let arena = Arena::new(0x1000_0000, 1 << 26);
    let Ok(lm) = LoadedModule::load(Arc::new(m), &arena) else {
        return;
    };
    let buf = arena.alloc(4096, 256).unwrap();
    let params: Vec<u8> = std::iter::repeat_n(buf.to_le_bytes(), 32)
        .flatten()
        .collect();
    let names: Vec<String> = lm
        .module()
        .kernels()
        .iter()
        .map(|k| k.name.clone())
        .collect();
    for k in names {
        let cfg = LaunchConfig {
            grid: [2, 1, 1],
            block: [64, 1, 1],
            dynamic_shared_bytes: 256,
        };
        let opts = LaunchOptions {
            instruction_budget: 20_000,
            printf: &|_| {},
            parallel: false,
            time_limit: None,
            cancel: None,
        };
        let _ = launch(&lm, &k, &cfg, &params, &arena, &opts);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(s in "\\PC{0,400}") {
        let _ = Module::parse(&s);
    }

    #[test]
    fn ptx_like_tokens_never_panic(toks in proptest::collection::vec(prop_oneof![
        Just(".entry"), Just(".func"), Just(".reg"), Just(".b32"), Just(".pred"), Just("%r<4>"), Just("%r1"),
        Just("%p1"), Just("{"), Just("}"), Just("("), Just(")"), Just("["), Just("]"), Just(";"), Just(","),
        Just("@%p1"), Just("bra"), Just("L:"), Just("L"), Just("add.s32"), Just("ld.global.u32"), Just("0f3F800000"),
        Just("-1"), Just("+"), Just(".param .u64 p"), Just("ret;"), Just("call"), Just(".shared .b8 s[16]"),
        Just("k"), Just("mov.u32"), Just("%tid.x"), Just(".visible"), Just(".extern"), Just("= {1, 2}"),
    ], 0..60)) {
        let s = toks.join(" ");
        let _ = Module::parse(&s);
        let _ = Module::parse(&format!(".version 8.0\n.target sm_80\n.address_size 64\n{s}"));
    }

    #[test]
    fn mutated_fixture_never_panics(cuts in proptest::collection::vec((0usize..PTX.len(), 0usize..40, 0u8..6), 1..4)) {
        let mut s = PTX.as_bytes().to_vec();
        for (pos, len, kind) in cuts {
            let pos = pos.min(s.len());
            let end = (pos + len).min(s.len());
            match kind {
                0 => { s.drain(pos..end); }
                1 => { let dup = s[pos..end].to_vec(); s.splice(pos..pos, dup); }
                2 => { if pos < s.len() { s[pos] = b'1'; } }
                3 => { s.splice(pos..pos, b"%r1".iter().copied()); }
                4 => { if pos < s.len() { s[pos] = b'{'; } }
                _ => { s.splice(pos..pos, b" 0xffffffffffff ".iter().copied()); }
            }
        }
        try_run(&String::from_utf8_lossy(&s));
    }
}

#[test]
fn hostile_sizes_are_errors() {
    let big_reg = ".version 8.0\n.target sm_80\n.entry k() { .reg .b32 %r<4000000000>; mov.u32 %r3999999999, 1; ret; }";
    assert!(
        Module::parse(big_reg).is_ok(),
        "declared ranges cost nothing until used"
    );
    let big_local = ".version 8.0\n.target sm_80\n.entry k() { .local .b8 x[100000000000]; ret; }";
    assert!(Module::parse(big_local).is_err());
    let big_shared = ".version 8.0\n.target sm_80\n.shared .b8 s[1000000];\n.entry k(.param .u64 p) { .reg .b64 %rd<2>; mov.u64 %rd1, s; ret; }";
    let m = Module::parse(big_shared).unwrap();
    let arena = Arena::new(0x1000_0000, 1 << 20);
    let lm = LoadedModule::load(Arc::new(m), &arena).unwrap();
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [1, 1, 1],
        dynamic_shared_bytes: 0,
    };
    let opts = LaunchOptions {
        instruction_budget: 100,
        printf: &|_| {},
        parallel: false,
        time_limit: None,
        cancel: None,
    };
    assert!(launch(&lm, "k", &cfg, &[0; 8], &arena, &opts).is_err());
    let huge_global = ".version 8.0\n.target sm_80\n.global .b8 g[1099511627776];\n";
    let m = Module::parse(huge_global).unwrap();
    assert!(LoadedModule::load(Arc::new(m), &arena).is_err());
    let deep = format!(
        ".version 8.0\n.target sm_80\n.entry k() {}ret;{} ",
        "{".repeat(10_000),
        "}".repeat(10_000)
    );
    assert!(Module::parse(&deep).is_err());
}

#[test]
fn overflowing_layouts_are_errors_not_panics() {
    let src = ".version 8.0\n.target sm_80\n.shared .align 16 .b8 a[18446744073709551600];\n.shared .align 16 .b8 b[64];\n\
               .extern .shared .align 16 .b8 d[];\n\
               .entry k() { .reg .b64 %rd<4>; mov.u64 %rd1, a; mov.u64 %rd2, b; mov.u64 %rd3, d; ret; }";
    let m = Module::parse(src).unwrap();
    let arena = Arena::new(0x1000_0000, 1 << 20);
    let lm = LoadedModule::load(Arc::new(m), &arena).unwrap();
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [1, 1, 1],
        dynamic_shared_bytes: u32::MAX,
    };
    let opts = LaunchOptions {
        instruction_budget: 100,
        printf: &|_| {},
        parallel: false,
        time_limit: None,
        cancel: None,
    };
    assert!(launch(&lm, "k", &cfg, &[], &arena, &opts).is_err());
    let shfl = ".version 8.0\n.target sm_80\n.entry k() { .reg .b32 %r<3>; mov.u32 %r1, 5;\n\
                shfl.sync.up.b32 %r2, %r1, -2147483648, 0, -1; shfl.sync.down.b32 %r2, %r1, -1, 31, -1; ret; }";
    let lm = LoadedModule::load(Arc::new(Module::parse(shfl).unwrap()), &arena).unwrap();
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [32, 1, 1],
        dynamic_shared_bytes: 0,
    };
    launch(&lm, "k", &cfg, &[], &arena, &opts).unwrap();
}
