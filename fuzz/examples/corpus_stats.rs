//! Replays the `server_client_packet` corpus through the harness (no
//! instrumentation) and prints what the inputs reached: how many got an
//! allocation, a permission, a channel, relayed data, and which error
//! codes. Run from `fuzz/`: `cargo run --release --example corpus_stats`.

use std::fs;
use std::path::Path;

use turnpike_fuzz::server::{Harness, Stats};

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/server_client_packet");
    let mut total = Stats::default();
    let mut inputs = 0;
    let mut reached = [0usize; 5];
    for entry in fs::read_dir(&dir)? {
        let data = fs::read(entry?.path())?;
        let h = Harness::run_program(&data);
        let s = &h.stats;
        inputs += 1;
        for (i, hit) in [
            s.allocated > 0,
            s.permitted > 0,
            s.bound > 0,
            s.to_peer > 0,
            s.channel_data_to_client + s.indications_to_client > 0,
        ]
        .into_iter()
        .enumerate()
        {
            reached[i] += usize::from(hit);
        }
        total.add(s);
    }
    println!("{inputs} inputs in {}", dir.display());
    println!(
        "inputs reaching: allocation {}, permission {}, channel {}, data to a peer {}, data to a client {}",
        reached[0], reached[1], reached[2], reached[3], reached[4]
    );
    println!("summed over all inputs: {total:?}");
    Ok(())
}
