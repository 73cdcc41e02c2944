//! The Debian package under test, made by `cargo deb` from the binary this
//! test run built (`--no-build`: no second, release build; about 4 s).
//!
//! Invariant: the package is made by every run from the very binary and
//! packaging files under test, so it can never be stale. The binary is
//! the one `cargo test` built (a debug build, stripped by cargo-deb), so
//! cargo-deb is pointed at its profile (`--profile dev`, which cargo-deb
//! 3.8 warns about but supports); the release package (`cargo deb`)
//! differs only in the binary's optimisation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{run_with_timeout, turnpike_bin};

/// The cargo profile whose output directory holds the test's binary
/// (`target/debug` is the `dev` profile's).
fn profile_of(binary: &Path) -> String {
    let dir = binary
        .parent()
        .and_then(Path::file_name)
        .and_then(|d| d.to_str())
        .expect("the binary's directory");
    match dir {
        "debug" => "dev".to_owned(),
        other => other.to_owned(),
    }
}

/// Makes the .deb into `out` and returns its file name.
pub fn build_deb(out: &Path) -> String {
    let cargo = env!("CARGO");
    let version = run_with_timeout(Command::new(cargo).args(["deb", "--version"]), Duration::from_secs(30));
    assert!(
        version.success(),
        "cargo-deb is missing: `./scripts/test.sh` installs it (cargo install cargo-deb --version 3.8.0 --locked)\n{}",
        version.combined()
    );
    let output = run_with_timeout(
        Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "deb",
                "--no-build",
                "--fast",
                "--profile",
                &profile_of(Path::new(turnpike_bin())),
            ])
            .arg("--output")
            .arg(out),
        Duration::from_secs(300),
    );
    assert!(output.success(), "cargo deb failed:\n{}", output.combined());
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("read the output directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    match &debs[..] {
        [deb] => deb.file_name().and_then(|n| n.to_str()).expect("UTF-8 name").to_owned(),
        _ => panic!("cargo deb made {debs:?}:\n{}", output.combined()),
    }
}
