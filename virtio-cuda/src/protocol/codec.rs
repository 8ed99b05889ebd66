//! The [`Wire`] trait: how each field type of a message is laid out.
//!
//! Scalars are little-endian and fixed-size; `Vec<u8>` and `String` are a u32 length plus bytes;
//! `Vec<T>` is a u32 count plus elements; `Option<T>` is a u8 tag (0/1) plus the value.
//! [`wire_struct!`](crate::wire_struct) derives the encoding of a plain struct field by field.

use super::wire::{Reader, Writer};
use super::DecodeError;

/// A value with an explicit, versioned wire layout.
pub trait Wire: Sized {
    /// Smallest possible encoded size; lets decoders reject impossible element counts up front.
    const MIN_SIZE: usize;
    fn put(&self, w: &mut Writer);
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

macro_rules! wire_int {
    ($($t:ty => $put:ident, $get:ident, $conv:ty;)*) => {$(
        impl Wire for $t {
            const MIN_SIZE: usize = std::mem::size_of::<$t>();
            fn put(&self, w: &mut Writer) {
                w.$put(*self as $conv);
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(r.$get()? as $t)
            }
        }
    )*};
}

wire_int! {
    u8 => u8, u8, u8;
    u16 => u16, u16, u16;
    u32 => u32, u32, u32;
    u64 => u64, u64, u64;
    i32 => u32, u32, u32;
    i64 => u64, u64, u64;
}

impl Wire for bool {
    const MIN_SIZE: usize = 1;
    fn put(&self, w: &mut Writer) {
        w.u8(u8::from(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::BadTag {
                what: "bool",
                tag: v,
            }),
        }
    }
}

impl Wire for f32 {
    const MIN_SIZE: usize = 4;
    fn put(&self, w: &mut Writer) {
        w.u32(self.to_bits());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(f32::from_bits(r.u32()?))
    }
}

impl<const N: usize> Wire for [u32; N] {
    const MIN_SIZE: usize = 4 * N;
    fn put(&self, w: &mut Writer) {
        for v in self {
            w.u32(*v);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut out = [0u32; N];
        for v in &mut out {
            *v = r.u32()?;
        }
        Ok(out)
    }
}

impl Wire for [u8; 16] {
    const MIN_SIZE: usize = 16;
    fn put(&self, w: &mut Writer) {
        w.raw(self);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut out = [0u8; 16];
        out.copy_from_slice(r.take(16)?);
        Ok(out)
    }
}

/// Opaque bytes (kernel parameter blocks, small inline payloads).
impl Wire for Vec<u8> {
    const MIN_SIZE: usize = 4;
    fn put(&self, w: &mut Writer) {
        w.bytes(self);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(r.bytes()?.to_vec())
    }
}

impl Wire for String {
    const MIN_SIZE: usize = 4;
    fn put(&self, w: &mut Writer) {
        w.bytes(self.as_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let b = r.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::BadUtf8)
    }
}

impl<T: Wire> Wire for Option<T> {
    const MIN_SIZE: usize = 1;
    fn put(&self, w: &mut Writer) {
        match self {
            None => w.u8(0),
            Some(v) => {
                w.u8(1);
                v.put(w);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::get(r)?)),
            tag => Err(DecodeError::BadTag {
                what: "option",
                tag,
            }),
        }
    }
}

/// A sequence of non-byte elements. (Byte vectors use the `Vec<u8>` impl above.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct List<T>(pub Vec<T>);

impl<T: Wire> Wire for List<T> {
    const MIN_SIZE: usize = 4;
    fn put(&self, w: &mut Writer) {
        let n = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        w.u32(n);
        for v in self.0.iter().take(n as usize) {
            v.put(w);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.count(T::MIN_SIZE)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(T::get(r)?);
        }
        Ok(List(out))
    }
}

/// Bytes that are already encoded, written verbatim as a body (relaying or re-framing replies).
/// Encode-only: there is nothing to decode it into.
#[derive(Debug, Clone, Copy)]
pub struct RawBody<'a>(pub &'a [u8]);

impl Wire for RawBody<'_> {
    const MIN_SIZE: usize = 0;
    fn put(&self, w: &mut Writer) {
        w.raw(self.0);
    }
    fn get(_r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Err(DecodeError::BadTag {
            what: "raw body (encode-only)",
            tag: 0,
        })
    }
}

/// Declares a plain struct whose wire layout is its fields in order.
#[macro_export]
macro_rules! wire_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
        impl $crate::protocol::Wire for $name {
            const MIN_SIZE: usize = 0 $(+ <$t as $crate::protocol::Wire>::MIN_SIZE)*;
            #[allow(unused_variables)]
            fn put(&self, w: &mut $crate::protocol::Writer) {
                $(<$t as $crate::protocol::Wire>::put(&self.$f, w);)*
            }
            #[allow(unused_variables)]
            fn get(r: &mut $crate::protocol::Reader<'_>) -> Result<Self, $crate::protocol::DecodeError> {
                Ok(Self { $($f: <$t as $crate::protocol::Wire>::get(r)?),* })
            }
        }
    };
}
