//! Response headers and reply bodies from a hostile executor must never panic the client side.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_cuda::protocol::{self as p, Reader, ResponseHeader};

fuzz_target!(|data: &[u8]| {
    let _ = ResponseHeader::get(&mut Reader::new(data));
    let _ = p::decode_reply::<p::Hello>(data);
    let _ = p::decode_reply::<p::DeviceInfo>(data);
    let _ = p::decode_reply::<p::ModuleGetFunction>(data);
    let _ = p::decode_reply::<p::MemcpyDtoH>(data);
});
