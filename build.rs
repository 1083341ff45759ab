//! Embeds the git revision netcore is built from (`NETCORE_GIT_REVISION`, read by
//! `stats::meta`): `git describe --always --dirty`, or "unknown" outside a git checkout or
//! without git.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    let rev = git(&["describe", "--always", "--dirty", "--abbrev=12"]);
    println!(
        "cargo:rustc-env=NETCORE_GIT_REVISION={}",
        rev.as_deref().unwrap_or("unknown")
    );
    // Again when the sources change (dirty or not) or a commit moves HEAD.
    for p in ["build.rs", "Cargo.toml", "src"] {
        println!("cargo:rerun-if-changed={p}");
    }
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        for f in ["HEAD", "logs/HEAD"] {
            println!("cargo:rerun-if-changed={dir}/{f}");
        }
    }
}
