//! The command line itself: usage errors keep clap's help (suggestions, possible values, usage)
//! with exit status 2, a failed run exits 1, host names are taken by `serve --listen`, and the
//! shell completions and man page are generated from the clap definitions.

use crate::common;

use std::time::Duration;

use common::run;

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `netcore ARGS`, asserts exit status 2, returns stderr.
fn usage_error(args: &[&str]) -> String {
    let (st, out, err) = run(args, LIMIT);
    assert_eq!(st.code(), Some(2), "netcore {args:?}: {st}\n{err}");
    assert!(out.is_empty(), "netcore {args:?} printed on stdout: {out}");
    err
}

#[test]
fn no_command_prints_the_help() {
    let err = usage_error(&[]);
    assert!(err.contains("Usage: netcore"), "{err}");
    for cmd in [
        "blast", "recv", "serve", "load", "compare", "traffic", "relay",
    ] {
        assert!(err.contains(cmd), "help lists no {cmd}: {err}");
    }
}

#[test]
fn a_misspelt_flag_gets_a_suggestion_and_the_usage() {
    let err = usage_error(&["blast", "--tim", "3s"]);
    assert!(err.starts_with("netcore: error: "), "{err}");
    assert!(err.contains("--time"), "no suggestion: {err}");
    assert!(err.contains("Usage: netcore blast"), "no usage: {err}");
}

#[test]
fn a_bad_choice_lists_the_possible_values() {
    let err = usage_error(&["serve", "--model", "nope"]);
    assert!(err.starts_with("netcore: error: "), "{err}");
    for m in ["iterative", "fork", "thread", "pool", "epoll", "uring"] {
        assert!(err.contains(m), "model {m} not listed: {err}");
    }
}

#[test]
fn values_out_of_range_are_usage_errors() {
    for args in [
        &["blast", "--batch", "0", "--count", "10"][..],
        &["blast", "--count", "0"],
        &["recv", "--window", "8"],
        &["serve", "--model", "thread", "--reactors", "2"],
        &["traffic", "--interval", "1ns"],
    ] {
        let err = usage_error(args);
        assert!(err.starts_with("netcore: error: "), "{args:?}: {err}");
    }
}

#[test]
fn a_failed_run_exits_1() {
    // Nothing listens on port 1: the test cannot run.
    let (st, _, err) = run(&["blast", "--to", "127.0.0.1:1", "--count", "10"], LIMIT);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.starts_with("netcore: error: "), "{err}");
}

#[test]
fn serve_listens_on_a_host_name() {
    let mut child = common::spawn(
        &["serve", "--listen", "localhost:0"],
        std::process::Stdio::piped(),
    );
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(out);
            let mut l = String::new();
            let _ = r.read_line(&mut l);
            let _ = tx.send(l);
        });
        if let Ok(l) = rx.recv_timeout(LIMIT) {
            line = l;
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        line.starts_with("listening on "),
        "serve --listen localhost:0: {line:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_texts_mention_only_their_own_flags() {
    // `load` shares its workload flags with `compare`, but has no --preset.
    let (st, out, _) = run(&["load", "--help"], LIMIT);
    assert!(st.success());
    assert!(!out.contains("--preset"), "{out}");
    let (_, out, _) = run(&["compare", "--help"], LIMIT);
    assert!(out.contains("--preset"), "{out}");
}

#[test]
fn docs_name_no_missing_design_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    for f in ["README.md", "ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(format!("{root}/{f}")).unwrap();
        assert!(!text.contains("DESIGN.md"), "{f} refers to a DESIGN.md");
    }
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (st, out, err) = run(&["completions", shell], LIMIT);
        assert!(st.success(), "{shell}: {err}");
        for word in ["netcore", "blast", "compare", "clients", "model"] {
            assert!(out.contains(word), "{shell}: no {word}");
        }
    }
    // The possible values of an enum flag are offered.
    let (_, bash, _) = run(&["completions", "bash"], LIMIT);
    assert!(
        bash.contains("iterative") && bash.contains("uring"),
        "no models"
    );
    usage_error(&["completions", "tcsh"]);
}

#[test]
fn man_pages_are_generated() {
    let (st, out, err) = run(&["man"], LIMIT);
    assert!(st.success(), "{err}");
    assert!(
        out.starts_with(".ie") || out.contains(".TH netcore"),
        "{out:.200}"
    );
    assert!(
        out.contains("load") && out.contains("compare"),
        "{out:.200}"
    );
    let (st, out, err) = run(&["man", "load"], LIMIT);
    assert!(st.success(), "{err}");
    assert!(out.contains(".TH netcore-load"), "{out:.300}");
    assert!(out.contains("clients"), "{out:.300}");
    usage_error(&["man", "nope"]);
}
