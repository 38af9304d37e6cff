//! The docs against the code: `docs/configuration.md`, the shell completions and the man pages
//! are generated from the binaries' clap definitions (and fail here when they differ from what
//! those say), every variable the README's tables name is read by some binary, and every relative
//! link in README.md and docs/ leads to a file that exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::helpers::{assert_generated, blessing, splice};

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

/// README.md and the markdown pages of docs/.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    files.extend(
        std::fs::read_dir(root().join("docs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| f.extension().is_some_and(|e| e == "md")),
    );
    files
}

/// The variables named in the first column of the tables of the README and of docs/.
fn documented() -> BTreeSet<String> {
    let text: String = markdown_files().iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
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
    assert!(undocumented.is_empty(), "read by a binary but in no table of the docs: {undocumented:?}");
    let mut read_at_all = read(true);
    read_at_all.extend(OUTSIDE_CLAP.iter().map(|(env, _, _)| (*env).to_owned()));
    let unread: Vec<_> = documented.difference(&read_at_all).cloned().collect();
    assert!(unread.is_empty(), "in a table of the docs but read by no binary: {unread:?}");
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
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
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

/// Variables read outside clap (set by Lambda, or AWS conventions), with what reads them.
const OUTSIDE_CLAP: &[(&str, &str, &str)] = &[
    ("RUST_LOG", "all", "log filter: a level, or `target=level` pairs such as `warn,store=debug`"),
    ("AWS_LAMBDA_LOG_LEVEL", "all", "set by Lambda: the log level when `RUST_LOG` is unset (else `info`)"),
    ("AWS_LAMBDA_LOG_FORMAT", "all", "set by Lambda: `JSON` or `Text`, the default of `LOG_FORMAT` there"),
    ("AWS_LAMBDA_FUNCTION_NAME", "all", "set by Lambda: the function dimension of the metrics (`local` elsewhere)"),
    (
        "AWS_ACCESS_KEY_ID",
        "api",
        "with `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` (set by Lambda): the credentials `api` reads \
         `DATABASE_SECRET_ARN` with (`warmer` and `cachectl` use the standard AWS chain)",
    ),
    ("AWS_SECRET_ACCESS_KEY", "api", "see `AWS_ACCESS_KEY_ID`"),
    ("AWS_SESSION_TOKEN", "api", "see `AWS_ACCESS_KEY_ID`"),
    ("AWS_REGION", "all", "the region of the secret and of CloudFront's API (else `AWS_DEFAULT_REGION`)"),
    ("AWS_DEFAULT_REGION", "all", "see `AWS_REGION`"),
    (
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "all",
        "the Secrets Manager endpoint, else `AWS_ENDPOINT_URL`, else the region's (tests point it at a local server)",
    ),
    ("AWS_ENDPOINT_URL", "all", "see `AWS_ENDPOINT_URL_SECRETS_MANAGER`"),
];

/// An argument's help, the long one where it has one.
fn help_text(arg: &clap::Arg) -> String {
    arg.get_long_help().or_else(|| arg.get_help()).map(ToString::to_string).unwrap_or_default()
}

/// Whether `help` states the argument's default itself: a default that depends on the build or
/// the place (a hash of the code, Lambda or not), which no generated page should spell out.
fn states_its_default(help: &str) -> bool {
    help.contains("[default:")
}

/// One row of the reference: a setting and the commands that read it.
struct Setting {
    env: String,
    flag: String,
    default: String,
    meaning: String,
    commands: Vec<String>,
}

/// The settings `command` (and its subcommands, named `prefix sub`) read from the environment.
fn settings(command: &clap::Command, name: &str, rows: &mut Vec<Setting>) {
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let env = env.to_string_lossy().into_owned();
        if let Some(row) = rows.iter_mut().find(|r| r.env == env) {
            if !row.commands.iter().any(|c| c == name) {
                row.commands.push(name.to_owned());
            }
            continue;
        }
        let help = help_text(arg);
        let defaults: Vec<String> = if states_its_default(&help) {
            Vec::new()
        } else {
            arg.get_default_values().iter().map(|v| format!("`{}`", v.to_string_lossy())).collect()
        };
        rows.push(Setting {
            env,
            flag: arg.get_long().map(|l| format!("`--{l}`")).unwrap_or_default(),
            default: defaults.join(", "),
            meaning: help.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|"),
            commands: vec![name.to_owned()],
        });
    }
    for sub in command.get_subcommands() {
        settings(sub, &format!("{name} {}", sub.get_name()), rows);
    }
}

/// The reference page, generated from the clap definitions of `api`, `warmer` and `cachectl`.
fn configuration_reference() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the binaries' command-line definitions by the test \
         `docs::the_configuration_reference_is_generated_from_the_clap_definitions` \
         (`tests/tests/it/docs.rs`); regenerate with\n\n\
         ```sh\n\
         EDGERAIL_BLESS=1 cargo nextest run --workspace -E 'test(the_configuration_reference)'\n\
         ```\n\n\
         Every setting is an environment variable and a flag. Durations are a whole number with `ms`, \
         `s`, `m`, `h` or `d`. A default in brackets depends on where the binary runs.\n",
    );
    for (title, command, name) in [
        ("`api`", api::config::Cli::command(), "api"),
        ("`warmer`", warmer::cli::WarmerCli::command(), "warmer"),
        ("`cachectl`", warmer::cli::CachectlCli::command(), "cachectl"),
    ] {
        let mut rows = Vec::new();
        settings(&command, name, &mut rows);
        out.push_str(&format!(
            "\n## {title}\n\n| variable | flag | default | read by | meaning |\n|---|---|---|---|---|\n"
        ));
        for row in rows {
            let commands: Vec<String> = row.commands.iter().map(|c| format!("`{c}`")).collect();
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                row.env,
                row.flag,
                row.default,
                commands.join(", "),
                row.meaning
            ));
        }
    }
    out.push_str("\n## Read outside the command line\n\n| variable | read by | meaning |\n|---|---|---|\n");
    for (env, by, meaning) in OUTSIDE_CLAP {
        let by = if *by == "all" { "every binary".to_owned() } else { format!("`{by}`") };
        out.push_str(&format!("| `{env}` | {by} | {meaning} |\n"));
    }
    out
}

#[test]
fn the_configuration_reference_is_generated_from_the_clap_definitions() {
    assert_generated("docs/configuration.md", &configuration_reference(), "the_configuration_reference");
}

#[test]
fn every_variable_read_outside_clap_is_read_by_the_code() {
    let mut sources = String::new();
    for dir in ["api/src", "warmer/src", "plumbing/src", "secret/src", "store/src"] {
        for entry in walk(&root().join(dir)) {
            sources.push_str(&std::fs::read_to_string(entry).unwrap());
        }
    }
    for (env, _, _) in OUTSIDE_CLAP {
        assert!(sources.contains(&format!("\"{env}\"")), "{env} is documented but no binary's code names it");
    }
}

/// The `.rs` files under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// `command` with what depends on the build or on the machine left out of what is generated: the
/// defaults whose help text states them instead (the api's build id, a hash of its sources), as
/// the configuration reference does, and the values of variables set where the pages are made.
/// The pages then change only when the command line does.
fn stable_defaults(command: clap::Command) -> clap::Command {
    let command = command.mut_args(|arg| {
        let stated = states_its_default(&help_text(&arg));
        let arg = arg.hide_env_values(true);
        if stated { arg.hide_default_value(true) } else { arg }
    });
    command.mut_subcommands(stable_defaults)
}

/// The shell completions and man pages of the binaries, by path under `contrib/`: what an
/// operator installs beside `cachectl` (and `api`, `warmer` for local runs). They are generated
/// from the clap definitions here, outside every binary, so the Lambda build links none of it.
fn cli_pages() -> std::collections::BTreeMap<String, Vec<u8>> {
    use clap_complete::Shell;
    let mut files = std::collections::BTreeMap::new();
    for (name, command) in [
        ("api", api::config::Cli::command()),
        ("warmer", warmer::cli::WarmerCli::command()),
        ("cachectl", warmer::cli::CachectlCli::command()),
    ] {
        let command = stable_defaults(command);
        for (shell, file) in [
            (Shell::Bash, format!("{name}.bash")),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command.clone(), name, &mut out);
            files.insert(format!("completions/{file}"), out);
        }
        // One page per command and subcommand (`cachectl-plan.1`), as `man cachectl-plan` expects.
        let mut root = command.disable_help_subcommand(true);
        root.build();
        let mut pending = vec![root];
        while let Some(command) = pending.pop() {
            pending.extend(command.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
            let man = clap_mangen::Man::new(command);
            let mut out = Vec::new();
            man.render(&mut out).unwrap();
            files.insert(format!("man/{}", man.get_filename()), out);
        }
    }
    files
}

#[test]
fn the_shell_completions_and_man_pages_are_generated_from_the_clap_definitions() {
    let dir = root().join("contrib");
    let generated = cli_pages();
    if blessing() {
        for sub in ["completions", "man"] {
            let _ = std::fs::remove_dir_all(dir.join(sub));
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for (path, bytes) in &generated {
            std::fs::write(dir.join(path), bytes).unwrap();
        }
    }
    let mut committed = std::collections::BTreeMap::new();
    for sub in ["completions", "man"] {
        for entry in std::fs::read_dir(dir.join(sub)).into_iter().flatten() {
            let path = entry.unwrap().path();
            let name = format!("{sub}/{}", path.file_name().unwrap().to_string_lossy());
            committed.insert(name, std::fs::read(&path).unwrap());
        }
    }
    let differ: Vec<&String> = generated
        .keys()
        .chain(committed.keys())
        .filter(|k| generated.get(*k) != committed.get(*k))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        differ.is_empty(),
        "contrib/ differs from the clap definitions in {differ:?}: regenerate it with \
         EDGERAIL_BLESS=1 cargo nextest run --workspace -E 'test(the_shell_completions)'"
    );
}

/// The part of `text` between the bench's summary markers (`bench/src/report.rs`).
fn bench_summary(text: &str) -> Option<&str> {
    let start = text.find("<!-- bench summary: written by bench/run.sh -->")?;
    let end = text[start..].find("<!-- end of bench summary -->")? + start;
    Some(&text[start..end])
}

#[test]
fn the_readme_figures_are_the_last_bench_reports() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let results = std::fs::read_to_string(root().join("bench/RESULTS.md")).unwrap();
    let ours = bench_summary(&readme).expect("README.md has no bench summary");
    let theirs = bench_summary(&results).expect("bench/RESULTS.md has no bench summary");
    assert!(ours.lines().count() > 3, "the README's bench summary is empty: run bench/run.sh");
    assert_eq!(ours, theirs, "README.md's figures differ from bench/RESULTS.md: bench/run.sh writes both");
    for line in ["- date: ", "- machine: ", "- commit: "] {
        assert!(results.contains(line), "bench/RESULTS.md does not say its {line:?}");
    }
}

/// The crate table of docs/design.md: each crate of the workspace, its own description (from its
/// Cargo.toml) and the crates of the workspace it depends on, so the table cannot drift from the
/// graph the compiler keeps.
fn crate_table() -> String {
    let manifest = |path: PathBuf| -> toml::Table {
        std::fs::read_to_string(&path).unwrap().parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let workspace = manifest(root().join("Cargo.toml"));
    let members: Vec<String> =
        workspace["workspace"]["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_owned()).collect();
    let crates: Vec<(String, String, toml::Table)> = members
        .iter()
        .map(|dir| {
            let krate = manifest(root().join(dir).join("Cargo.toml"));
            let package = krate["package"].as_table().unwrap();
            (package["name"].as_str().unwrap().to_owned(), dir.clone(), krate)
        })
        .collect();
    let names: BTreeSet<&str> = crates.iter().map(|(name, ..)| name.as_str()).collect();
    let mut table = String::from("| crate | what it is | depends on |\n|---|---|---|\n");
    for (name, dir, krate) in &crates {
        let description =
            krate["package"]["description"].as_str().unwrap_or_else(|| panic!("{dir} has no description"));
        // Normal and development dependencies (the tests crate has only the latter).
        let deps: BTreeSet<String> = ["dependencies", "dev-dependencies"]
            .iter()
            .filter_map(|kind| krate.get(*kind).and_then(toml::Value::as_table))
            .flat_map(|deps| deps.keys().filter(|d| names.contains(d.as_str())).map(|d| format!("`{d}`")))
            .collect();
        let deps: Vec<String> = deps.into_iter().collect();
        let deps = if deps.is_empty() { "—".to_owned() } else { deps.join(", ") };
        table.push_str(&format!("| `{name}` (`{dir}/`) | {description} | {deps} |\n"));
    }
    table
}

#[test]
fn the_crate_table_is_the_workspaces() {
    let path = root().join("docs/design.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let begin = "<!-- BEGIN crates";
    let marker = text.lines().find(|l| l.starts_with(begin)).unwrap().to_owned();
    let generated =
        splice(&text, begin, "<!-- END crates", &format!("{marker}\n{}<!-- END crates -->\n", crate_table()));
    assert_generated("docs/design.md", &generated, "the_crate_table_is_the_workspaces");
}
