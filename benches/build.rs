//! Copies the README's "Using the library" section into `OUT_DIR`, where
//! `src/lib.rs` includes it as documentation: its Rust snippet is then this
//! crate's doctest, so the README's code compiles against the real API.
//! (The whole README cannot be included: its other code blocks are shell
//! sessions and diagrams.)

use std::path::PathBuf;

const HEADING: &str = "## Using the library";

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let readme = manifest.join("../README.md");
    println!("cargo::rerun-if-changed={}", readme.display());
    let text = std::fs::read_to_string(&readme).expect("README.md at the workspace root");
    let start = text
        .find(&format!("\n{HEADING}\n"))
        .unwrap_or_else(|| panic!("README.md has no `{HEADING}` section; its snippet is this crate's doctest"));
    let body = &text[start + 1..];
    // The section ends at the next second-level heading.
    let end = body[HEADING.len()..].find("\n## ").map_or(body.len(), |i| i + HEADING.len() + 1);
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("readme_library.md"), &body[..end]).expect("write into OUT_DIR");
}
