//! The consortium file (TOML, with PEM certificates): every member's key
//! and certificate checked, or a precise error; never a panic.
#![no_main]

use jointscore_identity::Consortium;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(consortium) = Consortium::from_toml(text) {
        // What parsed round-trips, and its lookups hold.
        let again = Consortium::from_toml(&consortium.to_toml().expect("a parsed file serializes"))
            .expect("a parsed file parses again");
        assert_eq!(again, consortium);
        for m in &consortium.members {
            assert_eq!(consortium.member(&m.name).map(|x| &x.public_key), Ok(&m.public_key));
            if let Some(pem) = &m.certificate {
                let der = jointscore_identity::certificate_der(pem).expect("a checked certificate decodes");
                assert!(consortium.member_by_certificate(der.as_ref()).is_some());
            }
        }
        let _ = consortium.certificates_pem();
    }
});
