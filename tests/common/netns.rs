//! Two "hosts" for a test: network namespaces joined by a veth pair (root only).

use std::process::{Command, Stdio};

/// Two namespaces with a veth pair, 10.0.0.1/30 (a) and 10.0.0.2/30 (b); removed on drop.
pub struct Netns {
    pub a: String,
    pub b: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    match Command::new("ip").args(args).stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run ip: {e}")),
    }
}

impl Netns {
    /// Creates the pair (names tagged with `tag` and this process's id), or says why it
    /// cannot (not root, no `ip`).
    pub fn create(tag: &str) -> Result<Netns, String> {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
            })
            .unwrap_or_default();
        if uid != "0" {
            return Err("not root (network namespaces need CAP_SYS_ADMIN)".into());
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Err("the `ip` command (iproute2) is not installed".into());
        }
        let id = std::process::id();
        let ns = Netns {
            a: format!("nc{tag}{id}a"),
            b: format!("nc{tag}{id}b"),
        };
        let (va, vb) = (format!("nc{id}a"), format!("nc{id}b"));
        ip(&["netns", "add", &ns.a])?;
        ip(&["netns", "add", &ns.b])?;
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", &ns.a])?;
        ip(&["link", "set", &vb, "netns", &ns.b])?;
        ip(&["-n", &ns.a, "addr", "add", "10.0.0.1/30", "dev", &va])?;
        ip(&["-n", &ns.b, "addr", "add", "10.0.0.2/30", "dev", &vb])?;
        for (n, v) in [(&ns.a, &va), (&ns.b, &vb)] {
            ip(&["-n", n, "link", "set", v, "up"])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }

    /// `ip netns exec NS netcore ARGS`.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_netcore")])
            .args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end inside it, and with it the pair.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}
