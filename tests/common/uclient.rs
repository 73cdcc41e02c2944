//! What coturn's `turnutils_uclient` prints at the end of a run, read.

/// The final counters `turnutils_uclient` prints.
#[derive(Debug, PartialEq, Eq)]
pub struct UclientSummary {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
}

/// The digits right after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Reads the summary of a `turnutils_uclient` run: the last
/// `start_mclient: tot_send_msgs=N, tot_recv_msgs=M` line (not the periodic
/// `msz=` progress lines) and the last `Total lost packets L (...)` line.
pub fn parse_uclient_summary(output: &str) -> Option<UclientSummary> {
    let totals = output
        .lines()
        .filter_map(|line| line.split_once("start_mclient: ").map(|(_, rest)| rest))
        .rfind(|rest| rest.starts_with("tot_send_msgs="))?;
    let lost = output.lines().rfind(|line| line.contains("Total lost packets "))?;
    Some(UclientSummary {
        sent: number_after(totals, "tot_send_msgs=")?,
        received: number_after(totals, "tot_recv_msgs=")?,
        lost: number_after(lost, "Total lost packets ")?,
    })
}

/// Runs coturn's `turnutils_uclient` against the listener `server` on
/// 127.0.0.1 with a long-term credential: two clients, each its own peer
/// (`-y`), ten messages each, over UDP unless `extra` says otherwise
/// (`-t`: TCP). Returns its whole output; panics if it fails or prints no
/// summary.
pub fn relay_ten_each(
    server: std::net::SocketAddr,
    user: &str,
    password: &str,
    extra: &[&str],
) -> (String, UclientSummary) {
    let tool = crate::common::require_tool("turnutils_uclient");
    let port = server.port().to_string();
    let out = crate::common::run_with_timeout(
        std::process::Command::new(tool)
            .args(["-u", user, "-w", password, "-y", "-m", "2", "-n", "10", "-p", &port])
            .args(extra)
            .arg("127.0.0.1"),
        std::time::Duration::from_secs(60),
    );
    let text = out.combined();
    assert!(out.success(), "turnutils_uclient failed:\n{text}");
    let summary = parse_uclient_summary(&text).unwrap_or_else(|| panic!("no summary:\n{text}"));
    (text, summary)
}
