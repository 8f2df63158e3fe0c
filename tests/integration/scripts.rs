//! The project's shell scripts, where their behaviour can be held without
//! running a whole cluster.

use std::process::Command;

/// `RUSTFLAGS` after sourcing `scripts/lib/common.sh` `times` times in one
/// shell that starts with `initial`.
fn rustflags_after_sourcing(initial: Option<&str>, times: usize) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!(
        "{} printf %s \"$RUSTFLAGS\"",
        ". scripts/lib/common.sh;".repeat(times)
    );
    let mut command = Command::new("bash");
    command.arg("-c").arg(script).current_dir(root);
    match initial {
        Some(flags) => command.env("RUSTFLAGS", flags),
        None => command.env_remove("RUSTFLAGS"),
    };
    let output = command.output().expect("run bash");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("utf-8")
}

/// quickstart.sh exports the flags and then runs dev-cluster.sh, which
/// sources the helpers again: both must hand cargo the same flags, or each
/// rebuilds the whole tree after the other.
#[test]
fn sourcing_common_sh_again_leaves_rustflags_unchanged() {
    let once = rustflags_after_sourcing(None, 1);
    assert_eq!(once, "-C target-feature=+crt-static");
    assert_eq!(rustflags_after_sourcing(None, 3), once);
    assert_eq!(rustflags_after_sourcing(Some(&once), 1), once);
    assert_eq!(
        rustflags_after_sourcing(Some("-C opt-level=2"), 2),
        "-C opt-level=2 -C target-feature=+crt-static"
    );
}
