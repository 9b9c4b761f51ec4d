//! The protocol core's one dependency rule (ARCHITECTURE.md): nothing under `src/proto/`
//! imports from the crate outside `proto` and the codec (`stun`). The metrics, the credentials
//! tools and the event loop depend on the core, never the other way round; a `crate::` path to
//! anything else in a proto file is a step back into the import circle this rule broke.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The `crate::` paths in `text` that lead out of proto and stun, with their line numbers.
fn outside_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let path = &rest[at + "crate::".len()..];
            let module: String = path
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if module != "proto" && module != "stun" {
                found.push((n + 1, line.trim().to_owned()));
            }
            rest = path;
        }
    }
    found
}

#[test]
fn the_rule_finds_what_it_looks_for() {
    assert!(outside_paths("use crate::stun::Method;\nuse crate::proto::Command;").is_empty());
    assert_eq!(
        outside_paths("use std::fmt;\nuse crate::metrics::Metrics;"),
        vec![(2, "use crate::metrics::Metrics;".to_owned())]
    );
    assert_eq!(
        outside_paths("let p = crate::credentials::rest_password(k, u);").len(),
        1
    );
    assert!(outside_paths("// crate::metrics in a comment").is_empty());
}

#[test]
fn proto_depends_on_proto_and_stun_only() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proto");
    let files = sources(&dir);
    assert!(
        files.len() > 5,
        "found only {files:?} under {}",
        dir.display()
    );
    let mut offences = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("reading a proto source");
        for (line, code) in outside_paths(&text) {
            offences.push(format!("{}:{line}: {code}", file.display()));
        }
    }
    assert!(
        offences.is_empty(),
        "proto/ reaches outside proto and stun:\n{}",
        offences.join("\n")
    );
}
