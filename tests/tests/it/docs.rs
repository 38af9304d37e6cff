//! The docs against the code: every setting a binary reads is in the README's configuration
//! tables and every variable there is read by some binary, and every relative link in README.md
//! and docs/ leads to a file that exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The environment variables a command reads through clap; with `hidden`, also those of hidden
/// arguments (set by the Lambda service, which need no documenting but may have it).
fn env_names(command: &clap::Command, hidden: bool) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = command
        .get_arguments()
        .filter(|a| hidden || !a.is_hide_set())
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for sub in command.get_subcommands() {
        names.extend(env_names(sub, hidden));
    }
    names
}

/// Whether `text` is spelled like an environment variable (`WARMER_BATCH`), not like a stack
/// parameter or a metric (`DatabaseUrl`, `Hits`).
fn is_variable(text: &str) -> bool {
    text.len() > 2 && text.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The variables named in the first column of the README's tables.
fn documented() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut names = BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or("");
        names.extend(first.split('`').skip(1).step_by(2).filter(|t| is_variable(t)).map(str::to_owned));
    }
    names
}

#[test]
fn every_setting_is_documented_and_every_documented_one_is_read() {
    let commands =
        [api::config::Cli::command(), warmer::cli::WarmerCli::command(), warmer::cli::CachectlCli::command()];
    let read = |hidden| commands.iter().flat_map(|c| env_names(c, hidden)).collect::<BTreeSet<_>>();
    let documented = documented();
    let undocumented: Vec<_> = read(false).difference(&documented).cloned().collect();
    assert!(undocumented.is_empty(), "read by a binary but not in the README's tables: {undocumented:?}");
    let unread: Vec<_> = documented.difference(&read(true)).cloned().collect();
    assert!(unread.is_empty(), "in the README's tables but read by no binary: {unread:?}");
}

/// Relative link targets (`[text](target)`) in a markdown file, without their `#fragment`.
fn relative_links(markdown: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = markdown;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        let path = target.split('#').next().unwrap_or("");
        if !path.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            links.push(path.to_owned());
        }
    }
    links
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut files = vec![root().join("README.md")];
    files.extend(std::fs::read_dir(root().join("docs")).unwrap().map(|e| e.unwrap().path()));
    let mut broken = Vec::new();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "md")) {
        let text = std::fs::read_to_string(file).unwrap();
        let dir = file.parent().unwrap_or(Path::new("."));
        for link in relative_links(&text) {
            if !dir.join(&link).exists() {
                broken.push(format!("{}: {link}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "links to nothing: {broken:?}");
    assert_eq!(relative_links("[a](docs/x.md#y) [b](https://e.x) [c](#here)"), ["docs/x.md"]);
}
