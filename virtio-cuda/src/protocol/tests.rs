use super::*;
use proptest::prelude::*;

fn sample_requests() -> Vec<Request> {
    vec![
        Request::Hello(Hello {
            version: 1,
            pid: 42,
            client: "test".into(),
        }),
        Request::MemcpyHtoD(MemcpyHtoD {
            ctx: 0x1000,
            stream: 0,
            dst: 0x7000_0000_0000,
            src: Source::Inline(vec![1, 2, 3, 4]),
        }),
        Request::MemcpyDtoH(MemcpyDtoH {
            ctx: 0x1000,
            stream: 2,
            src: 0x7000_0000_0000,
            len: 4096,
            dst: Sink::Guest(List(vec![SgEntry {
                gpa: 0x1000,
                len: 4096,
            }])),
        }),
        Request::Launch(Launch {
            ctx: 0x1000,
            func: 0x1002,
            stream: 0x1003,
            grid: [128, 1, 1],
            block: [256, 1, 1],
            shared_bytes: 1024,
            flags: 0,
            params: vec![0u8; 28],
        }),
        Request::ModuleGetFunction(ModuleGetFunction {
            ctx: 1,
            module: 2,
            func: 3,
            name: "vadd".into(),
        }),
    ]
}

#[test]
fn requests_round_trip() {
    for req in sample_requests() {
        let mut frame = Vec::new();
        encode_request(7, &req, &mut frame);
        let (h, back) = decode_request(&frame).unwrap();
        assert_eq!(h.seq, 7);
        assert_eq!(h.is_async(), req.is_async());
        assert_eq!(back, req);
    }
}

#[test]
fn typed_call_encoding_matches_enum_encoding() {
    let call = Init { flags: 0 };
    let mut a = Vec::new();
    encode_call(3, &call, &mut a);
    let mut b = Vec::new();
    encode_request(3, &Request::Init(call), &mut b);
    assert_eq!(a, b);
}

#[test]
fn replies_round_trip() {
    let info = FuncInfo {
        params: List(vec![
            ParamInfo { offset: 0, size: 8 },
            ParamInfo { offset: 8, size: 4 },
        ]),
        static_shared_bytes: 4096,
        local_bytes: 0,
        const_bytes: 0,
        num_regs: 32,
        max_threads_per_block: 1024,
        ptx_version: 90,
        binary_version: 80,
    };
    let mut frame = Vec::new();
    encode_response(ResponseKind::Reply, 9, Status::SUCCESS, &info, &mut frame);
    let mut r = Reader::new(&frame);
    let h = ResponseHeader::get(&mut r).unwrap();
    assert_eq!(h.seq, 9);
    let body = r.take(h.body_len as usize).unwrap();
    assert_eq!(decode_reply::<ModuleGetFunction>(body).unwrap(), info);
}

#[test]
fn unknown_opcode_and_bad_header_are_errors() {
    let mut frame = Vec::new();
    encode_request(1, &Request::Goodbye(Goodbye {}), &mut frame);
    frame[4] = 0xff;
    frame[5] = 0xff;
    assert_eq!(
        decode_request(&frame).unwrap_err(),
        DecodeError::UnknownOpcode(0xffff)
    );
    frame[0] = 0;
    assert!(matches!(
        decode_request(&frame),
        Err(DecodeError::BadMagic(_))
    ));
}

#[test]
fn oversized_body_length_is_rejected_before_reading() {
    let mut w = Writer::new();
    RequestHeader {
        opcode: 0x0101,
        flags: 0,
        seq: 0,
        body_len: u32::MAX,
    }
    .put(&mut w);
    assert!(matches!(
        decode_request(w.as_slice()),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn every_opcode_has_a_name_and_no_duplicates() {
    let mut seen = std::collections::HashSet::new();
    for op in ALL_OPCODES {
        assert!(seen.insert(*op), "duplicate opcode {op:#x}");
        assert!(opcode_name(*op).is_some());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_request(&bytes);
        let mut r = Reader::new(&bytes);
        let _ = ResponseHeader::get(&mut r);
    }

    /// Valid frames with mutated bytes (a random body for a random known opcode) never panic.
    #[test]
    fn decoder_never_panics_on_mutated_frames(
        which in 0usize..5,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        op_index in 0usize..64,
    ) {
        let reqs = sample_requests();
        let mut frame = Vec::new();
        encode_request(1, &reqs[which % reqs.len()], &mut frame);
        for (pos, val) in flips {
            let i = pos % frame.len();
            frame[i] = val;
        }
        let _ = decode_request(&frame);
        let op = ALL_OPCODES[op_index % ALL_OPCODES.len()];
        let _ = Request::decode(op, &frame[HEADER_LEN.min(frame.len())..]);
    }
}
