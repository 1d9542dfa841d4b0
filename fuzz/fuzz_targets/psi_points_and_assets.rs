//! PSI wire points (batches of ristretto255 encodings) and asset ids: only
//! canonical, non-identity points and well-formed ids are accepted.
#![no_main]

use jointscore_psi::{AssetId, points_from_bytes, points_to_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(points) = points_from_bytes(data, "fuzz batch", 1024) {
        // Accepted points are exactly the bytes sent.
        assert_eq!(points_to_bytes(&points), data);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(asset) = AssetId::parse(text)
    {
        // Normalisation is idempotent: the normal form parses to itself.
        let again = AssetId::parse(&asset.to_string()).expect("a normal form parses");
        assert_eq!(again, asset);
    }
});
