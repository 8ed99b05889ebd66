//! The object tables of a session, kept once for every backend, and the [`Resolve`] step that
//! turns a request field with a [`Role`](virtio_cuda::protocol::Role) into the checked object a
//! handler receives.
//!
//! Client handles are only ever looked up in this session's own tables, so a forged or stale
//! handle can name nothing of another session.

use std::collections::HashMap;
use std::marker::PhantomData;

use virtio_cuda::protocol::{self as p, FuncInfo, Status};

use crate::backend::{BackendSession, StreamRef};

/// Handle ids granted to every session.
pub const HANDLE_BASE: u64 = p::handles::FIRST_GRANTABLE_HANDLE;
/// Number of handle ids granted to every session.
pub const HANDLE_COUNT: u64 = 1 << 40;
/// Objects (contexts, streams, events, modules, functions) one session may hold at once: the
/// tables' memory is charged to the session like its device memory.
pub const MAX_OBJECTS: usize = 1 << 20;

/// A context and its sticky error (set by the first sticky failure, reported by every later
/// call that names it, as in CUDA).
pub struct CtxEntry<B: BackendSession> {
    pub obj: B::Context,
    pub sticky: Option<Status>,
}

/// An object created in a context.
pub struct Owned<T> {
    pub ctx: u64,
    pub obj: T,
}

/// A function handle: its module, the backend's function and what the client was told of it.
pub struct FuncEntry<B: BackendSession> {
    pub module: u64,
    pub obj: B::Function,
    pub info: FuncInfo,
}

/// Every object of one session.
pub struct Objects<B: BackendSession> {
    pub contexts: HashMap<u64, CtxEntry<B>>,
    pub streams: HashMap<u64, Owned<B::Stream>>,
    pub events: HashMap<u64, Owned<B::Event>>,
    pub modules: HashMap<u64, Owned<B::Module>>,
    pub funcs: HashMap<u64, FuncEntry<B>>,
}

impl<B: BackendSession> Default for Objects<B> {
    fn default() -> Self {
        Self {
            contexts: HashMap::new(),
            streams: HashMap::new(),
            events: HashMap::new(),
            modules: HashMap::new(),
            funcs: HashMap::new(),
        }
    }
}

impl<B: BackendSession> Objects<B> {
    fn len(&self) -> usize {
        self.contexts.len()
            + self.streams.len()
            + self.events.len()
            + self.modules.len()
            + self.funcs.len()
    }
}

/// What resolution sees: the session's tables and the call's own context.
pub struct Scope<'t, B: BackendSession> {
    pub objs: &'t Objects<B>,
    /// The call's context handle (the field with a context role).
    pub ctx: Option<u64>,
    pub mem_used: u64,
    pub quota: u64,
}

/// Turns one role-carrying field into what the handler receives, or the status CUDA reports.
pub trait Resolve<B: BackendSession> {
    type Out<'t>
    where
        B: 't;
    fn resolve<'t>(value: u64, scope: &Scope<'t, B>) -> Result<Self::Out<'t>, Status>;
}

/// A handle id the call creates: checked unused and inside the granted range. The handler
/// passes it, with the new object, to [`super::Cx::create`].
#[derive(Debug)]
pub struct Fresh<K> {
    pub id: u64,
    /// The context the object is created in.
    pub owner: u64,
    _kind: PhantomData<K>,
}

/// A handle the call destroys: checked present; the session destroys the object (and what was
/// created in it) after the handler succeeds.
#[derive(Debug, Clone, Copy)]
pub struct Doomed(pub u64);

/// A resolved module: its handle and the backend's module.
pub struct ModuleRef<'t, B: BackendSession> {
    pub id: u64,
    pub obj: &'t B::Module,
}

/// A resolved function, with the module it belongs to.
pub struct FuncRef<'t, B: BackendSession> {
    pub obj: &'t B::Function,
    pub module: &'t B::Module,
    pub info: &'t FuncInfo,
}

/// The role markers: one type per [`Role`](virtio_cuda::protocol::Role) variant, named alike
/// (the executor's table macro maps `as Role` to `roles::Role`).
pub mod roles {
    macro_rules! markers {
        ($($name:ident),*) => {$(
            #[derive(Debug)]
            pub struct $name;
        )*};
    }
    markers!(
        Ctx, NewCtx, DropCtx, Stream, NewStream, DropStream, Event, NewEvent, DropEvent, Module,
        NewModule, DropModule, Func, NewFunc, Charge
    );
}

fn fresh<K, B: BackendSession>(
    id: u64,
    taken: bool,
    scope: &Scope<'_, B>,
) -> Result<Fresh<K>, Status> {
    if taken || id < HANDLE_BASE {
        return Err(Status::ERROR_INVALID_HANDLE);
    }
    if scope.objs.len() >= MAX_OBJECTS {
        return Err(Status::ERROR_OUT_OF_MEMORY);
    }
    Ok(Fresh {
        id,
        owner: scope.ctx.unwrap_or(id),
        _kind: PhantomData,
    })
}

fn present(found: bool, missing: Status, id: u64) -> Result<Doomed, Status> {
    if found {
        Ok(Doomed(id))
    } else {
        Err(missing)
    }
}

/// `New*` roles: an unused id of the session's range, for the table that will hold it.
macro_rules! fresh_roles {
    ($($role:ident in $table:ident;)*) => {$(
        impl<B: BackendSession> Resolve<B> for roles::$role {
            type Out<'t> = Fresh<Self>;
            fn resolve<'t>(id: u64, scope: &Scope<'t, B>) -> Result<Self::Out<'t>, Status> {
                fresh(id, scope.objs.$table.contains_key(&id), scope)
            }
        }
    )*};
}

fresh_roles! {
    NewCtx in contexts;
    NewStream in streams;
    NewEvent in events;
    NewModule in modules;
    NewFunc in funcs;
}

/// `Drop*` roles: a live object of the table, destroyed after the call succeeds.
macro_rules! drop_roles {
    ($($role:ident in $table:ident else $missing:ident;)*) => {$(
        impl<B: BackendSession> Resolve<B> for roles::$role {
            type Out<'t> = Doomed;
            fn resolve<'t>(id: u64, scope: &Scope<'t, B>) -> Result<Self::Out<'t>, Status> {
                let found = scope.objs.$table.contains_key(&id);
                present(found, Status::$missing, id)
            }
        }
    )*};
}

drop_roles! {
    DropCtx in contexts else ERROR_INVALID_CONTEXT;
    DropStream in streams else ERROR_INVALID_HANDLE;
    DropEvent in events else ERROR_INVALID_HANDLE;
    DropModule in modules else ERROR_INVALID_HANDLE;
}

impl<B: BackendSession> Resolve<B> for roles::Ctx {
    type Out<'t> = &'t B::Context;
    fn resolve<'t>(id: u64, scope: &Scope<'t, B>) -> Result<Self::Out<'t>, Status> {
        let c = scope
            .objs
            .contexts
            .get(&id)
            .ok_or(Status::ERROR_INVALID_CONTEXT)?;
        match c.sticky {
            Some(s) => Err(s),
            None => Ok(&c.obj),
        }
    }
}

impl<B: BackendSession> Resolve<B> for roles::Stream {
    type Out<'t> = StreamRef<'t, B>;
    fn resolve<'t>(id: u64, scope: &Scope<'t, B>) -> Result<Self::Out<'t>, Status> {
        match id {
            // NULL, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD: the context's default stream.
            0..=2 => Ok(None),
            s => match scope.objs.streams.get(&s) {
                Some(o) if Some(o.ctx) == scope.ctx => Ok(Some(&o.obj)),
                _ => Err(Status::ERROR_INVALID_HANDLE),
            },
        }
    }
}

impl<B: BackendSession> Resolve<B> for roles::Event {
    type Out<'t> = &'t B::Event;
    fn resolve<'t>(id: u64, scope: &Scope<'t, B>) -> Result<Self::Out<'t>, Status> {
        scope
            .objs
            .events
            .get(&id)
            .map(|o| &o.obj)
            .ok_or(Status::ERROR_INVALID_HANDLE)
    }
}

impl<B: BackendSession> Resolve<B> for roles::Module {
    type Out<'t> = ModuleRef<'t, B>;
    fn resolve<'t>(id: u64, scope: &Scope<'t, B>) -> Result<Self::Out<'t>, Status> {
        let m = scope
            .objs
            .modules
            .get(&id)
            .ok_or(Status::ERROR_INVALID_HANDLE)?;
        Ok(ModuleRef { id, obj: &m.obj })
    }
}

impl<B: BackendSession> Resolve<B> for roles::Func {
    type Out<'t> = FuncRef<'t, B>;
    fn resolve<'t>(id: u64, scope: &Scope<'t, B>) -> Result<Self::Out<'t>, Status> {
        let f = scope
            .objs
            .funcs
            .get(&id)
            .ok_or(Status::ERROR_INVALID_HANDLE)?;
        let m = scope
            .objs
            .modules
            .get(&f.module)
            .ok_or(Status::ERROR_INVALID_HANDLE)?;
        Ok(FuncRef {
            obj: &f.obj,
            module: &m.obj,
            info: &f.info,
        })
    }
}

impl<B: BackendSession> Resolve<B> for roles::Charge {
    type Out<'t> = u64;
    fn resolve<'t>(bytes: u64, scope: &Scope<'t, B>) -> Result<Self::Out<'t>, Status> {
        if bytes == 0 {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        if scope.mem_used.saturating_add(bytes) > scope.quota {
            return Err(Status::ERROR_OUT_OF_MEMORY);
        }
        Ok(bytes)
    }
}

/// An object a handler created, inserted by the session once the handler has succeeded.
pub enum Created<B: BackendSession> {
    Ctx(u64, B::Context),
    Stream(u64, Owned<B::Stream>),
    Event(u64, Owned<B::Event>),
    Module(u64, Owned<B::Module>),
    Func(u64, FuncEntry<B>),
}

/// The object a `Fresh<K>` handle binds.
pub trait Creates<B: BackendSession> {
    type Obj;
    fn created(fresh: Fresh<Self>, obj: Self::Obj) -> Created<B>
    where
        Self: Sized;
}

impl<B: BackendSession> Creates<B> for roles::NewCtx {
    type Obj = B::Context;
    fn created(f: Fresh<Self>, obj: B::Context) -> Created<B> {
        Created::Ctx(f.id, obj)
    }
}

/// Objects owned by the context they were created in.
macro_rules! owned_creates {
    ($($role:ident => $variant:ident($obj:ident);)*) => {$(
        impl<B: BackendSession> Creates<B> for roles::$role {
            type Obj = B::$obj;
            fn created(f: Fresh<Self>, obj: B::$obj) -> Created<B> {
                Created::$variant(f.id, Owned { ctx: f.owner, obj })
            }
        }
    )*};
}

owned_creates! {
    NewStream => Stream(Stream);
    NewEvent => Event(Event);
    NewModule => Module(Module);
}

impl<B: BackendSession> Creates<B> for roles::NewFunc {
    type Obj = FuncEntry<B>;
    fn created(f: Fresh<Self>, obj: FuncEntry<B>) -> Created<B> {
        Created::Func(f.id, obj)
    }
}

impl<B: BackendSession> Objects<B> {
    /// Inserts what a handler created.
    pub fn insert(&mut self, c: Created<B>) {
        match c {
            Created::Ctx(id, obj) => {
                self.contexts.insert(id, CtxEntry { obj, sticky: None });
            }
            Created::Stream(id, o) => {
                self.streams.insert(id, o);
            }
            Created::Event(id, o) => {
                self.events.insert(id, o);
            }
            Created::Module(id, o) => {
                self.modules.insert(id, o);
            }
            Created::Func(id, f) => {
                self.funcs.insert(id, f);
            }
        }
    }

    /// Marks `ctx` poisoned by a sticky error (the first one stays).
    pub fn poison(&mut self, ctx: u64, status: Status) {
        if let Some(c) = self.contexts.get_mut(&ctx) {
            c.sticky.get_or_insert(status);
        }
    }

    /// Destroys the object a `Drop*` role names, and what was created in it.
    pub fn destroy(&mut self, be: &mut B, role: p::Role, id: u64) -> Result<(), Status> {
        use p::Role as R;
        match role {
            R::DropCtx => {
                let c = self
                    .contexts
                    .remove(&id)
                    .ok_or(Status::ERROR_INVALID_CONTEXT)?;
                let streams: Vec<u64> = owned_by(&self.streams, id);
                for s in streams {
                    self.destroy_quietly(be, R::DropStream, s);
                }
                let events: Vec<u64> = owned_by(&self.events, id);
                for e in events {
                    self.destroy_quietly(be, R::DropEvent, e);
                }
                let modules: Vec<u64> = owned_by(&self.modules, id);
                for m in modules {
                    self.destroy_quietly(be, R::DropModule, m);
                }
                be.destroy_context(c.obj)
            }
            R::DropStream => {
                let s = self
                    .streams
                    .remove(&id)
                    .ok_or(Status::ERROR_INVALID_HANDLE)?;
                be.destroy_stream(s.obj)
            }
            R::DropEvent => {
                let e = self
                    .events
                    .remove(&id)
                    .ok_or(Status::ERROR_INVALID_HANDLE)?;
                be.destroy_event(e.obj)
            }
            R::DropModule => {
                let m = self
                    .modules
                    .remove(&id)
                    .ok_or(Status::ERROR_INVALID_HANDLE)?;
                self.funcs.retain(|_, f| f.module != id);
                be.unload_module(m.obj)
            }
            _ => Ok(()),
        }
    }

    fn destroy_quietly(&mut self, be: &mut B, role: p::Role, id: u64) {
        if let Err(s) = self.destroy(be, role, id) {
            tracing::warn!(status = %s, ?role, "releasing an object of a destroyed context failed");
        }
    }
}

fn owned_by<T>(table: &HashMap<u64, Owned<T>>, ctx: u64) -> Vec<u64> {
    table
        .iter()
        .filter(|(_, o)| o.ctx == ctx)
        .map(|(h, _)| *h)
        .collect()
}
