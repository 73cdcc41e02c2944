//! The committed object is its source: `src/net/xdp/build.sh` (the
//! pinned clang and flags) makes the same bytes again, and those are the
//! bytes the server embeds; and the kernel's verifier accepts it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use turnpike::net::xdp::{RelayProgram, OBJECT};

use crate::common::process::run_with_timeout;
use crate::common::scratch::ScratchDir;

#[test]
fn the_committed_object_is_what_its_source_compiles_to() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = ScratchDir::new("xdp-object");
    let rebuilt = scratch.path().join("relay.bpf.o");
    let out = run_with_timeout(
        Command::new("bash")
            .arg(root.join("src/net/xdp/build.sh"))
            .arg(&rebuilt),
        Duration::from_secs(300),
    );
    assert!(out.success(), "src/net/xdp/build.sh failed: {}", out.combined());
    let rebuilt = std::fs::read(&rebuilt).expect("the rebuilt object");
    let committed = std::fs::read(root.join("src/net/xdp/relay.bpf.o")).expect("the committed object");
    if rebuilt != committed {
        let first = rebuilt.iter().zip(&committed).position(|(a, b)| a != b);
        panic!(
            "src/net/xdp/relay.bpf.o ({} bytes) is not what src/net/xdp/build.sh makes of relay.bpf.c \
             ({} bytes, first difference at byte {first:?}): run the script and commit the object",
            committed.len(),
            rebuilt.len()
        );
    }
    assert!(OBJECT == committed.as_slice(), "the binary embeds the committed object");
}

#[test]
fn the_kernel_verifier_accepts_the_program_at_its_default_size() {
    // 65536 routes per map, as relay.h sizes them (the tests use fewer).
    let (_program, maps) = RelayProgram::load(65_536).expect("load and verify the XDP program (needs root)");
    assert!(maps.is_empty());
}
