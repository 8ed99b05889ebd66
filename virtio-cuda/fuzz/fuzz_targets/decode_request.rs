//! Any byte string, decoded as a request frame and as the body of every opcode, must never panic,
//! and whatever decodes must re-encode to a frame that decodes to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_cuda::protocol::{decode_request, encode_request, Request, ALL_OPCODES};

fuzz_target!(|data: &[u8]| {
    if let Ok((h, req)) = decode_request(data) {
        let mut again = Vec::new();
        encode_request(h.seq, &req, &mut again);
        let (_, back) = decode_request(&again).expect("re-encoded frame decodes");
        assert_eq!(back, req);
    }
    for op in ALL_OPCODES {
        let _ = Request::decode(*op, data);
    }
});
