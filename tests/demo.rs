//! `pgheal demo` is the README's first command: it must run unattended and show a heal.

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
}
