//! `cargo xtask convergence [--hosts N] [--rounds R] [--debug]`: how fast a change issued
//! on one host reaches every other host sharing a PostgreSQL database.
//!
//! It starts a throwaway PostgreSQL cluster and N (default 5) `plugboard serve` processes
//! on it (release build unless `--debug`), then runs R rounds (default 25) of nine
//! operations, each issued through the admin API of the next host in turn, or, every
//! N+1th, by the `plugboard` CLI (then every host is a follower): stop and
//! enable a plugin, change a setting, install a package (granting what it asks), revoke
//! and grant a capability, upgrade, roll back, uninstall. After each acknowledged
//! operation it polls every other host until that host has applied it: its synced
//! generation (`/health`: records, packages, grants and settings applied in full) has
//! moved past the one before the operation, and the effect shows in the host's own
//! answers (the plugin's status, the package's loaded version, the setting's value). The
//! time from the acknowledgement to that point is one sample; it prints p50/p99/max per
//! operation and overall, the table quoted in BENCHMARKS.md. Any host that has not applied
//! an operation within 30 s fails the run.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// How long a host may take to apply an operation before the run fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// How often the hosts are polled while waiting.
const POLL: Duration = Duration::from_millis(5);

const PLUGIN: &str = "remember_me";
const PACKAGE: &str = "wasm-audit";
const SETTING: &str = "convergence.probe";

struct Host {
    child: Child,
    base: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with the admin token: status and body.
fn request(
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    kind: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    let addr = base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body)?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

fn get_json(base: &str, token: &str, path: &str) -> Option<Value> {
    let (code, body) = request(base, token, "GET", path, "application/json", b"").ok()?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

fn synced(base: &str, token: &str) -> Option<i64> {
    get_json(base, token, "/health")?["store"]["synced_generation"].as_i64()
}

/// The operations of a round, in order; each leaves what the next expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Stop,
    Enable,
    Setting,
    Install,
    Revoke,
    Grant,
    Upgrade,
    Rollback,
    Uninstall,
}

const OPS: [Op; 9] = [
    Op::Stop,
    Op::Enable,
    Op::Setting,
    Op::Install,
    Op::Revoke,
    Op::Grant,
    Op::Upgrade,
    Op::Rollback,
    Op::Uninstall,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Stop => "stop a plugin",
            Op::Enable => "enable a plugin",
            Op::Setting => "change a setting",
            Op::Install => "install a package",
            Op::Revoke => "revoke a capability",
            Op::Grant => "grant a capability",
            Op::Upgrade => "upgrade",
            Op::Rollback => "roll back",
            Op::Uninstall => "uninstall",
        }
    }

    /// Issues the operation on `base`; it must be acknowledged.
    fn issue(self, base: &str, token: &str, round: usize, packages: &[Vec<u8>; 2]) -> Result<()> {
        let json = "application/json";
        let (code, body) = match self {
            Op::Stop => request(
                base,
                token,
                "POST",
                &format!("/api/plugins/{PLUGIN}/stop"),
                json,
                b"",
            )?,
            Op::Enable => request(
                base,
                token,
                "POST",
                &format!("/api/plugins/{PLUGIN}/enable"),
                json,
                b"",
            )?,
            Op::Setting => request(
                base,
                token,
                "PUT",
                &format!("/api/settings/{SETTING}"),
                json,
                json!({ "round": round }).to_string().as_bytes(),
            )?,
            Op::Install => request(
                base,
                token,
                "POST",
                "/api/packages?grant=all",
                "application/octet-stream",
                &packages[0],
            )?,
            Op::Upgrade => request(
                base,
                token,
                "POST",
                "/api/packages",
                "application/octet-stream",
                &packages[1],
            )?,
            Op::Revoke | Op::Grant => {
                let change = if self == Op::Revoke {
                    json!({ "revoke": "clock" })
                } else {
                    json!({ "grant": "clock" })
                };
                request(
                    base,
                    token,
                    "POST",
                    &format!("/api/packages/{PACKAGE}/grants"),
                    json,
                    change.to_string().as_bytes(),
                )?
            }
            Op::Rollback => request(
                base,
                token,
                "POST",
                &format!("/api/packages/{PACKAGE}/rollback"),
                json,
                b"",
            )?,
            Op::Uninstall => request(
                base,
                token,
                "DELETE",
                &format!("/api/packages/{PACKAGE}"),
                json,
                b"",
            )?,
        };
        if code != 200 {
            bail!("{} on {base}: {code} {body}", self.name());
        }
        Ok(())
    }

    /// Issues the operation with the `plugboard` CLI (`cli` runs it on the database).
    fn issue_cli(
        self,
        cli: &dyn Fn(&[&str]) -> Result<String>,
        round: usize,
        files: &[String; 2],
    ) -> Result<()> {
        let setting = json!({ "round": round }).to_string();
        let args: Vec<&str> = match self {
            Op::Stop => vec!["stop", PLUGIN],
            Op::Enable => vec!["enable", PLUGIN],
            Op::Setting => vec!["settings", "set", SETTING, &setting],
            Op::Install => vec!["install", &files[0], "--grant", "all"],
            Op::Revoke => vec!["revoke", PACKAGE, "clock"],
            Op::Grant => vec!["grant", PACKAGE, "clock"],
            Op::Upgrade => vec!["install", &files[1]],
            Op::Rollback => vec!["rollback", PACKAGE],
            Op::Uninstall => vec!["uninstall", PACKAGE],
        };
        cli(&args).map(drop)
    }

    /// Whether the host at `base` shows the operation's effect in its own answers.
    fn applied(self, base: &str, token: &str, round: usize) -> bool {
        let status = || {
            get_json(base, token, &format!("/api/plugins/{PLUGIN}"))
                .and_then(|v| v["status"].as_str().map(str::to_owned))
        };
        let package = || {
            get_json(base, token, "/api/packages").and_then(|v| {
                v.as_array()?
                    .iter()
                    .find(|p| p["name"] == PACKAGE)
                    .map(|p| {
                        (
                            p["version"].as_str().unwrap_or("").to_owned(),
                            p["loaded"] == true,
                        )
                    })
            })
        };
        match self {
            Op::Stop => status().as_deref() == Some("stopped"),
            Op::Enable => matches!(status().as_deref(), Some("started" | "restarted")),
            Op::Setting => get_json(base, token, &format!("/api/settings/{SETTING}"))
                .is_some_and(|v| v["configs"]["round"] == round),
            Op::Install | Op::Rollback | Op::Revoke | Op::Grant => {
                package() == Some(("1.0.0".to_owned(), true))
            }
            Op::Upgrade => package() == Some(("1.0.1".to_owned(), true)),
            Op::Uninstall => get_json(base, token, "/api/packages")
                .and_then(|v| {
                    v.as_array()
                        .map(|ps| ps.iter().all(|p| p["name"] != PACKAGE))
                })
                .unwrap_or(false),
        }
    }
}

/// `cargo xtask convergence`.
pub(crate) fn convergence(root: &Path, args: &[String]) -> Result<()> {
    let mut hosts_n = 5;
    let mut rounds = 25;
    let mut release = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--hosts" => hosts_n = it.next().context("--hosts N")?.parse()?,
            "--rounds" => rounds = it.next().context("--rounds R")?.parse()?,
            "--debug" => release = false,
            other => bail!("unknown argument {other}: use --hosts N, --rounds R, --debug"),
        }
    }
    if hosts_n < 2 {
        bail!("--hosts: at least 2");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .args(["build", "-p", "plugboard-cli", "--locked"])
        .current_dir(root);
    if release {
        build.arg("--release");
    }
    if !build.status()?.success() {
        bail!("building plugboard failed");
    }
    let bin = root
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("plugboard");

    let cluster = plugboard_testkit::PgCluster::private().map_err(anyhow::Error::msg)?;
    let url = cluster.database().map_err(anyhow::Error::msg)?;
    let work = crate::tempdir("convergence")?;
    let cli = |args: &[&str]| -> Result<String> {
        let out = Command::new(&bin)
            .args(args)
            .env("PLUGBOARD_DATABASE_URL", &url)
            .env("PLUGBOARD_HOME", work.join("cli"))
            .output()?;
        if !out.status.success() {
            bail!(
                "plugboard {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // The bundled examples stay out: the run installs its own package.
    let offered = json!({ "offered": [
        "wasm-audit-1.0.0.pbpkg", "title-validator-1.0.0.pbpkg", "audit-follower-1.0.0.pbpkg",
        "ip-ban-1.0.0.pbpkg", "webhook-1.0.0.pbpkg"] });
    cli(&["settings", "set", "serve.examples", &offered.to_string()])?;
    let packages = packages(root, &work, &cli)?;
    let files = [0, 1].map(|i| {
        let path = work.join(format!("wasm-audit-1.0.{i}.pbpkg"));
        path.display().to_string()
    });
    std::fs::write(&files[0], &packages[0])?;

    let mut hosts = Vec::new();
    let mut token = String::new();
    for i in 0..hosts_n {
        let home = work.join(format!("host{i}"));
        std::fs::create_dir_all(&home)?;
        let log = std::fs::File::create(home.join("serve.log"))?;
        let mut child = Command::new(&bin)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env("PLUGBOARD_DATABASE_URL", &url)
            .env("PLUGBOARD_HOME", &home)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let mut base = None;
        for line in lines.by_ref() {
            let line = line?;
            if let Some(b) = line.strip_prefix("listening on ") {
                base = Some(b.trim().to_owned());
            }
            if let Some((_, t)) =
                line.split_once("admin token (shown once; only its hash is kept): ")
            {
                token = t.trim().to_owned();
            }
            if line.starts_with("dashboard: ") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let base = base.context("serve did not print its address")?;
        hosts.push(Host { child, base });
    }
    println!(
        "{hosts_n} hosts on one PostgreSQL database; {rounds} rounds of {} operations",
        OPS.len()
    );

    let mut samples: Vec<(Op, Duration)> = Vec::new();
    let mut acks: Vec<Duration> = Vec::new();
    let mut k = 0;
    for round in 0..rounds {
        for op in OPS {
            // Quiet first: every host on the same generation.
            let started = Instant::now();
            let g0 = loop {
                let gs: Vec<Option<i64>> = hosts.iter().map(|h| synced(&h.base, &token)).collect();
                if let Some(Some(g)) = gs.first()
                    && gs.iter().all(|x| x == &Some(*g))
                {
                    break *g;
                }
                if started.elapsed() > DEADLINE {
                    bail!("the hosts did not settle on one generation: {gs:?}");
                }
                std::thread::sleep(POLL);
            };
            // Each host in turn, then the CLI (every host a follower).
            let origin = k % (hosts.len() + 1);
            k += 1;
            let t0 = Instant::now();
            match hosts.get(origin) {
                Some(h) => op.issue(&h.base, &token, round, &packages)?,
                None => op.issue_cli(&cli, round, &files)?,
            }
            let acked = Instant::now();
            acks.push(acked - t0);
            let mut waiting: Vec<usize> = (0..hosts.len()).filter(|i| *i != origin).collect();
            while !waiting.is_empty() {
                waiting.retain(|&i| {
                    let h = &hosts[i];
                    let done = synced(&h.base, &token).is_some_and(|g| g > g0)
                        && op.applied(&h.base, &token, round);
                    if done {
                        samples.push((op, acked.elapsed()));
                    }
                    !done
                });
                if acked.elapsed() > DEADLINE {
                    bail!(
                        "{} (round {round}) not applied by hosts {waiting:?} within {DEADLINE:?}",
                        op.name()
                    );
                }
                std::thread::sleep(POLL);
            }
        }
        if (round + 1) % 5 == 0 {
            println!("  {} rounds done", round + 1);
        }
    }

    println!();
    println!("| operation | samples | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    for op in OPS {
        let mut d: Vec<Duration> = samples
            .iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, d)| *d)
            .collect();
        row(op.name(), &mut d);
    }
    let mut all: Vec<Duration> = samples.iter().map(|(_, d)| *d).collect();
    row("**all**", &mut all);
    row("(acknowledgement on the issuing host or CLI)", &mut acks);
    let within = all.iter().filter(|d| **d <= Duration::from_secs(1)).count();
    println!(
        "\n{within} of {} applications within one second ({} hosts, {} operations, every {}th by the CLI)",
        all.len(),
        hosts_n,
        rounds * OPS.len(),
        hosts_n + 1
    );
    drop(hosts);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn row(name: &str, d: &mut [Duration]) {
    d.sort();
    if d.is_empty() {
        return;
    }
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
    println!(
        "| {name} | {} | {} | {} | {} |",
        d.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(d[d.len() - 1])
    );
}

/// The package in two versions: the bundled `wasm-audit` 1.0.0, and the same with its
/// version raised to 1.0.1 (repacked by `plugboard pack`).
fn packages(
    root: &Path,
    work: &Path,
    cli: &dyn Fn(&[&str]) -> Result<String>,
) -> Result<[Vec<u8>; 2]> {
    let v1 = root.join("examples/packages/wasm-audit-1.0.0.pbpkg");
    let dir = work.join("wasm-audit");
    std::fs::create_dir_all(&dir)?;
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&v1)
        .arg("-C")
        .arg(&dir)
        .status()?;
    if !status.success() {
        bail!("unpacking {}", v1.display());
    }
    let manifest = dir.join("plugboard.toml");
    let text = std::fs::read_to_string(&manifest)?.replacen(
        "version = \"1.0.0\"",
        "version = \"1.0.1\"",
        1,
    );
    std::fs::write(&manifest, text)?;
    let out = work.join("wasm-audit-1.0.1.pbpkg");
    cli(&[
        "pack",
        &dir.display().to_string(),
        "--out",
        &out.display().to_string(),
    ])?;
    Ok([std::fs::read(&v1)?, std::fs::read(&out)?])
}
