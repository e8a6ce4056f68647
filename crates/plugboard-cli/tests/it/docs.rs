//! The authors' guide (`docs/*.md`) kept true: every fenced block is checked by its
//! language. `sh` blocks run, in order, in a fresh directory per page, with this
//! `plugboard` first on `PATH`; `sh no-run` blocks (they need a running server) parse
//! (`bash -n`) and name only real `plugboard` subcommands. Manifests parse as manifests,
//! other TOML and JSON parse, JavaScript passes `node --check`, Python parses. (Rust
//! blocks are `plugboard-testkit`'s doc tests.)

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fenced block: its info string, its text, and the line it starts on.
struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    text: String::new(),
                    line: i + 1,
                });
            }
            (Some(_), Some("")) => out.extend(open.take()),
            (Some(b), _) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed block");
    out
}

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn check(program: &str, args: &[&str], file: &Path, what: &str) {
    let out = Command::new(program)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {program} {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `plugboard` subcommands a shell line runs.
fn subcommands(script: &str) -> Vec<String> {
    script
        .split(['\n', '&', ';', '|'])
        .filter_map(|part| {
            let mut words = part.split_whitespace().skip_while(|w| w.contains('='));
            (words.next() == Some("plugboard")).then(|| words.next().map(str::to_owned))?
        })
        .collect()
}

#[test]
fn every_block_of_the_guide_parses_runs_or_compiles() {
    let bin = Path::new(env!("CARGO_BIN_EXE_plugboard"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut pages: Vec<PathBuf> = std::fs::read_dir(docs())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    assert!(pages.len() >= 9, "{pages:?}");
    let (mut ran, mut checked) = (0, 0);
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        let work = tempfile::tempdir().unwrap();
        let home = work.path().join(".plugboard");
        for (n, b) in blocks(&text).into_iter().enumerate() {
            let what = format!("{name}:{} ({})", b.line, b.info);
            let file = work.path().join(format!(".block-{n}"));
            std::fs::write(&file, &b.text).unwrap();
            let mut words = b.info.split([' ', ',']);
            match (words.next().unwrap_or(""), words.next()) {
                ("sh", None) => {
                    let out = Command::new("bash")
                        .args(["-euo", "pipefail"])
                        .arg(&file)
                        .current_dir(work.path())
                        .env("PATH", &path)
                        .env("PLUGBOARD_HOME", &home)
                        .env_remove("PLUGBOARD_DATABASE_URL")
                        .env("CARGO_TARGET_DIR", crate::plugins_target())
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{what} failed:\n{}\n{}{}",
                        b.text,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    ran += 1;
                }
                ("sh", Some("no-run")) => {
                    check("bash", &["-n"], &file, &what);
                    for sub in subcommands(&b.text) {
                        let out = Command::new(bin).args([&sub, "--help"]).output().unwrap();
                        assert!(
                            out.status.success(),
                            "{what}: `plugboard {sub}` is no command"
                        );
                    }
                }
                ("toml", _) if b.text.contains("[package]") && b.text.contains("[[hooks]]") => {
                    plugboard_package::Manifest::parse(&b.text)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                }
                ("toml", _) => {
                    b.text
                        .parse::<toml::Table>()
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                }
                ("json", _) => {
                    serde_json::from_str::<serde_json::Value>(&b.text)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                }
                ("js", _) => {
                    let module = file.with_extension("mjs");
                    std::fs::rename(&file, &module).unwrap();
                    check("node", &["--check"], &module, &what);
                }
                ("python", _) => check(
                    "python3",
                    &["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())"],
                    &file,
                    &what,
                ),
                ("rust", _) => {} // plugboard-testkit's doc tests
                (other, _) => panic!("{what}: a block of `{other}`, which nothing checks"),
            }
            checked += 1;
        }
    }
    println!("the guide: {checked} blocks checked, {ran} shell blocks run");
    assert!(ran >= 3 && checked >= 20, "{checked} checked, {ran} ran");
}

#[test]
fn the_block_reader_and_the_command_finder_read_what_they_should() {
    let b =
        blocks("a\n```sh no-run\nplugboard serve &\nX=1 plugboard dev .\n```\n```json\n{}\n```\n");
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].info, "sh no-run");
    assert_eq!(b[0].line, 2);
    assert_eq!(subcommands(&b[0].text), ["serve", "dev"]);
    assert_eq!(b[1].text, "{}\n");
}
