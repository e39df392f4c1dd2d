//! `cmm-c-plugin`: what a policy plugin in C needs besides clang, in one
//! small binary. `bindings` writes wit-bindgen's C bindings for one world of
//! a WIT folder; `component` turns the core module clang linked into a
//! component, with the WASI preview1 adapter if the module imports WASI
//! (wasi-libc's stdio does). The same work, with the same library versions,
//! as `wit-bindgen c` and `wasm-tools component new --adapt`, for a fraction
//! of their build time: those CLIs bring every other language generator and
//! every other subcommand with them. Knows nothing about policies.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_bindgen_core::Files;
use wit_bindgen_core::wit_parser::Resolve;
use wit_component::ComponentEncoder;

const USAGE: &str = "usage:
  cmm-c-plugin bindings WIT_DIR WORLD OUT_DIR   write WORLD's C bindings: WORLD.h, WORLD.c, WORLD_component_type.o
  cmm-c-plugin component MODULE.wasm OUT.wasm    make a component of the core module clang linked";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = match args.as_slice() {
        ["bindings", wit, world, out] => bindings(Path::new(wit), world, Path::new(out)),
        ["component", module, out] => component(Path::new(module), Path::new(out)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `wit-bindgen c WIT_DIR --world WORLD --out-dir OUT_DIR`, default options.
fn bindings(wit: &Path, world: &str, out: &Path) -> Result<()> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("reading the WIT in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(world))?;
    let mut files = Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, contents) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `wasm-tools component new MODULE --adapt wasi_snapshot_preview1=… -o OUT`
/// with its default options. The encoder adds the adapter only when the
/// module imports `wasi_snapshot_preview1`, so a module that uses no WASI
/// becomes a component that imports none.
fn component(module: &Path, out: &Path) -> Result<()> {
    let wasm = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    // Options and adapter before the module, in the order wasm-tools takes
    // them: the order decides the order of the component's imports.
    let mut encoder = ComponentEncoder::default();
    encoder
        .validate(true)
        .debug_names(true)
        .merge_imports_based_on_semver(true)
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?;
    encoder.module(&wasm).with_context(|| {
        format!(
            "{} is not a core module with component type information",
            module.display()
        )
    })?;
    let component = encoder
        .encode()
        .with_context(|| format!("making a component of {}", module.display()))?;
    std::fs::write(out, component).with_context(|| format!("writing {}", out.display()))
}
