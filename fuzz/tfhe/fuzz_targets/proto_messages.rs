//! gRPC messages from untrusted peers into domain types: protobuf decoding
//! of every streamed message, the chunk assembler's bounds, plan kinds.
#![no_main]

use jointscore_net::plan_from_wire;
use jointscore_proto::Assembler;
use jointscore_proto::v1::{AuditChunk, ContributeChunk, Job, KeyUpload, PsiOpenChunk, SecAggShareKeysRequest};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let _ = ContributeChunk::decode(data);
    let _ = KeyUpload::decode(data);
    let _ = PsiOpenChunk::decode(data);
    let _ = AuditChunk::decode(data);
    let _ = SecAggShareKeysRequest::decode(data);
    if let Ok(job) = Job::decode(data) {
        let _ = plan_from_wire(job.plan);
    }
    // The first 8 bytes declare a size; the rest arrive in chunks of the
    // sizes the next bytes say. The assembler never holds more than its
    // limit nor accepts a total other than the declared one.
    if data.len() >= 8 {
        let declared = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) % (1 << 16);
        if let Ok(mut assembler) = Assembler::new("fuzz", declared, 1 << 15) {
            let mut rest = &data[8..];
            let mut pushed = 0u64;
            while let Some((&n, tail)) = rest.split_first() {
                let take = usize::from(n).min(tail.len());
                if assembler.push(&tail[..take]).is_err() {
                    return;
                }
                pushed += take as u64;
                assert!(pushed <= declared);
                rest = &tail[take..];
            }
            if let Ok(bytes) = assembler.finish() {
                assert_eq!(bytes.len() as u64, declared);
            }
        }
    }
});
