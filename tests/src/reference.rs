//! Host computations of what each test kernel (`tests/cuda/kernels/`) must produce, in plain
//! Rust, and the comparison helpers the suites use.
//!
//! Where the kernel's floating-point evaluation order is fixed (reductions, matmul, filters:
//! nvcc contracts `acc += a * b` to `fma.rn` and never reassociates without fast-math), the
//! reference replays that exact order with [`f32::mul_add`], so a correct interpreter matches
//! bit for bit. Math library functions cannot match bit for bit: [`MATH_F32`] and [`MATH_F64`]
//! give each its tolerance in ULPs.

use std::fmt::Debug;

// ---------------------------------------------------------------------------------------------
// Inputs

/// A small deterministic generator (SplitMix64) for test inputs: same seed, same data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `[lo, hi)` (hi > lo).
    pub fn i32_in(&mut self, lo: i32, hi: i32) -> i32 {
        let span = (i64::from(hi) - i64::from(lo)).max(1) as u64;
        (i64::from(lo) + (self.next_u64() % span) as i64) as i32
    }

    /// Uniform in `[lo, hi)`.
    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// Uniform in `[lo, hi)`.
    pub fn f64_in(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }

    pub fn vec_f32(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32_in(lo, hi)).collect()
    }

    pub fn vec_f64(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.f64_in(lo, hi)).collect()
    }

    pub fn vec_i32(&mut self, n: usize, lo: i32, hi: i32) -> Vec<i32> {
        (0..n).map(|_| self.i32_in(lo, hi)).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// vadd.cu

pub fn vadd_f32(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

pub fn vadd_i32(a: &[i32], b: &[i32]) -> Vec<i32> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_add(*y)).collect()
}

/// `y = a * x + y` as one fused multiply-add per element, as nvcc compiles it.
pub fn saxpy(a: f32, x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(x, y)| a.mul_add(*x, *y)).collect()
}

// ---------------------------------------------------------------------------------------------
// reduce.cu

/// The per-block partial sums `reduce_sum_f32` writes for a launch of `grid` blocks of `block`
/// threads (block a power of two), in the kernel's exact order of additions.
pub fn reduce_f32_tree(input: &[f32], grid: usize, block: usize) -> Vec<f32> {
    let stride_all = grid * block;
    (0..grid)
        .map(|b| {
            let mut s: Vec<f32> = (0..block)
                .map(|t| {
                    let mut acc = 0.0f32;
                    let mut i = b * block + t;
                    while i < input.len() {
                        acc += input[i];
                        i += stride_all;
                    }
                    acc
                })
                .collect();
            let mut stride = block / 2;
            while stride > 0 {
                for t in 0..stride {
                    s[t] += s[t + stride];
                }
                stride /= 2;
            }
            s[0]
        })
        .collect()
}

/// What `reduce_sum_i32` accumulates into `*total` (starting from 0): the wrapping sum.
pub fn reduce_i32(input: &[i32]) -> i32 {
    input.iter().fold(0i32, |acc, x| acc.wrapping_add(*x))
}

/// The exactly rounded sum of `input` (through f64), to sanity-check float reductions.
pub fn sum_f64(input: &[f32]) -> f64 {
    input.iter().map(|x| f64::from(*x)).sum()
}

// ---------------------------------------------------------------------------------------------
// matmul.cu

/// The TILE of `matmul.cu`.
pub const TILE: usize = 16;

/// `C = A * B` (row-major, A m×k, B k×n) accumulated as the tiled kernel does: one fma per k,
/// in k order, with the last tile's padding contributing `fma(0, 0, acc)`.
pub fn matmul_f32(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let padded = k.div_ceil(TILE) * TILE;
    let mut c = vec![0.0f32; m * n];
    for row in 0..m {
        for col in 0..n {
            let mut acc = 0.0f32;
            for kk in 0..padded {
                let (x, y) = if kk < k {
                    (a[row * k + kk], b[kk * n + col])
                } else {
                    (0.0, 0.0)
                };
                acc = x.mul_add(y, acc);
            }
            c[row * n + col] = acc;
        }
    }
    c
}

/// [`matmul_f32`] in double precision.
pub fn matmul_f64(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    let padded = k.div_ceil(TILE) * TILE;
    let mut c = vec![0.0f64; m * n];
    for row in 0..m {
        for col in 0..n {
            let mut acc = 0.0f64;
            for kk in 0..padded {
                let (x, y) = if kk < k {
                    (a[row * k + kk], b[kk * n + col])
                } else {
                    (0.0, 0.0)
                };
                acc = x.mul_add(y, acc);
            }
            c[row * n + col] = acc;
        }
    }
    c
}

// ---------------------------------------------------------------------------------------------
// atomics.cu

/// `atomic_add` from zeroed outputs: (int sum, float count, double sum). The double sum is exact
/// (and so order-independent) while |sum| < 2^53; the float count while n < 2^24.
pub fn atomic_add(data: &[i32]) -> (i32, f32, f64) {
    (
        reduce_i32(data),
        data.len() as f32,
        data.iter().map(|x| f64::from(*x)).sum(),
    )
}

/// `atomic_minmax` from `[i32::MAX, i32::MIN]`.
pub fn atomic_minmax(data: &[i32]) -> [i32; 2] {
    [
        data.iter().copied().min().unwrap_or(i32::MAX),
        data.iter().copied().max().unwrap_or(i32::MIN),
    ]
}

/// Checks `atomic_exch` over n threads: every value written (the initial one and each thread
/// id) is read out exactly once (by a later exchange, or as the final value), so the multisets
/// {initial} ∪ {0..n} and old ∪ {final} are equal.
pub fn check_atomic_exch(initial: i32, final_slot: i32, old: &[i32]) -> Result<(), String> {
    let mut before: Vec<i32> = (0..old.len() as i32).collect();
    before.push(initial);
    let mut after: Vec<i32> = old.to_vec();
    after.push(final_slot);
    before.sort_unstable();
    after.sort_unstable();
    if before == after {
        Ok(())
    } else {
        Err(format!(
            "atomicExch chain broken: initial {initial}, final {final_slot}, old values {old:?}"
        ))
    }
}

/// Checks `atomic_inc` over n threads from a zero counter: the counter ends at n mod
/// (limit + 1) and the returned values are a permutation of 0, 1, ..., limit, 0, 1, ...
pub fn check_atomic_inc(limit: u32, counter: u32, returned: &[u32]) -> Result<(), String> {
    let modulus = u64::from(limit) + 1;
    let n = returned.len() as u64;
    let want_counter = (n % modulus) as u32;
    if counter != want_counter {
        return Err(format!(
            "atomicInc counter is {counter}, expected {want_counter} after {n} increments with limit {limit}"
        ));
    }
    let mut got = returned.to_vec();
    got.sort_unstable();
    let mut want: Vec<u32> = (0..n).map(|i| (i % modulus) as u32).collect();
    want.sort_unstable();
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "atomicInc returned values are not a permutation of the wrapping sequence (limit {limit})"
        ))
    }
}

/// `atomic_cas_sum_sq` from zero: the wrapping 64-bit sum of squares.
pub fn sum_sq(data: &[i32]) -> u64 {
    data.iter().fold(0u64, |acc, x| {
        acc.wrapping_add((i64::from(*x) * i64::from(*x)) as u64)
    })
}

/// `histogram16` from zeroed bins.
pub fn histogram16(data: &[i32]) -> [u32; 16] {
    let mut bins = [0u32; 16];
    for x in data {
        bins[(*x & 15) as usize] += 1;
    }
    bins
}

// ---------------------------------------------------------------------------------------------
// warp.cu

pub const WARP: usize = 32;

/// `shfl_down_sum`: one wrapping sum per warp of 32 inputs.
pub fn warp_sums(input: &[i32]) -> Vec<i32> {
    input.chunks(WARP).map(reduce_i32).collect()
}

/// `shfl_xor_max`: every lane gets its warp's maximum.
pub fn warp_max_broadcast(input: &[i32]) -> Vec<i32> {
    input
        .chunks(WARP)
        .flat_map(|w| {
            let m = w.iter().copied().max().unwrap_or(i32::MIN);
            std::iter::repeat_n(m, w.len())
        })
        .collect()
}

/// `shfl_gather`: lane i of each warp reads lane `src[i] & 31` of the same warp.
pub fn warp_gather(input: &[f32], src: &[i32]) -> Vec<f32> {
    (0..input.len())
        .map(|i| input[i / WARP * WARP + (src[i] & 31) as usize])
        .collect()
}

/// What `vote` writes for one warp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    pub ballot: u32,
    pub all: bool,
    pub any: bool,
    /// The ballot among lanes 0..15 only.
    pub low16: u32,
}

/// `vote` per warp, for predicates `input[i] != 0`.
pub fn warp_votes(input: &[i32]) -> Vec<Vote> {
    input
        .chunks(WARP)
        .map(|w| {
            let ballot = w
                .iter()
                .enumerate()
                .fold(0u32, |b, (lane, x)| b | (u32::from(*x != 0) << lane));
            Vote {
                ballot,
                all: ballot == u32::MAX,
                any: ballot != 0,
                low16: ballot & 0xffff,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// divergence.cu

/// Collatz steps from `start` (≥ 1) to 1, with 64-bit intermediates as in the kernel.
pub fn collatz_steps(start: u32) -> u32 {
    let mut x = u64::from(start);
    let mut steps = 0;
    while x != 1 {
        x = if x & 1 == 1 { 3 * x + 1 } else { x / 2 };
        steps += 1;
    }
    steps
}

/// `branchy` for one input.
pub fn branchy(v: i32) -> i32 {
    if v < 0 {
        return -1;
    }
    let mut acc = 0i32;
    for k in 0..v {
        if k % 3 == 0 {
            continue;
        }
        if acc > 1000 {
            break;
        }
        acc += if k & 1 == 1 { k } else { 2 * k };
    }
    if v % 7 == 0 {
        acc * 2
    } else {
        acc
    }
}

// ---------------------------------------------------------------------------------------------
// constant.cu

/// `fixed_coeffs` of `constant.cu`.
pub const FIXED_COEFFS: [f32; 5] = [0.0625, 0.25, 0.375, 0.25, 0.0625];

/// `fir` (with 9 coefficients) or `fir_fixed` (with [`FIXED_COEFFS`]): centred taps, zeros
/// outside the input, one fma per tap in tap order.
pub fn fir(input: &[f32], coeffs: &[f32]) -> Vec<f32> {
    let n = input.len() as i64;
    let half = (coeffs.len() / 2) as i64;
    (0..n)
        .map(|i| {
            coeffs.iter().enumerate().fold(0.0f32, |acc, (k, c)| {
                let j = i + k as i64 - half;
                let x = if (0..n).contains(&j) {
                    input[j as usize]
                } else {
                    0.0
                };
                c.mul_add(x, acc)
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// dynamic_shared.cu

/// `reverse_blocks`: each `block`-element chunk reversed.
pub fn reverse_blocks(data: &[f32], block: usize) -> Vec<f32> {
    data.chunks(block)
        .flat_map(|c| c.iter().rev().copied())
        .collect()
}

/// `block_prefix_sums`: inclusive wrapping prefix sums per `block`-element chunk, and the
/// number of scan rounds per block (ceil(log2(block))).
pub fn block_prefix_sums(input: &[i32], block: usize) -> (Vec<i32>, Vec<i32>) {
    let out = input
        .chunks(block)
        .flat_map(|c| {
            c.iter().scan(0i32, |acc, x| {
                *acc = acc.wrapping_add(*x);
                Some(*acc)
            })
        })
        .collect();
    let rounds = block.next_power_of_two().trailing_zeros() as i32;
    (out, vec![rounds; input.len().div_ceil(block)])
}

// ---------------------------------------------------------------------------------------------
// math.cu

/// One math library function as the kernels call it, its host reference and its tolerance.
#[derive(Clone, Copy)]
pub struct MathFn<T> {
    pub name: &'static str,
    /// `f(x, y)`; only `pow` uses `y`.
    pub reference: fn(T, T) -> T,
    /// The CUDA Programming Guide's maximum error for the function (without fast-math), plus 1
    /// ULP for the reference's own rounding.
    pub max_ulps: u64,
}

impl<T> Debug for MathFn<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (≤ {} ulps)", self.name, self.max_ulps)
    }
}

extern "C" {
    // glibc's libm, which Rust's std links on Linux; std has no stable erf.
    fn erf(x: f64) -> f64;
}

fn erf_f64(x: f64) -> f64 {
    // SAFETY: erf is a pure function of its argument.
    unsafe { erf(x) }
}

/// The single-precision references are evaluated in double precision and rounded, so they are
/// (all but always) correctly rounded; sqrt is exact (IEEE, and double rounding through f64 is
/// innocuous for sqrt), hence 0 ULPs.
/// Order and inputs as in `math_f32`: x in (0, 10] keeps log/pow/sqrt in their domains.
pub const MATH_F32: [MathFn<f32>; 8] = [
    MathFn {
        name: "sinf",
        reference: |x, _| (x as f64).sin() as f32,
        max_ulps: 3,
    },
    MathFn {
        name: "cosf",
        reference: |x, _| (x as f64).cos() as f32,
        max_ulps: 3,
    },
    MathFn {
        name: "expf",
        reference: |x, _| (x as f64).exp() as f32,
        max_ulps: 3,
    },
    MathFn {
        name: "logf",
        reference: |x, _| (x as f64).ln() as f32,
        max_ulps: 2,
    },
    MathFn {
        name: "powf",
        reference: |x, y| (x as f64).powf(y as f64) as f32,
        max_ulps: 5,
    },
    MathFn {
        name: "sqrtf",
        reference: |x, _| (x as f64).sqrt() as f32,
        max_ulps: 0,
    },
    MathFn {
        name: "tanhf",
        reference: |x, _| (x as f64).tanh() as f32,
        max_ulps: 3,
    },
    MathFn {
        name: "erff",
        reference: |x, _| erf_f64(x as f64) as f32,
        max_ulps: 3,
    },
];

/// Double precision, in the order of `math_f64`, against glibc (< 1 ULP).
pub const MATH_F64: [MathFn<f64>; 5] = [
    MathFn {
        name: "sin",
        reference: |x, _| x.sin(),
        max_ulps: 3,
    },
    MathFn {
        name: "exp",
        reference: |x, _| x.exp(),
        max_ulps: 2,
    },
    MathFn {
        name: "log",
        reference: |x, _| x.ln(),
        max_ulps: 2,
    },
    MathFn {
        name: "pow",
        reference: |x, y| x.powf(y),
        max_ulps: 3,
    },
    MathFn {
        name: "sqrt",
        reference: |x, _| x.sqrt(),
        max_ulps: 0,
    },
];

// ---------------------------------------------------------------------------------------------
// noinline.cu

/// `horner(x, degree)`: 1 + 2x + ... + (degree+1) x^degree, one fma per step.
pub fn horner(x: f32, degree: i32) -> f32 {
    (0..=degree)
        .rev()
        .fold(0.0f32, |acc, k| acc.mul_add(x, (k + 1) as f32))
}

pub fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

// ---------------------------------------------------------------------------------------------
// printf.cu

/// The lines `hello_printf(a, b, c)` prints on a launch of one block of `threads` threads, in
/// thread order (CUDA does not order lines of different threads: compare sorted). Pick `b` with
/// few significant bits (e.g. 1.25) so `%.3f` meets no rounding ties.
pub fn printf_lines(a: i32, b: f32, c: i64, threads: u32) -> Vec<String> {
    let mut lines: Vec<String> = (0..threads)
        .map(|t| {
            let word = if t & 1 == 1 { "odd" } else { "even" };
            let product = f64::from(b * t as f32);
            format!(
                "thread {t}: a={} b={product:.3} c={c} {word}",
                a.wrapping_add(t as i32)
            )
        })
        .collect();
    if threads > 0 {
        lines.push(PRINTF_FORMATS_LINE.to_owned());
    }
    lines
}

/// Thread 0's second line: `"%s|%5d|%-4x|%c|%e"` of ("fmt", -42, 255, 'Z', 1.5e-3).
pub const PRINTF_FORMATS_LINE: &str = "fmt|  -42|ff  |Z|1.500000e-03";

// ---------------------------------------------------------------------------------------------
// Comparison helpers

/// A float type whose values can be compared in units in the last place.
pub trait Ulps: Copy + Debug + PartialEq {
    /// ULPs between `self` and `other`: 0 for equal values (and for +0/-0, and for two NaNs),
    /// `u64::MAX` when exactly one is NaN.
    fn ulps_to(self, other: Self) -> u64;
    fn is_nan(self) -> bool;
}

impl Ulps for f32 {
    fn ulps_to(self, other: Self) -> u64 {
        fn ordered(x: f32) -> i64 {
            let bits = x.to_bits() as i32;
            i64::from(if bits < 0 { i32::MIN - bits } else { bits })
        }
        match (self.is_nan(), other.is_nan()) {
            (true, true) => 0,
            (false, false) => ordered(self).abs_diff(ordered(other)),
            _ => u64::MAX,
        }
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl Ulps for f64 {
    fn ulps_to(self, other: Self) -> u64 {
        fn ordered(x: f64) -> i128 {
            let bits = x.to_bits() as i64;
            i128::from(if bits < 0 { i64::MIN - bits } else { bits })
        }
        match (self.is_nan(), other.is_nan()) {
            (true, true) => 0,
            (false, false) => {
                u64::try_from(ordered(self).abs_diff(ordered(other))).unwrap_or(u64::MAX)
            }
            _ => u64::MAX,
        }
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// How many mismatches a failure message lists.
const SHOWN: usize = 8;

/// Checks that `got` and `want` have the same length and every pair is within `max_ulps`;
/// the error lists the worst and the first few mismatches.
pub fn check_close_ulps<T: Ulps>(
    what: &str,
    got: &[T],
    want: &[T],
    max_ulps: u64,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
    }
    let bad: Vec<(usize, u64)> = got
        .iter()
        .zip(want)
        .map(|(g, w)| g.ulps_to(*w))
        .enumerate()
        .filter(|(_, d)| *d > max_ulps)
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let worst = bad.iter().max_by_key(|(_, d)| *d).map_or(0, |(i, _)| *i);
    let mut msg = format!(
        "{what}: {} of {} values differ by more than {max_ulps} ulps; worst at [{worst}]: got {:?}, want {:?}\n",
        bad.len(),
        got.len(),
        got[worst],
        want[worst]
    );
    for (i, d) in bad.iter().take(SHOWN) {
        msg.push_str(&format!(
            "  [{i}] got {:?} want {:?} ({d} ulps)\n",
            got[*i], want[*i]
        ));
    }
    Err(msg)
}

/// [`check_close_ulps`], panicking with its message.
#[track_caller]
pub fn assert_close_ulps<T: Ulps>(what: &str, got: &[T], want: &[T], max_ulps: u64) {
    if let Err(msg) = check_close_ulps(what, got, want, max_ulps) {
        panic!("{msg}");
    }
}

/// Checks `|got - want| <= atol + rtol * |want|` element-wise (NaN equal to NaN).
pub fn check_allclose(
    what: &str,
    got: &[f64],
    want: &[f64],
    rtol: f64,
    atol: f64,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
    }
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| {
            let (g, w) = (got[i], want[i]);
            !(g.is_nan() && w.is_nan() || (g - w).abs() <= atol + rtol * w.abs())
        })
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "{what}: {} of {} values outside atol {atol} + rtol {rtol}\n",
        bad.len(),
        got.len()
    );
    for &i in bad.iter().take(SHOWN) {
        msg.push_str(&format!("  [{i}] got {:?} want {:?}\n", got[i], want[i]));
    }
    Err(msg)
}

/// [`check_allclose`], panicking with its message.
#[track_caller]
pub fn assert_allclose(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    if let Err(msg) = check_allclose(what, got, want, rtol, atol) {
        panic!("{msg}");
    }
}

/// Checks exact equality, reporting the first differing indices.
pub fn check_equal<T: PartialEq + Debug>(what: &str, got: &[T], want: &[T]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
    }
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    if bad.is_empty() {
        return Ok(());
    }
    let mut msg = format!("{what}: {} of {} values differ\n", bad.len(), got.len());
    for &i in bad.iter().take(SHOWN) {
        msg.push_str(&format!("  [{i}] got {:?} want {:?}\n", got[i], want[i]));
    }
    Err(msg)
}

/// [`check_equal`], panicking with its message.
#[track_caller]
pub fn assert_equal<T: PartialEq + Debug>(what: &str, got: &[T], want: &[T]) {
    if let Err(msg) = check_equal(what, got, want) {
        panic!("{msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulps_count_representable_steps() {
        assert_eq!(1.0f32.ulps_to(1.0), 0);
        assert_eq!(1.0f32.ulps_to(f32::from_bits(1.0f32.to_bits() + 3)), 3);
        assert_eq!(0.0f32.ulps_to(-0.0), 0);
        // Across zero: the smallest subnormals on each side are 2 steps apart.
        assert_eq!(
            f32::from_bits(1).ulps_to(-f32::from_bits(1)),
            2,
            "through zero"
        );
        assert_eq!(f32::NAN.ulps_to(f32::NAN), 0);
        assert_eq!(f32::NAN.ulps_to(1.0), u64::MAX);
        assert_eq!(f32::MAX.ulps_to(f32::INFINITY), 1);
        assert_eq!(1.0f64.ulps_to(f64::from_bits(1.0f64.to_bits() + 1)), 1);
        assert_eq!(f64::MAX.ulps_to(-f64::MAX), 2 * 0x7FEF_FFFF_FFFF_FFFF);
        assert_eq!(f64::NAN.ulps_to(0.0), u64::MAX);
    }

    #[test]
    fn close_ulps_reports_mismatches() {
        let want = [1.0f32, 2.0, 3.0];
        let near = [1.0f32, f32::from_bits(2.0f32.to_bits() + 2), 3.0];
        assert!(check_close_ulps("x", &near, &want, 2).is_ok());
        let err = check_close_ulps("x", &near, &want, 1).unwrap_err();
        assert!(err.contains("1 of 3") && err.contains("[1]"), "{err}");
        assert!(check_close_ulps("x", &want[..2], &want, 0).is_err());
        assert_close_ulps("x", &want, &want, 0);
    }

    #[test]
    #[should_panic(expected = "differ by more than 0 ulps")]
    fn assert_close_ulps_panics() {
        assert_close_ulps("x", &[1.0f64], &[1.5], 0);
    }

    #[test]
    fn allclose_and_equal() {
        assert!(check_allclose("x", &[1.0, f64::NAN], &[1.0 + 1e-9, f64::NAN], 1e-6, 0.0).is_ok());
        assert!(check_allclose("x", &[1.1], &[1.0], 1e-6, 0.0).is_err());
        assert!(check_allclose("x", &[1e-12], &[0.0], 0.0, 1e-9).is_ok());
        assert!(check_equal("x", &[1, 2], &[1, 2]).is_ok());
        assert!(check_equal("x", &[1, 3], &[1, 2])
            .unwrap_err()
            .contains("[1] got 3 want 2"));
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        for _ in 0..1000 {
            let x = a.f32_in(-2.0, 3.0);
            assert!((-2.0..3.0).contains(&x));
            let i = a.i32_in(-5, 5);
            assert!((-5..5).contains(&i));
        }
    }

    #[test]
    fn tree_reduction_matches_the_true_sum() {
        let mut rng = Rng::new(1);
        let data = rng.vec_f32(100_000, 0.0, 1.0);
        let partials = reduce_f32_tree(&data, 40, 256);
        assert_eq!(partials.len(), 40);
        let total: f64 = partials.iter().map(|x| f64::from(*x)).sum();
        assert!((total - sum_f64(&data)).abs() / sum_f64(&data) < 1e-5);
        // One block, one element per thread: the tree of a power-of-two sum is exact here.
        let ones = vec![1.0f32; 256];
        assert_eq!(reduce_f32_tree(&ones, 1, 256), [256.0]);
    }

    #[test]
    fn matmul_reference() {
        // [[1,2],[3,4]] * [[5,6],[7,8]] = [[19,22],[43,50]]
        let c = matmul_f32(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0], 2, 2, 2);
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        let c = matmul_f64(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], 1, 1, 3);
        assert_eq!(c, [32.0]);
    }

    #[test]
    fn integer_references() {
        assert_eq!(collatz_steps(1), 0);
        assert_eq!(collatz_steps(27), 111);
        assert_eq!(collatz_steps(837_799), 524);
        assert_eq!(branchy(-3), -1);
        assert_eq!(branchy(0), 0);
        // k = 1, 2 (skip 0): 1 + 4 = 5.
        assert_eq!(branchy(3), 5);
        // v = 7: k in 1,2,4,5 -> 1 + 4 + 8 + 5 = 18, doubled.
        assert_eq!(branchy(7), 36);
        assert_eq!(gcd(48, 18), 6);
        assert_eq!(horner(2.0, 2), 1.0 + 4.0 + 12.0);
        assert_eq!(histogram16(&[0, 16, 3, -1])[0], 2);
        assert_eq!(histogram16(&[-1])[15], 1);
        assert_eq!(sum_sq(&[3, -4]), 25);
        assert_eq!(atomic_minmax(&[3, -4, 9]), [-4, 9]);
    }

    #[test]
    fn atomic_checks() {
        assert!(check_atomic_exch(-1, 2, &[-1, 0, 1]).is_ok());
        assert!(check_atomic_exch(-1, 2, &[-1, 0, 0]).is_err());
        assert!(check_atomic_inc(2, 2, &[0, 1, 2, 0, 1]).is_ok());
        assert!(check_atomic_inc(2, 1, &[0, 1, 2, 0, 1]).is_err());
        assert!(check_atomic_inc(2, 2, &[0, 1, 1, 0, 1]).is_err());
    }

    #[test]
    fn warp_references() {
        let input: Vec<i32> = (0..64).collect();
        assert_eq!(warp_sums(&input), [496, 496 + 32 * 32]);
        assert_eq!(warp_max_broadcast(&input)[0], 31);
        assert_eq!(warp_max_broadcast(&input)[40], 63);
        let src: Vec<i32> = (0..64).map(|i| 31 - (i % 32)).collect();
        let f: Vec<f32> = input.iter().map(|x| *x as f32).collect();
        assert_eq!(warp_gather(&f, &src)[0], 31.0);
        assert_eq!(warp_gather(&f, &src)[32], 63.0);
        let mut pred = vec![0; 64];
        pred[1] = 5;
        pred[20] = 1;
        let votes = warp_votes(&pred);
        assert_eq!(
            votes[0],
            Vote {
                ballot: (1 << 1) | (1 << 20),
                all: false,
                any: true,
                low16: 1 << 1
            }
        );
        assert!(!votes[1].any);
        assert!(warp_votes(&[1; 32])[0].all);
    }

    #[test]
    fn stencil_and_scan_references() {
        let input = [1.0f32, 2.0, 3.0];
        assert_eq!(fir(&input, &[0.0, 1.0, 0.0]), input);
        assert_eq!(fir(&input, &[1.0, 0.0, 0.0]), [0.0, 1.0, 2.0]);
        assert_eq!(
            reverse_blocks(&[1.0, 2.0, 3.0, 4.0], 2),
            [2.0, 1.0, 4.0, 3.0]
        );
        let (scan, rounds) = block_prefix_sums(&[1, 2, 3, 4, 5, 6, 7, 8], 4);
        assert_eq!(scan, [1, 3, 6, 10, 5, 11, 18, 26]);
        assert_eq!(rounds, [2, 2]);
    }

    #[test]
    fn math_references_agree_with_std_at_simple_points() {
        for (f, x, y, want) in [
            (&MATH_F32[3], 1.0f32, 0.0, 0.0f32),
            (&MATH_F32[4], 4.0, 0.5, 2.0),
            (&MATH_F32[5], 9.0, 0.0, 3.0),
            (&MATH_F32[7], 0.0, 0.0, 0.0),
        ] {
            assert_eq!((f.reference)(x, y), want, "{f:?}");
        }
        assert!(((MATH_F32[7].reference)(1.0, 0.0) - 0.842_700_8).abs() < 1e-6);
        assert_eq!((MATH_F64[3].reference)(2.0, 10.0), 1024.0);
    }

    #[test]
    fn printf_reference() {
        let lines = printf_lines(10, 1.25, -7, 3);
        assert_eq!(
            lines,
            [
                "thread 0: a=10 b=0.000 c=-7 even",
                "thread 1: a=11 b=1.250 c=-7 odd",
                "thread 2: a=12 b=2.500 c=-7 even",
                PRINTF_FORMATS_LINE,
            ]
        );
    }
}
