//! A small typed layer over [`Client`] for Rust users, tests and tools: contexts, device
//! buffers, modules, functions and launches, like cudarc's safe layer but over the protocol.
//!
//! ```no_run
//! # use virtio_cuda::client::{Client, KernelArg};
//! # fn demo(client: &Client, ptx: &str) -> Result<(), virtio_cuda::client::ClientError> {
//! let ctx = client.create_context(0)?;
//! let x = ctx.upload(&[1.0f32, 2.0, 3.0])?;
//! let module = ctx.load_module(ptx.as_bytes())?;
//! let scale = module.function("scale")?;
//! scale.launch([1, 1, 1], [3, 1, 1], 0, &[KernelArg::Ptr(x), KernelArg::F32(2.0)])?;
//! let back: Vec<f32> = ctx.download(x, 3)?;
//! # Ok(()) }
//! ```

use super::{Client, ClientError};
use crate::protocol::{self as p, Sink, Source, Status};

/// A plain numeric type that can be copied to and from device memory.
pub trait Scalar: Copy {
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(b: &[u8]) -> Self;
}

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..Self::SIZE]);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}
scalar!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

/// Bytes of a slice of scalars.
pub fn to_bytes<T: Scalar>(data: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * T::SIZE);
    for v in data {
        v.put(&mut out);
    }
    out
}

/// Scalars from bytes (a trailing partial element is ignored).
pub fn from_bytes<T: Scalar>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(T::SIZE).map(T::get).collect()
}

/// One kernel argument.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelArg {
    Ptr(u64),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
    /// Raw bytes (structs passed by value).
    Bytes(Vec<u8>),
}

impl KernelArg {
    fn bytes(&self) -> Vec<u8> {
        match self {
            KernelArg::Ptr(v) | KernelArg::U64(v) => v.to_le_bytes().to_vec(),
            KernelArg::I64(v) => v.to_le_bytes().to_vec(),
            KernelArg::I32(v) => v.to_le_bytes().to_vec(),
            KernelArg::U32(v) => v.to_le_bytes().to_vec(),
            KernelArg::F32(v) => v.to_le_bytes().to_vec(),
            KernelArg::F64(v) => v.to_le_bytes().to_vec(),
            KernelArg::Bytes(b) => b.clone(),
        }
    }
}

/// A context of a session.
pub struct Context<'c> {
    client: &'c Client,
    ctx: u64,
}

impl Client {
    /// Creates a context on `device` (fire-and-forget; errors surface at the next sync call).
    pub fn create_context(&self, device: u32) -> Result<Context<'_>, ClientError> {
        let ctx = self.alloc_handle()?;
        self.send(&p::CtxCreate {
            ctx,
            device,
            flags: 0,
        })?;
        Ok(Context { client: self, ctx })
    }
}

impl<'c> Context<'c> {
    /// The context's handle.
    pub fn handle(&self) -> u64 {
        self.ctx
    }

    /// The session it belongs to.
    pub fn client(&self) -> &'c Client {
        self.client
    }

    pub fn alloc(&self, bytes: u64) -> Result<u64, ClientError> {
        Ok(self
            .client
            .call(&p::MemAlloc {
                ctx: self.ctx,
                size: bytes,
            })?
            .dptr)
    }

    pub fn free(&self, dptr: u64) -> Result<(), ClientError> {
        self.client.call(&p::MemFree {
            ctx: self.ctx,
            dptr,
        })?;
        Ok(())
    }

    /// Host→device copy of raw bytes on the NULL stream (fire-and-forget).
    pub fn write(&self, dptr: u64, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.client.send(&p::MemcpyHtoD {
            ctx: self.ctx,
            stream: 0,
            dst: dptr,
            src: Source::Inline(bytes),
        })
    }

    /// Device→host copy of `len` bytes (synchronising).
    pub fn read(&self, dptr: u64, len: u64) -> Result<Vec<u8>, ClientError> {
        Ok(self
            .client
            .call(&p::MemcpyDtoH {
                ctx: self.ctx,
                stream: 0,
                src: dptr,
                len,
                dst: Sink::Reply,
            })?
            .data)
    }

    /// Allocates a buffer holding `data`.
    pub fn upload<T: Scalar>(&self, data: &[T]) -> Result<u64, ClientError> {
        let bytes = to_bytes(data);
        let dptr = self.alloc(bytes.len().max(1) as u64)?;
        self.write(dptr, bytes)?;
        Ok(dptr)
    }

    /// Reads `n` scalars.
    pub fn download<T: Scalar>(&self, dptr: u64, n: usize) -> Result<Vec<T>, ClientError> {
        Ok(from_bytes(&self.read(dptr, (n * T::SIZE) as u64)?))
    }

    /// Fills `n` 32-bit words with `value`.
    pub fn memset_d32(&self, dptr: u64, value: u32, n: u64) -> Result<(), ClientError> {
        self.client.send(&p::Memset {
            ctx: self.ctx,
            stream: 0,
            dst: dptr,
            pitch: 0,
            elem_size: 4,
            value,
            width: n,
            height: 1,
        })
    }

    /// Waits for all work of the context; reports latched errors.
    pub fn synchronize(&self) -> Result<(), ClientError> {
        self.client.call(&p::CtxSynchronize { ctx: self.ctx })?;
        Ok(())
    }

    /// Loads a module image (PTX text, fatbin or cubin).
    pub fn load_module(&self, image: &[u8]) -> Result<Module<'_, 'c>, ClientError> {
        let module = self.client.alloc_handle()?;
        self.client.call(&p::ModuleLoad {
            ctx: self.ctx,
            module,
            image: Source::Inline(image.to_vec()),
        })?;
        Ok(Module { ctx: self, module })
    }
}

/// A loaded module.
pub struct Module<'x, 'c> {
    ctx: &'x Context<'c>,
    module: u64,
}

impl<'x, 'c> Module<'x, 'c> {
    pub fn handle(&self) -> u64 {
        self.module
    }

    /// Looks up a kernel.
    pub fn function(&self, name: &str) -> Result<Function<'x, 'c>, ClientError> {
        let func = self.ctx.client.alloc_handle()?;
        let info = self.ctx.client.call(&p::ModuleGetFunction {
            ctx: self.ctx.ctx,
            module: self.module,
            func,
            name: name.to_string(),
        })?;
        Ok(Function {
            ctx: self.ctx,
            func,
            info,
        })
    }

    /// Address and size of a module global (`__device__` / `__constant__` variable).
    pub fn global(&self, name: &str) -> Result<(u64, u64), ClientError> {
        let g = self.ctx.client.call(&p::ModuleGetGlobal {
            ctx: self.ctx.ctx,
            module: self.module,
            name: name.to_string(),
        })?;
        Ok((g.dptr, g.size))
    }
}

/// A kernel.
pub struct Function<'x, 'c> {
    ctx: &'x Context<'c>,
    func: u64,
    info: p::FuncInfo,
}

impl Function<'_, '_> {
    pub fn handle(&self) -> u64 {
        self.func
    }

    pub fn info(&self) -> &p::FuncInfo {
        &self.info
    }

    /// Packs arguments at the offsets the executor reported.
    pub fn pack(&self, args: &[KernelArg]) -> Result<Vec<u8>, ClientError> {
        if args.len() != self.info.params.0.len() {
            return Err(ClientError::Status(Status::ERROR_INVALID_VALUE));
        }
        let mut block = Vec::new();
        for (pi, a) in self.info.params.0.iter().zip(args) {
            let b = a.bytes();
            if b.len() != pi.size as usize {
                return Err(ClientError::Status(Status::ERROR_INVALID_VALUE));
            }
            let end = (pi.offset + pi.size) as usize;
            if block.len() < end {
                block.resize(end, 0);
            }
            block[pi.offset as usize..end].copy_from_slice(&b);
        }
        Ok(block)
    }

    /// Launches on the NULL stream (fire-and-forget).
    pub fn launch(
        &self,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        args: &[KernelArg],
    ) -> Result<(), ClientError> {
        self.launch_on(0, grid, block, shared_bytes, args)
    }

    /// Launches on `stream`.
    pub fn launch_on(
        &self,
        stream: u64,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        args: &[KernelArg],
    ) -> Result<(), ClientError> {
        let params = self.pack(args)?;
        self.ctx.client.send(&p::Launch {
            ctx: self.ctx.ctx,
            func: self.func,
            stream,
            grid,
            block,
            shared_bytes,
            flags: 0,
            params,
        })
    }
}
