//! `pgheal demo` is the README's first command: it must run unattended and show a heal, and
//! the README shows its output as it is.

/// Ports replaced by `PORT`: they change from run to run.
fn without_ports(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("127.0.0.1:") {
        let (head, tail) = rest.split_at(i + "127.0.0.1:".len());
        out.push_str(head);
        out.push_str("PORT");
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// The README's code block that starts with the demo's first line.
fn readme_demo() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("```\npgheal demo:")
        .expect("the README shows the demo's output")
        + 4;
    let len = readme[start..].find("\n```").expect("end of the block");
    readme[start..start + len].to_owned()
}

#[test]
fn demo_shows_the_error_directly_and_the_heal_through_pgheal() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgheal"))
        .arg("demo")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run pgheal demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ERROR 0A000: cached plan must not change result type"),
        "{stdout}"
    );
    assert!(
        stdout.contains("id=1 customer=alice total=19.90"),
        "{stdout}"
    );
    assert!(stdout.contains("projected=1 refused=0"), "{stdout}");
    assert!(
        !stdout.contains("discount_code="),
        "no row in the new shape reaches the app: {stdout}"
    );
    // It ends with the check of its own migration.
    assert!(stdout.contains("pgheal check-migration"), "{stdout}");
    assert!(stdout.contains("healed by pgheal (projection)"), "{stdout}");
    assert!(
        stdout.contains(
            "1 unchanged, 0 healed (re-prepare), 1 healed (projection), 0 breaks, 0 fails"
        ),
        "{stdout}"
    );
    assert_eq!(
        without_ports(&readme_demo()),
        without_ports(stdout.trim_end()),
        "the README shows the demo's output as it is (ports aside)"
    );
}
