//! Turns core wasm modules built with wit-bindgen into components, the step
//! `cargo build --target wasm32-wasip2` does by itself where that target exists.
//!
//! Usage: `componentize INPUT.wasm OUTPUT.wasm`

use anyhow::{bail, Context, Result};
use wit_component::ComponentEncoder;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        bail!("usage: componentize INPUT.wasm OUTPUT.wasm");
    };
    let module = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let component = ComponentEncoder::default()
        .module(&module)
        .with_context(|| format!("{input} carries no component type section"))?
        .validate(true)
        .encode()
        .with_context(|| format!("encoding {input} as a component"))?;
    std::fs::write(output, component).with_context(|| format!("writing {output}"))?;
    Ok(())
}
