//! What a user of the umbrella crate sees.
//!
//! Users copy the examples and the deployment guide into applications that
//! depend on `a3s-event` alone, so they must name only the umbrella's paths
//! (`a3s_event::...`), never a workspace crate (`event_core::...`,
//! `event_nats::...`), which such an application does not have.
//! (`docs/custom-providers.md` is the exception: a provider crate depends on
//! `event-core` alone, on purpose.)
//!
//! And the published documentation shows every feature's modules.

use std::path::{Path, PathBuf};

const WORKSPACE_CRATES: [&str; 8] = [
    "event_core",
    "event_memory",
    "event_nats",
    "event_crypto",
    "event_schema",
    "event_cloudevents",
    "event_routing",
    "event_bus",
];

/// Every `file:line: text` in `files` that names a workspace crate as a path
/// root (`event_core::`, `use event_nats`, `extern crate event_bus`).
fn sub_crate_paths(files: &[PathBuf]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
        for (number, line) in text.lines().enumerate() {
            let named = WORKSPACE_CRATES.iter().any(|name| {
                line.match_indices(name).any(|(at, _)| {
                    // a whole identifier: not `a3s_event_core` or `event_core_x`
                    let before = line[..at].chars().next_back();
                    let after = &line[at + name.len()..];
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                        && (after.starts_with("::")
                            || after.starts_with(';')
                            || after.starts_with(" as "))
                })
            });
            if named {
                found.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn examples_use_only_umbrella_paths() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap_or_else(|err| panic!("cannot list examples/: {err}"))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "examples found: {files:?}");
    let found = sub_crate_paths(&files);
    assert!(
        found.is_empty(),
        "examples must import through `a3s_event::...` only:\n{}",
        found.join("\n")
    );
}

#[test]
fn deployment_guide_uses_only_umbrella_paths() {
    let found = sub_crate_paths(&[root().join("docs/deployment.md")]);
    assert!(
        found.is_empty(),
        "docs/deployment.md must use `a3s_event::...` paths only:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_sub_crate_paths() {
    let dir = std::env::temp_dir().join(format!("a3s-umbrella-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("{err}"));
    let file = dir.join("sample.rs");
    std::fs::write(
        &file,
        "use a3s_event::EventBus;\nuse event_nats::NatsConfig;\nlet x = event_core::Event::new();\n\
         // a3s_event_core::x and my_event_bus::y are other crates\nuse event_bus;\n",
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let found = sub_crate_paths(std::slice::from_ref(&file));
    std::fs::remove_dir_all(&dir).ok();
    let lines: Vec<&str> = found
        .iter()
        .map(|f| f.rsplit_once(": ").map_or("", |(_, text)| text))
        .collect();
    assert_eq!(
        lines,
        [
            "use event_nats::NatsConfig;",
            "let x = event_core::Event::new();",
            "use event_bus;"
        ]
    );
}

/// docs.rs builds default features unless told otherwise: the umbrella's
/// page would then have no `crypto`, `schema`, `routing`, `cloudevents` or
/// `provider::nats`, although its own docs list them.
#[test]
fn docs_rs_documents_every_feature() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap_or_else(|err| panic!("cannot read Cargo.toml: {err}"));
    let section = manifest
        .split("\n[")
        .find(|section| section.starts_with("package.metadata.docs.rs]"))
        .unwrap_or_else(|| panic!("Cargo.toml has no [package.metadata.docs.rs] section"));
    assert!(
        section
            .lines()
            .any(|line| line.split_whitespace().collect::<String>() == "all-features=true"),
        "[package.metadata.docs.rs] must set all-features = true:\n[{section}"
    );
}
