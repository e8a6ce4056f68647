//! `pack`, `inspect` and `keygen`: building and checking plugin packages (`.pbpkg`)
//! without installing them. The format and every check live in `plugboard-package`.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use plugboard_package::{
    InstallPolicy, SignatureStatus, VerifiedPackage, VerifyOptions, generate_key, key_id,
    read_public_key, read_signing_key, verify, write_public_key, write_signing_key,
};

/// `plugboard pack DIR [--out FILE] [--sign-key FILE]`.
pub(crate) fn pack(
    out: &mut impl Write,
    dir: &Path,
    file: Option<PathBuf>,
    sign_key: Option<&Path>,
) -> Result<()> {
    let key = sign_key.map(read_signing_key).transpose()?;
    let (bytes, sha256) = plugboard_package::pack(dir, key.as_ref())
        .with_context(|| format!("packing {}", dir.display()))?;
    let file = match file {
        Some(f) => f,
        None => {
            // Named after the package; the manifest was checked by `pack`.
            let p = verify(&bytes, &VerifyOptions::default())?;
            let m = &p.manifest.package;
            PathBuf::from(format!("{}-{}.pbpkg", m.name, m.version))
        }
    };
    std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
    writeln!(out, "wrote {} ({} bytes)", file.display(), bytes.len())?;
    writeln!(out, "sha256 {sha256}")?;
    if let Some(k) = &key {
        writeln!(out, "signed by key {}", key_id(&k.verifying_key()))?;
    }
    Ok(())
}

/// `plugboard keygen --out PREFIX`: `PREFIX.key` (secret, 0600) and `PREFIX.pub`.
pub(crate) fn keygen(out: &mut impl Write, prefix: &Path) -> Result<()> {
    let with = |ext: &str| {
        let mut s = OsString::from(prefix.as_os_str());
        s.push(ext);
        PathBuf::from(s)
    };
    let (secret, public) = (with(".key"), with(".pub"));
    let key = generate_key()?;
    write_signing_key(&secret, &key)?;
    write_public_key(&public, &key.verifying_key())?;
    writeln!(out, "key id {}", key_id(&key.verifying_key()))?;
    writeln!(
        out,
        "secret key {} (mode 0600; keep it private)",
        secret.display()
    )?;
    writeln!(out, "public key {}", public.display())?;
    Ok(())
}

/// `plugboard inspect FILE [--json] [--sha256 HEX] [--trusted-key FILE...]`: verifies the
/// package in memory and checks it against the default install policy. Fails (after
/// printing) when the policy refuses it.
pub(crate) fn inspect(
    out: &mut impl Write,
    file: &Path,
    json: bool,
    sha256: Option<String>,
    trusted: &[PathBuf],
) -> Result<()> {
    let policy = InstallPolicy::default();
    let opts = VerifyOptions {
        sha256,
        trusted_keys: trusted
            .iter()
            .map(|p| read_public_key(p))
            .collect::<Result<_, _>>()?,
        ..policy.verify_options()
    };
    let bytes = plugboard_package::read_package_file(file, opts.limits.max_compressed)?;
    let p = verify(&bytes, &opts).with_context(|| format!("{} is refused", file.display()))?;
    let violations: Vec<String> = p
        .manifest
        .violations(&policy)
        .iter()
        .map(ToString::to_string)
        .collect();
    if json {
        print_json(out, &p, &violations)?;
    } else {
        print_summary(out, &p, &violations)?;
    }
    match violations.len() {
        0 => Ok(()),
        n => Err(anyhow!(
            "the default install policy refuses {} ({n} violation{})",
            file.display(),
            if n == 1 { "" } else { "s" }
        )),
    }
}

fn signature_text(s: &SignatureStatus) -> String {
    match s {
        SignatureStatus::Unsigned => "unsigned".into(),
        SignatureStatus::Verified { key_id } => format!("verified (key {key_id})"),
        SignatureStatus::Unverified { key_id } => {
            format!("signed by key {key_id}, not verified (no --trusted-key given)")
        }
    }
}

fn print_json(out: &mut impl Write, p: &VerifiedPackage, violations: &[String]) -> Result<()> {
    let (status, key) = match &p.signature {
        SignatureStatus::Unsigned => ("unsigned", None),
        SignatureStatus::Verified { key_id } => ("verified", Some(key_id)),
        SignatureStatus::Unverified { key_id } => ("unverified", Some(key_id)),
    };
    let v = serde_json::json!({
        "manifest": p.manifest,
        "sha256": p.sha256,
        "signature": { "status": status, "key_id": key },
        "files": {
            "plugin.wasm": p.component.len(),
            "README.md": p.readme.as_ref().map(String::len),
            "settings.schema.json": p.settings_schema.is_some(),
        },
        "checks": {
            "archive": "ok",
            "manifest": "ok",
            "component_header": "ok",
            "policy": violations,
        },
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

fn print_summary(out: &mut impl Write, p: &VerifiedPackage, violations: &[String]) -> Result<()> {
    let m = &p.manifest;
    let pk = &m.package;
    writeln!(out, "package       {} {}", pk.name, pk.version)?;
    if !pk.description.is_empty() {
        writeln!(out, "description   {}", pk.description)?;
    }
    if !pk.authors.is_empty() {
        writeln!(out, "authors       {}", pk.authors.join(", "))?;
    }
    writeln!(out, "license       {}", pk.license)?;
    writeln!(out, "contract      {}", pk.contract)?;
    if let Some(h) = &pk.host {
        writeln!(out, "host          {h}")?;
    }
    writeln!(out, "sha256        {}", p.sha256)?;
    writeln!(out, "signature     {}", signature_text(&p.signature))?;
    writeln!(out, "hooks")?;
    for h in &m.hooks {
        let depends = if h.depends.is_empty() {
            "-".to_owned()
        } else {
            format!("{} ({})", h.depends.join(", "), h.depend_type)
        };
        let role = match h.role {
            plugboard_package::Role::Step => "",
            plugboard_package::Role::Wrapper => "  (wrapper: runs around the chain)",
        };
        writeln!(
            out,
            "  {:16} {:28} {:>4}  {depends}{role}",
            h.plugin,
            h.event,
            h.priority.get()
        )?;
    }
    if !m.dependencies.is_empty() {
        let deps: Vec<_> = m
            .dependencies
            .iter()
            .map(|(n, r)| format!("{n} {r}"))
            .collect();
        writeln!(out, "dependencies  {}", deps.join(", "))?;
    }
    let limits: Vec<_> = m
        .limits
        .fields()
        .into_iter()
        .filter_map(|(f, v, _)| v.map(|v| format!("{f}={v}")))
        .collect();
    if !limits.is_empty() {
        writeln!(out, "limits        {}", limits.join(" "))?;
    }
    let caps = m.capabilities.describe();
    if caps.is_empty() {
        writeln!(out, "capabilities  none")?;
    } else {
        writeln!(
            out,
            "capabilities  (asked for; an operator grants them at install)"
        )?;
        for line in caps {
            writeln!(out, "  {line}")?;
        }
    }
    let mut files = vec![format!("plugin.wasm ({} bytes)", p.component.len())];
    if p.readme.is_some() {
        files.push("README.md".into());
    }
    if p.settings_schema.is_some() {
        files.push("settings.schema.json".into());
    }
    writeln!(out, "files         {}", files.join(", "))?;
    writeln!(out, "checks")?;
    writeln!(out, "  archive     ok")?;
    writeln!(out, "  manifest    ok")?;
    writeln!(
        out,
        "  component   ok (header; the contract is checked when the host loads it)"
    )?;
    if violations.is_empty() {
        writeln!(out, "  policy      ok (default install policy)")?;
    } else {
        writeln!(out, "  policy      refused by the default install policy:")?;
        for v in violations {
            writeln!(out, "    {v}")?;
        }
    }
    Ok(())
}
