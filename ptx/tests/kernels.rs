//! End-to-end: kernels compiled by nvcc 13 (`fixtures/kernels.cu` → `fixtures/kernels.ptx`, see the
//! command in the .cu header) executed through `launch`, checked against host computations.

use std::sync::{Arc, Mutex};

use vcuda_ptx::memory::Arena;
use vcuda_ptx::{launch, ExecError, LaunchConfig, LaunchOptions, LoadedModule, Module};

const PTX: &str = include_str!("fixtures/kernels.ptx");

struct Dev {
    arena: Arena,
    m: LoadedModule,
}

impl Dev {
    fn new() -> Dev {
        let arena = Arena::new(0x7000_0000_0000, 1 << 34);
        let module = Arc::new(Module::parse(PTX).expect("fixture parses"));
        let m = LoadedModule::load(module, &arena).unwrap();
        Dev { arena, m }
    }
    fn upload<T: Copy>(&self, data: &[T]) -> u64 {
        let bytes = std::mem::size_of_val(data);
        let p = self.arena.alloc(bytes.max(1) as u64, 256).unwrap();
        // SAFETY: `data` is a slice of plain `Copy` numbers; viewing its bytes is sound.
        let raw = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), bytes) };
        self.arena.write(p, raw).unwrap();
        p
    }
    fn zeros(&self, bytes: usize) -> u64 {
        let p = self.arena.alloc(bytes as u64, 256).unwrap();
        self.arena.fill(p, &[0], bytes as u64).unwrap();
        p
    }
    fn download<T: Copy + Default>(&self, p: u64, n: usize) -> Vec<T> {
        let mut v = vec![T::default(); n];
        let bytes = std::mem::size_of_val(&v[..]);
        // SAFETY: `v` holds `n` plain numbers; every byte pattern is a valid value of them.
        let raw = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), bytes) };
        self.arena.read(p, raw).unwrap();
        v
    }
    fn run(
        &self,
        k: &str,
        grid: [u32; 3],
        block: [u32; 3],
        dyn_smem: u32,
        args: &[u64],
    ) -> Result<(), ExecError> {
        self.run_with(k, grid, block, dyn_smem, args, &|_| {})
    }
    fn run_with(
        &self,
        k: &str,
        grid: [u32; 3],
        block: [u32; 3],
        dyn_smem: u32,
        args: &[u64],
        printf: &(dyn Fn(&str) + Sync),
    ) -> Result<(), ExecError> {
        let info = self.m.module().kernels().iter().find(|x| x.name == k);
        let mut params = vec![0u8; 256];
        for (p, a) in info.map_or(&[][..], |i| &i.params[..]).iter().zip(args) {
            let o = p.offset as usize;
            params[o..o + p.size as usize].copy_from_slice(&a.to_le_bytes()[..p.size as usize]);
        }
        let cfg = LaunchConfig {
            grid,
            block,
            dynamic_shared_bytes: dyn_smem,
        };
        let opts = LaunchOptions {
            instruction_budget: 1 << 32,
            printf,
            parallel: true,
            time_limit: None,
            cancel: None,
        };
        launch(&self.m, k, &cfg, &params, &self.arena, &opts).map(|_| ())
    }
}

fn lcg(seed: &mut u64) -> u32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 33) as u32
}

#[test]
fn module_metadata() {
    let m = Module::parse(PTX).unwrap();
    let names: Vec<_> = m.kernels().iter().map(|k| k.name.as_str()).collect();
    for k in [
        "vec_add",
        "reduce_sum",
        "sgemm_tiled",
        "dgemm_tiled",
        "atomics",
        "warp_ops",
        "hello_printf",
    ] {
        assert!(names.contains(&k), "{k} missing from {names:?}");
    }
    let va = m.kernels().iter().find(|k| k.name == "vec_add").unwrap();
    assert_eq!(
        va.params
            .iter()
            .map(|p| (p.offset, p.size))
            .collect::<Vec<_>>(),
        vec![(0, 8), (8, 8), (16, 8), (24, 4)]
    );
    let rs = m.kernels().iter().find(|k| k.name == "reduce_sum").unwrap();
    assert_eq!(rs.static_shared_bytes, 1024);
    let sg = m
        .kernels()
        .iter()
        .find(|k| k.name == "sgemm_tiled")
        .unwrap();
    assert_eq!(sg.static_shared_bytes, 2048);
    let g: Vec<_> = m.globals().iter().map(|g| g.name.as_str()).collect();
    assert!(
        g.contains(&"coeffs") && g.contains(&"lut") && g.contains(&"dev_counter"),
        "{g:?}"
    );
}

#[test]
fn vec_add() {
    let d = Dev::new();
    let n = 10_000usize;
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|i| 1.0 / (i as f32 + 1.0)).collect();
    let (pa, pb, pc) = (d.upload(&a), d.upload(&b), d.zeros(n * 4));
    d.run(
        "vec_add",
        [n.div_ceil(256) as u32, 1, 1],
        [256, 1, 1],
        0,
        &[pa, pb, pc, n as u64],
    )
    .unwrap();
    let c: Vec<f32> = d.download(pc, n);
    for i in 0..n {
        assert_eq!(c[i], a[i] + b[i]);
    }
}

#[test]
fn reduce_sum() {
    let d = Dev::new();
    let n = 100_000usize;
    let mut s = 1;
    let x: Vec<f32> = (0..n).map(|_| (lcg(&mut s) % 100) as f32).collect();
    let blocks = n.div_ceil(512);
    let (px, po) = (d.upload(&x), d.zeros(blocks * 4));
    d.run(
        "reduce_sum",
        [blocks as u32, 1, 1],
        [256, 1, 1],
        0,
        &[px, po, n as u64],
    )
    .unwrap();
    let out: Vec<f32> = d.download(po, blocks);
    let total: f64 = out.iter().map(|&v| f64::from(v)).sum();
    assert_eq!(total, x.iter().map(|&v| f64::from(v)).sum::<f64>());
}

#[test]
fn sgemm_and_dgemm() {
    let d = Dev::new();
    let n = 70usize; // not a multiple of the tile: exercises the bounds checks
    let mut s = 7;
    let a: Vec<f32> = (0..n * n)
        .map(|_| (lcg(&mut s) % 17) as f32 - 8.0)
        .collect();
    let b: Vec<f32> = (0..n * n)
        .map(|_| (lcg(&mut s) % 13) as f32 - 6.0)
        .collect();
    let (pa, pb, pc) = (d.upload(&a), d.upload(&b), d.zeros(n * n * 4));
    let g = n.div_ceil(16) as u32;
    d.run(
        "sgemm_tiled",
        [g, g, 1],
        [16, 16, 1],
        0,
        &[pa, pb, pc, n as u64],
    )
    .unwrap();
    let c: Vec<f32> = d.download(pc, n * n);
    let ad: Vec<f64> = a.iter().map(|&v| f64::from(v) / 3.0).collect();
    let bd: Vec<f64> = b.iter().map(|&v| f64::from(v) * 1.25).collect();
    let (qa, qb, qc) = (d.upload(&ad), d.upload(&bd), d.zeros(n * n * 8));
    d.run(
        "dgemm_tiled",
        [g, g, 1],
        [16, 16, 1],
        0,
        &[qa, qb, qc, n as u64],
    )
    .unwrap();
    let cd: Vec<f64> = d.download(qc, n * n);
    for i in 0..n {
        for j in 0..n {
            let want: f32 = (0..n).map(|k| a[i * n + k] * b[k * n + j]).sum();
            assert_eq!(c[i * n + j], want, "sgemm ({i},{j})");
            let wd: f64 = (0..n).map(|k| ad[i * n + k] * bd[k * n + j]).sum();
            assert!(
                (cd[i * n + j] - wd).abs() <= 1e-9 * (1.0 + wd.abs()),
                "dgemm ({i},{j})"
            );
        }
    }
}

#[test]
fn atomics() {
    let d = Dev::new();
    let threads = 64 * 40u64;
    let ci = d.zeros(4);
    let cf = d.zeros(4);
    let cu = d.zeros(4);
    let cl = d.zeros(8);
    let cd = d.zeros(8);
    let mn = d.upload(&[i32::MAX]);
    let mx = d.upload(&[i32::MIN]);
    let cas = d.zeros(4);
    d.run(
        "atomics",
        [40, 1, 1],
        [64, 1, 1],
        0,
        &[ci, cf, cu, cl, cd, mn, mx, cas],
    )
    .unwrap();
    assert_eq!(d.download::<i32>(ci, 1)[0], threads as i32);
    assert_eq!(d.download::<f32>(cf, 1)[0], threads as f32 * 0.5);
    assert_eq!(d.download::<u32>(cu, 1)[0], threads as u32);
    assert_eq!(d.download::<u64>(cl, 1)[0], threads * (threads - 1) / 2);
    assert_eq!(d.download::<f64>(cd, 1)[0], threads as f64 * 0.25);
    assert_eq!(d.download::<i32>(mn, 1)[0], -(threads as i32 - 1));
    assert_eq!(d.download::<i32>(mx, 1)[0], threads as i32 - 1);
    assert_eq!(d.download::<i32>(cas, 1)[0], 2 * threads as i32);
}

#[test]
fn warp_ops() {
    let d = Dev::new();
    let n = 128usize;
    let mut s = 3;
    let x: Vec<i32> = (0..n).map(|_| (lcg(&mut s) % 50) as i32).collect();
    let (px, po) = (d.upload(&x), d.zeros(n * 7 * 4));
    d.run("warp_ops", [2, 1, 1], [64, 1, 1], 0, &[px, po])
        .unwrap();
    let o: Vec<i32> = d.download(po, n * 7);
    for t in 0..n {
        let (w, l) = (t / 32 * 32, t % 32);
        let lane = |j: usize| x[w + j];
        // Tree reduction with shfl.down: lanes past the end keep their own value.
        let mut v: Vec<i32> = (0..32).map(lane).collect();
        for off in [16, 8, 4, 2, 1] {
            let prev = v.clone();
            for j in 0..32 {
                v[j] = prev[j].wrapping_add(if j + off < 32 { prev[j + off] } else { prev[j] });
            }
        }
        let r = &o[t * 7..t * 7 + 7];
        assert_eq!(r[0], v[l], "shfl_down sum, thread {t}");
        assert_eq!(r[1], lane(l ^ 1));
        assert_eq!(r[2], if l >= 2 { lane(l - 2) } else { lane(l) });
        assert_eq!(r[3], lane(3));
        let ballot = (0..32)
            .filter(|&j| lane(j) & 1 != 0)
            .fold(0u32, |b, j| b | 1 << j);
        assert_eq!(r[4] as u32, ballot);
        assert_eq!(r[5], 1);
        assert_eq!(r[6], 0);
    }
}

#[test]
fn divergent_collatz() {
    let d = Dev::new();
    let n = 300usize;
    let x: Vec<i32> = (1..=n as i32).collect();
    let (px, po) = (d.upload(&x), d.zeros(n * 4));
    d.run("divergent", [3, 1, 1], [128, 1, 1], 0, &[px, po, n as u64])
        .unwrap();
    let o: Vec<i32> = d.download(po, n);
    for (i, &v0) in x.iter().enumerate() {
        let (mut v, mut steps) = (v0, 0);
        while v != 1 && steps < 1000 {
            v = if v & 1 != 0 { 3 * v + 1 } else { v >> 1 };
            steps += 1;
        }
        assert_eq!(o[i], if steps > 50 { -steps } else { steps }, "x={v0}");
    }
}

#[test]
fn constant_memory_and_globals() {
    let d = Dev::new();
    let (lut, size) = d.m.global("lut").unwrap();
    assert_eq!(size, 32);
    d.arena
        .write(
            lut,
            &(0..8i32)
                .flat_map(|i| (i * 10).to_le_bytes())
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let n = 40usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
    let (px, py) = (d.upload(&x), d.zeros(n * 4));
    d.run("poly_const", [1, 1, 1], [64, 1, 1], 0, &[px, py, n as u64])
        .unwrap();
    let y: Vec<f32> = d.download(py, n);
    for i in 0..n {
        let v = x[i];
        let want = 1.0f32 + v * (2.0 + v * (3.0 + v * 4.0)) + (10 * (i & 7)) as f32 + 7.0;
        assert!(
            (y[i] - want).abs() <= want.abs() * 1e-6,
            "{i}: {} vs {want}",
            y[i]
        );
    }
}

#[test]
fn dynamic_shared() {
    let d = Dev::new();
    let n = 100usize;
    let x: Vec<i32> = (0..(3 * n) as i32).collect();
    let (px, po) = (d.upload(&x), d.zeros(3 * n * 4));
    d.run(
        "dyn_shared_reverse",
        [3, 1, 1],
        [128, 1, 1],
        (n * 4) as u32,
        &[px, po, n as u64],
    )
    .unwrap();
    let o: Vec<i32> = d.download(po, 3 * n);
    for b in 0..3 {
        for t in 0..n {
            assert_eq!(o[b * n + t], x[b * n + n - 1 - t]);
        }
    }
    // Too little dynamic shared memory: the kernel indexes past it.
    let e = d
        .run(
            "dyn_shared_reverse",
            [1, 1, 1],
            [128, 1, 1],
            16,
            &[px, po, n as u64],
        )
        .unwrap_err();
    assert!(matches!(e, ExecError::IllegalAddress { .. }), "{e:?}");
}

fn ulps32(a: f32, b: f32) -> u32 {
    if a == b || a.is_nan() && b.is_nan() {
        return 0;
    }
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

#[test]
fn math_f32_and_f64() {
    let d = Dev::new();
    let x: Vec<f32> = vec![0.5, 1.0, 2.0, 1.2345, 10.0, 0.001, 100.0, 7.5];
    let n = x.len();
    let (px, po) = (d.upload(&x), d.zeros(n * 8 * 4));
    d.run("math_f32", [1, 1, 1], [32, 1, 1], 0, &[px, po, n as u64])
        .unwrap();
    let o: Vec<f32> = d.download(po, n * 8);
    for (i, &v) in x.iter().enumerate() {
        let r = &o[i * 8..i * 8 + 8];
        let want = [
            v.sin(),
            v.cos(),
            v.exp(),
            v.ln(),
            v.powf(1.5),
            v.sqrt(),
            v.tanh(),
        ];
        for (k, w) in want.iter().enumerate() {
            assert!(ulps32(r[k], *w) <= 4, "f32 fn {k} of {v}: {} vs {w}", r[k]);
        }
        let fast = 1.0 / v + v.sin() + v.exp() + 1.0 / v.sqrt();
        assert!(
            r[7] == fast || (r[7] - fast).abs() <= fast.abs() * 1e-5,
            "fast math of {v}: {} vs {fast}",
            r[7]
        );
    }
    let xd: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let (px, po) = (d.upload(&xd), d.zeros(n * 6 * 8));
    d.run("math_f64", [1, 1, 1], [32, 1, 1], 0, &[px, po, n as u64])
        .unwrap();
    let o: Vec<f64> = d.download(po, n * 6);
    for (i, &v) in xd.iter().enumerate() {
        let r = &o[i * 6..i * 6 + 6];
        let want = [v.sin(), v.cos(), v.exp(), v.ln(), v.powf(1.5), v.sqrt() / v];
        for (k, w) in want.iter().enumerate() {
            assert!(
                (r[k] - w).abs() <= w.abs() * 1e-15 + 1e-300,
                "f64 fn {k} of {v}: {} vs {w}",
                r[k]
            );
        }
    }
}

#[test]
fn printf_lines() {
    let d = Dev::new();
    let lines = Mutex::new(Vec::new());
    let sink = |s: &str| lines.lock().unwrap().push(s.to_owned());
    d.run_with("hello_printf", [2, 1, 1], [2, 1, 1], 0, &[5], &sink)
        .unwrap();
    let mut l = lines.into_inner().unwrap();
    l.sort();
    assert_eq!(l.len(), 4);
    assert_eq!(
        l[0],
        "hello from 0/0: k=5 f=7.500000 x=0xff s=str ll=-1234567890123 3.14e+04|5   |\n"
    );
    assert_eq!(
        l[3],
        "hello from 1/1: k=5 f=7.500000 x=0xff s=str ll=-1234567890123 3.14e+04|5   |\n"
    );
}

#[test]
fn noinline_calls() {
    let d = Dev::new();
    let n = 200usize;
    let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();
    let (pa, pb, pc, side, sq) = (
        d.upload(&a),
        d.upload(&b),
        d.zeros(n * 4),
        d.zeros(4),
        d.zeros(256 * 4),
    );
    d.run(
        "call_noinline",
        [2, 1, 1],
        [128, 1, 1],
        0,
        &[pa, pb, pc, side, sq, n as u64],
    )
    .unwrap();
    let c: Vec<f32> = d.download(pc, n);
    let mut greater = 0;
    for i in 0..n {
        let want = if a[i] > b[i] {
            greater += 1;
            a[i] * 2.0 - b[i]
        } else {
            b[i] * 3.0 + a[i]
        };
        assert_eq!(c[i], want, "{i}");
    }
    assert_eq!(d.download::<i32>(side, 1)[0], greater);
    let s: Vec<i32> = d.download(sq, n);
    for (i, v) in s.iter().enumerate() {
        assert_eq!(*v, (i * i) as i32);
    }
}

#[test]
fn integer_intrinsics() {
    let d = Dev::new();
    let n = 64usize;
    let mut s = 11;
    let x: Vec<u32> = (0..n)
        .map(|i| {
            if i == 0 {
                0
            } else {
                lcg(&mut s) ^ (lcg(&mut s) << 16)
            }
        })
        .collect();
    let (px, po) = (d.upload(&x), d.zeros(n * 8 * 4));
    d.run("int_misc", [1, 1, 1], [64, 1, 1], 0, &[px, po, n as u64])
        .unwrap();
    let o: Vec<u32> = d.download(po, n * 8);
    for (i, &v) in x.iter().enumerate() {
        let r = &o[i * 8..i * 8 + 8];
        assert_eq!(r[0], v.count_ones());
        assert_eq!(r[1], v.leading_zeros());
        assert_eq!(r[2], v.reverse_bits());
        let sel = 0x3210 ^ (i as u32 & 0x7777);
        let bytes = (u64::from(0x1234_5678u32) << 32 | u64::from(v)).to_le_bytes();
        let perm = (0..4).fold(0u32, |acc, k| {
            acc | u32::from(bytes[(sel >> (4 * k)) as usize & 7]) << (8 * k)
        });
        assert_eq!(r[3], perm, "prmt {i}");
        assert_eq!(r[4], ((u64::from(v) * 0x9e37_79b9) >> 32) as u32);
        assert_eq!(r[5], v.rotate_right(i as u32 & 31));
        assert_eq!(r[6], v / (i as u32 + 1) + v % 7);
        let ffs = if v == 0 { 0 } else { v.trailing_zeros() + 1 };
        assert_eq!(r[7], ((v as i32) / -3) as u32 ^ ffs);
    }
}

#[test]
fn early_exit_then_barrier() {
    let d = Dev::new();
    let po = d.zeros(32 * 4);
    d.run("early_exit_barrier", [1, 1, 1], [64, 1, 1], 0, &[po])
        .unwrap();
    let o: Vec<i32> = d.download(po, 32);
    for (t, v) in o.iter().enumerate() {
        assert_eq!(*v, 2 * t as i32 + 32);
    }
}

#[test]
fn launch_errors() {
    let d = Dev::new();
    let e = d.run("nope", [1, 1, 1], [1, 1, 1], 0, &[]).unwrap_err();
    assert_eq!(e, ExecError::NotFound("nope".into()));
    let e = d
        .run("vec_add", [1, 1, 1], [1025, 1, 1], 0, &[0, 0, 0, 0])
        .unwrap_err();
    assert!(matches!(e, ExecError::InvalidConfig(_)));
    let e = d
        .run(
            "dyn_shared_reverse",
            [1, 1, 1],
            [32, 1, 1],
            200 * 1024,
            &[0, 0, 0],
        )
        .unwrap_err();
    assert!(matches!(e, ExecError::InvalidConfig(_)));
    // Null pointers: every thread faults; the launch reports IllegalAddress, at the address of
    // whichever block faulted first (blocks run in parallel): one of a[0..1024].
    let e = d
        .run("vec_add", [4, 1, 1], [256, 1, 1], 0, &[0, 0, 0, 1024])
        .unwrap_err();
    assert!(
        matches!(e, ExecError::IllegalAddress { addr } if addr % 4 == 0 && addr < 4096),
        "{e:?}"
    );
}
