//! Writes the seed corpora into `corpus/<target>/` (run from `fuzz/`):
//! `cargo run --example write_seeds`. The corpus directory is ignored by
//! git: seeds are generated, not committed.

use std::fs;
use std::path::Path;

use turnpike_fuzz::program;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let targets: [(&str, Vec<Vec<u8>>); 11] = [
        ("stun_message", program::stun_seeds()),
        ("channel_data", program::channel_data_seeds()),
        ("server_client_packet", program::server_seeds()),
        ("peer_filter", program::peer_filter_seeds()),
        ("cidr_parse", program::cidr_seeds()),
        ("signal_message", turnpike_fuzz::signal::seeds()),
        ("signal_session", turnpike_fuzz::session::seeds()),
        ("proxy_header", turnpike_fuzz::proxy::seeds()),
        ("fleet_message", turnpike_fuzz::fleet::seeds()),
        ("redis_push", turnpike_fuzz::redis_push::seeds()),
        ("nat_discovery", turnpike_fuzz::nat::seeds()),
    ];
    for (target, seeds) in targets {
        let dir = root.join(target);
        fs::create_dir_all(&dir)?;
        for (i, seed) in seeds.iter().enumerate() {
            fs::write(dir.join(format!("seed-{i:02}")), seed)?;
        }
        println!("{}: {} seeds", dir.display(), seeds.len());
    }
    Ok(())
}
