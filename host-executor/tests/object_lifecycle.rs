//! The one generic step every call goes through (`session/mod.rs`): handles resolved from the
//! roles the protocol table declares, objects recorded only when their call succeeds, a
//! destroyed object taking what it owns with it, sticky errors poisoning only their context.
//! Driven through the real protocol on the cpu backend.

use host_executor::client::{InProcess, InProcessConfig};
use host_executor::ExecutorConfig;
use virtio_cuda::client::{Client, ClientError};
use virtio_cuda::protocol::{self as p, Source, Status};

/// Two kernels: `store(p, v)` writes `v` to `*p`; `nop()` does nothing.
const PTX: &str = r#"
.version 7.0
.target sm_50
.address_size 64

.visible .entry store(.param .u64 p, .param .u32 v)
{
    .reg .b64 %rd<2>;
    .reg .b32 %r<2>;
    ld.param.u64 %rd1, [p];
    ld.param.u32 %r1, [v];
    cvta.to.global.u64 %rd1, %rd1;
    st.global.u32 [%rd1], %r1;
    ret;
}

.visible .entry nop()
{
    ret;
}
"#;

fn executor() -> InProcess {
    InProcess::start_cpu(InProcessConfig {
        executor: ExecutorConfig {
            session_quota: 64 << 20,
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("start executor")
}

fn status_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Status {
    match r {
        Err(ClientError::Status(s)) => s,
        other => panic!("expected a CUDA error status, got {other:?}"),
    }
}

fn context(c: &Client) -> u64 {
    let ctx = c.alloc_handle().unwrap();
    c.call(&p::CtxCreate {
        ctx,
        device: 0,
        flags: 0,
    })
    .expect("CtxCreate");
    ctx
}

fn load(c: &Client, ctx: u64, module: u64) -> Result<p::ModuleLoadReply, ClientError> {
    let mut image = PTX.as_bytes().to_vec();
    image.push(0);
    c.call(&p::ModuleLoad {
        ctx,
        module,
        image: Source::Inline(image),
    })
}

fn function(c: &Client, ctx: u64, module: u64, name: &str) -> Result<u64, ClientError> {
    let func = c.alloc_handle().unwrap();
    c.call(&p::ModuleGetFunction {
        ctx,
        module,
        func,
        name: name.into(),
    })
    .map(|_| func)
}

fn store(c: &Client, ctx: u64, func: u64, dst: u64, v: u32) -> Result<(), ClientError> {
    let mut params = dst.to_le_bytes().to_vec();
    params.extend_from_slice(&v.to_le_bytes());
    c.send(&p::Launch {
        ctx,
        func,
        stream: 0,
        grid: [1, 1, 1],
        block: [1, 1, 1],
        shared_bytes: 0,
        flags: 0,
        params,
    })
}

#[test]
fn function_count_names_the_modules_entry_points() {
    let exec = executor();
    let c = exec.connect("test").unwrap();
    c.call(&p::Init { flags: 0 }).unwrap();
    let ctx = context(&c);
    let module = c.alloc_handle().unwrap();
    load(&c, ctx, module).unwrap();
    let r = c.call(&p::ModuleGetFunctionCount { ctx, module }).unwrap();
    assert_eq!(r.count, 2);
    // A module that was never loaded, and a context that does not exist.
    assert_eq!(
        status_of(c.call(&p::ModuleGetFunctionCount {
            ctx,
            module: module + 1
        })),
        Status::ERROR_INVALID_HANDLE
    );
    assert_eq!(
        status_of(c.call(&p::ModuleGetFunctionCount {
            ctx: 0xdead,
            module
        })),
        Status::ERROR_INVALID_CONTEXT
    );
}

#[test]
fn a_failed_create_records_nothing_and_a_live_id_cannot_be_reused() {
    let exec = executor();
    let c = exec.connect("test").unwrap();
    c.call(&p::Init { flags: 0 }).unwrap();
    let ctx = context(&c);
    let module = c.alloc_handle().unwrap();
    let bad = c.call(&p::ModuleLoad {
        ctx,
        module,
        image: Source::Inline(b"not a module\0".to_vec()),
    });
    assert!(bad.is_err(), "garbage loaded: {bad:?}");
    // Nothing was recorded under the id, so it loads now...
    load(&c, ctx, module).expect("the id is free after a failed load");
    // ...and, live, cannot be claimed again.
    assert_eq!(
        status_of(load(&c, ctx, module)),
        Status::ERROR_INVALID_HANDLE
    );
    // A function id is checked the same way.
    let f = function(&c, ctx, module, "nop").unwrap();
    assert_eq!(
        status_of(c.call(&p::ModuleGetFunction {
            ctx,
            module,
            func: f,
            name: "store".into()
        })),
        Status::ERROR_INVALID_HANDLE
    );
    assert_eq!(
        status_of(function(&c, ctx, module, "no_such_kernel")),
        Status::ERROR_NOT_FOUND
    );
}

#[test]
fn destroying_an_object_destroys_what_it_owns() {
    let exec = executor();
    let c = exec.connect("test").unwrap();
    c.call(&p::Init { flags: 0 }).unwrap();
    let keep = context(&c);
    let doomed = context(&c);
    let module = c.alloc_handle().unwrap();
    load(&c, doomed, module).unwrap();
    let func = function(&c, doomed, module, "nop").unwrap();
    let stream = c.alloc_handle().unwrap();
    c.call(&p::StreamCreate {
        ctx: doomed,
        stream,
        flags: 0,
        priority: 0,
    })
    .unwrap();
    let event = c.alloc_handle().unwrap();
    c.call(&p::EventCreate {
        ctx: doomed,
        event,
        flags: 0,
    })
    .unwrap();

    // Unloading a module forgets its functions.
    let other = c.alloc_handle().unwrap();
    load(&c, keep, other).unwrap();
    let other_func = function(&c, keep, other, "nop").unwrap();
    c.call(&p::ModuleUnload {
        ctx: keep,
        module: other,
    })
    .unwrap();
    assert_eq!(
        status_of(c.call(&p::FuncSetAttribute {
            ctx: keep,
            func: other_func,
            attr: 8,
            value: 0
        })),
        Status::ERROR_INVALID_HANDLE
    );
    assert_eq!(
        status_of(c.call(&p::ModuleUnload {
            ctx: keep,
            module: other
        })),
        Status::ERROR_INVALID_HANDLE
    );

    // Destroying a context takes its module, function, stream and event with it.
    c.call(&p::CtxDestroy { ctx: doomed }).unwrap();
    assert_eq!(
        status_of(c.call(&p::ModuleGetFunctionCount { ctx: keep, module })),
        Status::ERROR_INVALID_HANDLE
    );
    assert_eq!(
        status_of(c.call(&p::FuncSetAttribute {
            ctx: keep,
            func,
            attr: 8,
            value: 0
        })),
        Status::ERROR_INVALID_HANDLE
    );
    assert_eq!(
        status_of(c.call(&p::EventQuery { ctx: keep, event })),
        Status::ERROR_INVALID_HANDLE
    );
    assert_eq!(
        status_of(c.call(&p::StreamDestroy { ctx: keep, stream })),
        Status::ERROR_INVALID_HANDLE
    );
    assert_eq!(
        status_of(c.call(&p::CtxSynchronize { ctx: doomed })),
        Status::ERROR_INVALID_CONTEXT
    );
    // The ids are free again; the surviving context is untouched.
    load(&c, keep, module).expect("a destroyed module's id is free");
    c.call(&p::CtxSynchronize { ctx: keep }).unwrap();
}

#[test]
fn a_sticky_error_poisons_only_its_context() {
    let exec = executor();
    let c = exec.connect("test").unwrap();
    c.call(&p::Init { flags: 0 }).unwrap();
    let bad = context(&c);
    let good = context(&c);
    let (mb, mg) = (c.alloc_handle().unwrap(), c.alloc_handle().unwrap());
    load(&c, bad, mb).unwrap();
    load(&c, good, mg).unwrap();
    let fb = function(&c, bad, mb, "store").unwrap();
    let fg = function(&c, good, mg, "store").unwrap();

    // A store to an address no allocation covers: the launch fails with a sticky error,
    // reported by the next synchronising call and by every later call naming the context.
    store(&c, bad, fb, 0x10, 7).unwrap();
    let sticky = status_of(c.call(&p::CtxSynchronize { ctx: bad }));
    assert_eq!(sticky, Status::ERROR_ILLEGAL_ADDRESS);
    assert_eq!(
        status_of(c.call(&p::MemAlloc { ctx: bad, size: 64 })),
        sticky
    );
    assert_eq!(status_of(c.call(&p::CtxSynchronize { ctx: bad })), sticky);

    // The other context of the same session still works, end to end.
    let dptr = c.call(&p::MemAlloc { ctx: good, size: 4 }).unwrap().dptr;
    store(&c, good, fg, dptr, 0x5eed).unwrap();
    let back = c
        .call(&p::MemcpyDtoH {
            ctx: good,
            stream: 0,
            src: dptr,
            len: 4,
            dst: p::Sink::Reply,
        })
        .unwrap();
    assert_eq!(back.data, 0x5eed_u32.to_le_bytes());

    // Destroying the poisoned context is allowed, and ends the poison with it.
    c.call(&p::CtxDestroy { ctx: bad }).unwrap();
    c.call(&p::CtxSynchronize { ctx: good }).unwrap();
}

/// A kernel that never ends: `spin(p)` loops until `*p` is non-zero (it never is).
pub const SPIN_PTX: &str = r#"
.version 7.0
.target sm_50
.address_size 64

.visible .entry spin(.param .u64 p)
{
    .reg .b64 %rd<2>;
    .reg .b32 %r<2>;
    .reg .pred %q<2>;
    ld.param.u64 %rd1, [p];
    cvta.to.global.u64 %rd1, %rd1;
LOOP:
    ld.volatile.global.u32 %r1, [%rd1];
    setp.eq.u32 %q1, %r1, 0;
    @%q1 bra LOOP;
    ret;
}
"#;

fn spin(c: &Client, ctx: u64) -> u64 {
    let module = c.alloc_handle().unwrap();
    let mut image = SPIN_PTX.as_bytes().to_vec();
    image.push(0);
    c.call(&p::ModuleLoad {
        ctx,
        module,
        image: Source::Inline(image),
    })
    .unwrap();
    function(c, ctx, module, "spin").unwrap()
}

fn spin_launch(c: &Client, ctx: u64, func: u64, flag: u64) {
    c.send(&p::Launch {
        ctx,
        func,
        stream: 0,
        grid: [2, 1, 1],
        block: [64, 1, 1],
        shared_bytes: 0,
        flags: 0,
        params: flag.to_le_bytes().to_vec(),
    })
    .unwrap();
}

#[test]
fn a_runaway_kernel_hits_the_wall_clock_watchdog() {
    let exec = InProcess::start_cpu(InProcessConfig {
        cpu: host_executor::cpu::CpuConfig {
            launch_time_limit: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let c = exec.connect("test").unwrap();
    c.call(&p::Init { flags: 0 }).unwrap();
    let ctx = context(&c);
    let func = spin(&c, ctx);
    let flag = c.call(&p::MemAlloc { ctx, size: 4 }).unwrap().dptr;
    let start = std::time::Instant::now();
    spin_launch(&c, ctx, func, flag);

    // Another tenant works while the kernel spins, and is answered correctly.
    let other = exec.connect("other").unwrap();
    other.call(&p::Init { flags: 0 }).unwrap();
    let octx = context(&other);
    let omod = other.alloc_handle().unwrap();
    load(&other, octx, omod).unwrap();
    let ofunc = function(&other, octx, omod, "store").unwrap();
    assert_eq!(stored(&other, octx, ofunc, 0xb0b), 0xb0b);

    assert_eq!(
        status_of(c.call(&p::CtxSynchronize { ctx })),
        Status::ERROR_LAUNCH_TIMEOUT
    );
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    // The timeout is the spinning context's own: another context of the session still runs.
    let good = context(&c);
    let gmod = c.alloc_handle().unwrap();
    load(&c, good, gmod).unwrap();
    let gfunc = function(&c, good, gmod, "store").unwrap();
    assert_eq!(stored(&c, good, gfunc, 0x600d), 0x600d);
}

/// Runs `store` into a fresh allocation of `ctx` and reads the value back.
fn stored(c: &Client, ctx: u64, func: u64, v: u32) -> u32 {
    let dptr = c.call(&p::MemAlloc { ctx, size: 4 }).unwrap().dptr;
    store(c, ctx, func, dptr, v).unwrap();
    let back = c
        .call(&p::MemcpyDtoH {
            ctx,
            stream: 0,
            src: dptr,
            len: 4,
            dst: p::Sink::Reply,
        })
        .unwrap();
    u32::from_le_bytes(back.data[..4].try_into().unwrap())
}
