//! Embeds the default rules component (built by `guest/build.sh`) in the binary,
//! so `sessionize run` works without `--plugin`.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let component = manifest.join("../guest/dist/default_rules.wasm");
    println!("cargo:rerun-if-changed={}", component.display());
    println!("cargo::rustc-check-cfg=cfg(embedded_rules)");
    if component.exists() {
        println!("cargo:rustc-cfg=embedded_rules");
        println!("cargo:rustc-env=SESSIONIZE_DEFAULT_RULES={}", component.display());
    } else {
        println!(
            "cargo:warning=guest/dist/default_rules.wasm not found: run guest/build.sh \
             to embed the default rules (until then `sessionize run` needs --plugin)"
        );
    }
}
