//! The layers of `docs/architecture.md`, checked against the code: which
//! top-level module may name which (through `crate::…` or `super::…`
//! paths that climb out of it), and which folders are sans-IO. A test
//! reads every source file of `src/`, so that a `use` that crosses a
//! boundary fails `cargo test` with the file and line, instead of
//! waiting for a reader to notice an arrow running back up.
//!
//! Comments, `#[cfg(test)]` modules and test files (`tests.rs`, files
//! under a `tests/` folder) are left out: tests may reach anywhere, and a
//! doc comment may name the module it is used by.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each library module and what it may use besides itself, lowest first:
/// a module appears after everything it uses, so the order is the
/// layering. The binary's `cli/` may use everything and is not listed.
const LAYERS: [(&str, &[&str]); 9] = [
    ("proto", &[]),
    ("config", &["proto"]),
    ("process", &["config", "proto"]),
    ("selftest", &["process", "config", "proto"]),
    ("net", &["process", "config", "proto"]),
    ("signaling", &["process", "config", "proto"]),
    ("fleet", &["signaling", "net", "process", "config", "proto"]),
    (
        "http",
        &["fleet", "signaling", "selftest", "process", "config", "proto"],
    ),
    ("admin", &["fleet", "signaling", "net", "process", "config", "proto"]),
];

/// Folders that are sans-IO: no sockets, clock, threads or runtime of
/// their own (time and randomness come in as arguments).
const SANS_IO: [&str; 3] = ["proto", "signaling/switchboard", "admin/history"];

/// What a sans-IO folder never names.
const IO: [&str; 9] = [
    "tokio::",
    "axum::",
    "redis::",
    "UdpSocket",
    "TcpStream",
    "TcpListener",
    "Instant::now",
    "SystemTime::now",
    "thread::spawn",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `net/udp/batch.rs` is
/// `[net, udp, batch]`, `net/udp/mod.rs` is `[net, udp]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts
}

/// The lines of `text` that are code: no comments, no `#[cfg(test)]`
/// module. Returns (line number, code).
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut skip_depth: Option<i64> = None;
    let mut test_attribute = false;
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let trimmed = code.trim();
        if let Some(depth) = skip_depth.as_mut() {
            *depth += brace_balance(code);
            if *depth <= 0 {
                skip_depth = None;
            }
            continue;
        }
        if trimmed == "#[cfg(test)]" {
            test_attribute = true;
            continue;
        }
        if test_attribute && trimmed.contains("mod ") {
            test_attribute = false;
            let depth = brace_balance(code);
            if depth > 0 {
                skip_depth = Some(depth);
            }
            continue;
        }
        test_attribute = false;
        out.push((i + 1, code.to_owned()));
    }
    out
}

fn brace_balance(code: &str) -> i64 {
    code.chars()
        .map(|c| match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        })
        .sum()
}

/// The top-level modules a line of `file` (module path `module`) names.
fn named_modules(module: &[String], code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        collect_first_segments(rest, &mut named);
    }
    // `super::super::x` from deep enough climbs out of the top module.
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let preceded_by_path = rest[..at].ends_with("::");
        let mut chain = &rest[at..];
        let mut climbs = 0;
        while let Some(after) = chain.strip_prefix("super::") {
            climbs += 1;
            chain = after;
        }
        rest = chain;
        if preceded_by_path {
            continue;
        }
        if climbs >= module.len() {
            collect_first_segments(chain, &mut named);
        }
    }
    named
}

/// The first path segment of `rest`, or of every item of a `{…}` group.
fn collect_first_segments(rest: &str, named: &mut BTreeSet<String>) {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut item = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    push_segment(&item, named);
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        push_segment(&item, named);
    } else {
        push_segment(rest, named);
    }
}

fn push_segment(path: &str, named: &mut BTreeSet<String>) {
    let segment: String = path
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if !segment.is_empty() && segment != "self" {
        named.insert(segment);
    }
}

/// Every source file of `src/` but the test files.
fn sources() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|file| {
        let relative = file.strip_prefix(&src).unwrap_or(file);
        !relative.ends_with("tests.rs") && !relative.iter().any(|part| part == "tests")
    });
    files.sort();
    (src, files)
}

#[test]
fn no_use_crosses_a_layer_boundary() {
    let (src, files) = sources();
    let modules: Vec<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let mut crossings = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap_or(file);
        let module = module_path(relative);
        let Some(top) = module.first() else { continue };
        let Some((_, allowed)) = LAYERS.iter().find(|(m, _)| m == top) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (line, code) in code_lines(&text) {
            for named in named_modules(&module, &code) {
                let layered = modules.contains(&named.as_str());
                if layered && named != *top && !allowed.contains(&named.as_str()) {
                    crossings.push(format!("src/{}:{line}: {top} uses {named}", relative.display()));
                }
            }
        }
        checked += 1;
    }
    assert!(checked > 50, "only {checked} files were read from {}", src.display());
    assert!(
        crossings.is_empty(),
        "uses across a layer boundary:\n{}",
        crossings.join("\n")
    );
}

#[test]
fn sans_io_folders_name_no_socket_clock_or_runtime() {
    let (src, files) = sources();
    let mut found = Vec::new();
    for folder in SANS_IO {
        let root = src.join(folder);
        for file in files.iter().filter(|f| f.starts_with(&root)) {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for (line, code) in code_lines(&text) {
                for io in IO.iter().filter(|io| code.contains(**io)) {
                    let relative = file.strip_prefix(&src).unwrap_or(file);
                    found.push(format!("src/{}:{line}: {io}", relative.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "I/O in a sans-IO folder:\n{}", found.join("\n"));
}

#[test]
fn the_checks_see_the_paths_they_are_meant_to() {
    let module = module_path(Path::new("net/udp/batch.rs"));
    assert_eq!(module, ["net", "udp", "batch"]);
    assert_eq!(module_path(Path::new("net/udp/mod.rs")), ["net", "udp"]);
    let named = |code: &str| named_modules(&module, code).into_iter().collect::<Vec<_>>();
    assert_eq!(named("use crate::http::App;"), ["http"]);
    assert_eq!(
        named("use crate::{config::Config, proto::{a, b}};"),
        ["config", "proto"]
    );
    assert_eq!(named("use super::super::super::fleet::Fleet;"), ["fleet"]);
    assert!(
        named("use super::super::relay::Sockets;").is_empty(),
        "still inside net"
    );
    let lines = code_lines("use a; // crate::http\n#[cfg(test)]\nmod tests {\n    use crate::http;\n}\nuse b;\n");
    assert_eq!(lines, [(1, "use a; ".to_owned()), (6, "use b;".to_owned())]);
}
