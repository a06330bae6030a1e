//! Every function of the WIT package has a wrapper in every SDK.
//!
//! The package is read with wit-parser (what wasmtime's and wit-bindgen's
//! code generators read), so a function added to `wit/` and forgotten in
//! an SDK fails here, naming the function and the SDK. A wrapper is a call
//! of the generated binding in the SDK's sources, under the name each
//! binding generator gives it:
//!
//! | SDK | free function `iface.f` | method `res.m` |
//! | --- | --- | --- |
//! | sdk-rust (wit-bindgen) | `iface::f(` (snake_case), the module path ending in the interface | `.m(` |
//! | sdk-js (jco) | `<name containing iface>.f(` (camelCase) | `.m(` |
//! | sdk-python (componentize-py) | `iface.f(` (snake_case) | `.m(` |
//!
//! A method is matched by its name alone (`.get(` could be another type's
//! `get`); a free function by its interface too.

use std::path::{Path, PathBuf};

use wit_parser::{FunctionKind, Resolve};

/// One function of the package, as the SDKs must wrap it.
#[derive(Debug)]
struct WitFunction {
    interface: String,
    /// The function's name, or the method's without its resource.
    name: String,
    /// The resource a method belongs to.
    resource: Option<String>,
}

impl WitFunction {
    fn label(&self) -> String {
        match &self.resource {
            Some(res) => format!("{}.{res}.{}", self.interface, self.name),
            None => format!("{}.{}", self.interface, self.name),
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every imported function of the package's interfaces.
fn wit_functions() -> Vec<WitFunction> {
    let mut resolve = Resolve::new();
    let (package, _) = resolve
        .push_dir(repo().join("wit"))
        .expect("the WIT package parses");
    let mut functions = Vec::new();
    for (_, iface) in resolve.interfaces.iter() {
        if iface.package != Some(package) {
            continue;
        }
        let interface = iface.name.clone().expect("interfaces are named");
        for func in iface.functions.values() {
            let resource = match func.kind {
                FunctionKind::Method(ty)
                | FunctionKind::Static(ty)
                | FunctionKind::Constructor(ty) => resolve.types[ty].name.clone(),
                _ => None,
            };
            functions.push(WitFunction {
                interface: interface.clone(),
                name: func.item_name().to_owned(),
                resource,
            });
        }
    }
    assert!(
        functions.len() > 40,
        "the package has {} functions: is wit/ read?",
        functions.len()
    );
    functions
}

fn snake(kebab: &str) -> String {
    kebab.replace('-', "_")
}

fn camel(kebab: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in kebab.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The sources of an SDK: every file under `dir` ending in one of `exts`,
/// generated bindings left out (they declare every function).
fn sources(dir: &Path, exts: &[&str]) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !matches!(
                    name,
                    "generated" | "node_modules" | "wit_world" | "__pycache__" | "target"
                ) {
                    stack.push(path);
                }
            } else if exts.iter().any(|ext| name.ends_with(ext)) {
                text.push_str(&std::fs::read_to_string(&path).expect("readable source"));
                text.push('\n');
            }
        }
    }
    assert!(!text.is_empty(), "no sources under {}", dir.display());
    text
}

/// Whether `text` calls `name(` right after `sep`, the identifier before
/// the separator containing `owner` (any case, `-` and `_` ignored) when
/// one is given.
fn calls(text: &str, owner: Option<&str>, sep: &str, name: &str) -> bool {
    let needle = format!("{sep}{name}(");
    let owner = owner.map(|o| o.replace(['-', '_'], "").to_ascii_lowercase());
    text.match_indices(&needle).any(|(at, _)| {
        // What the call is made on: the identifier before the separator,
        // across the line breaks of a method chain.
        let before = text[..at].trim_end();
        let start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let ident = before[start..].replace('_', "").to_ascii_lowercase();
        !ident.is_empty()
            && owner
                .as_ref()
                .is_none_or(|owner| ident.contains(owner.as_str()))
    })
}

struct Sdk {
    name: &'static str,
    text: String,
    /// Whether the SDK wraps this function.
    wraps: fn(&str, &WitFunction) -> bool,
}

fn rust_wraps(text: &str, f: &WitFunction) -> bool {
    match f.resource {
        Some(_) => calls(text, None, ".", &snake(&f.name)),
        None => calls(text, Some(&f.interface), "::", &snake(&f.name)),
    }
}

fn js_wraps(text: &str, f: &WitFunction) -> bool {
    match f.resource {
        Some(_) => calls(text, None, ".", &camel(&f.name)),
        None => calls(text, Some(&f.interface), ".", &camel(&f.name)),
    }
}

fn python_wraps(text: &str, f: &WitFunction) -> bool {
    match f.resource {
        Some(_) => calls(text, None, ".", &snake(&f.name)),
        None => calls(text, Some(&f.interface), ".", &snake(&f.name)),
    }
}

fn sdks() -> Vec<Sdk> {
    let root = repo();
    vec![
        Sdk {
            name: "sdk-rust",
            text: sources(&root.join("sdk-rust/src"), &[".rs"]),
            wraps: rust_wraps,
        },
        Sdk {
            name: "sdk-js",
            text: sources(&root.join("sdk-js/src"), &[".ts"]),
            wraps: js_wraps,
        },
        Sdk {
            name: "sdk-python",
            text: sources(&root.join("sdk-python"), &[".py"]),
            wraps: python_wraps,
        },
    ]
}

#[test]
fn every_wit_function_has_a_wrapper_in_every_sdk() {
    let functions = wit_functions();
    let mut missing = Vec::new();
    for sdk in sdks() {
        for f in &functions {
            if !(sdk.wraps)(&sdk.text, f) {
                missing.push(format!("{}: {}", sdk.name, f.label()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "WIT functions without a wrapper ({}):\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

/// The check itself finds a missing wrapper: a function no SDK could wrap
/// is reported for each of them.
#[test]
fn a_missing_wrapper_is_found() {
    let made_up = WitFunction {
        interface: "registrar".into(),
        name: "transfer-all-bindings".into(),
        resource: None,
    };
    for sdk in sdks() {
        assert!(
            !(sdk.wraps)(&sdk.text, &made_up),
            "{} claims to wrap a function that does not exist",
            sdk.name
        );
    }
    // A real wrapper taken out of a real SDK is missed.
    let unregister = WitFunction {
        interface: "registrar".into(),
        name: "unregister".into(),
        resource: None,
    };
    let rust = &sdks()[0];
    assert!(rust_wraps(&rust.text, &unregister));
    let without = rust.text.replace("::unregister(", "::unregister_all(");
    assert!(!rust_wraps(&without, &unregister));
    // And a real one is found where it is called.
    let save = WitFunction {
        interface: "registrar".into(),
        name: "save".into(),
        resource: None,
    };
    assert!(rust_wraps("raw::registrar::save(req, o)", &save));
    assert!(!rust_wraps("kv::save(req, o)", &save));
    assert!(js_wraps("rawRegistrar.save(req, o)", &save));
    assert!(python_wraps("registrar.save(req, o)", &save));
}
