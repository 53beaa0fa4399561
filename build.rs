//! Links Debian's libspandsp for the `spandsp` comparison benchmark, and only when the
//! `spandsp` feature is on: the default build needs no C library.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    if std::env::var_os("CARGO_FEATURE_SPANDSP").is_none() {
        return;
    }
    // Extra search directories, if pkg-config knows of any (Debian's multiarch directory is on
    // the linker's default path, so normally there are none).
    if let Ok(out) = Command::new("pkg-config")
        .args(["--libs-only-L", "spandsp"])
        .output()
    {
        if out.status.success() {
            for dir in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|t| t.strip_prefix("-L"))
            {
                println!("cargo:rustc-link-search=native={dir}");
            }
        }
    }
    println!("cargo:rustc-link-lib=spandsp");
}
