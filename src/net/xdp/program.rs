//! Loading the XDP program: the object committed as
//! `src/net/xdp/relay.bpf.o` (built from `relay.bpf.c` by `build.sh`,
//! checked byte for byte by `tests/xdp/object.rs`) is embedded in the
//! binary, so `cargo build` needs no clang, and loaded with aya.
//!
//! Loading creates the maps and passes the program through the kernel's
//! verifier; it attaches nothing. [`RelayProgram::test_run`] runs it
//! once on a frame with `BPF_PROG_TEST_RUN`, which also touches no
//! interface: the tests use it, and a host check can (a verifier that
//! run the fast path" means). [`RelayProgram::attach`] puts it on an
//! interface (`[relay] fast_path`, `attach.rs`) through a BPF link,
//! which the kernel releases when its file descriptor closes: on drop,
//! and when the process dies however it dies.

use aya::programs::xdp::XdpLinkId;
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use super::maps::RelayMaps;
use super::XdpError;

/// The compiled program (see `build.sh` for how it is made).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("relay.bpf.o");

/// The program's function in the object (`SEC("xdp")`).
const PROGRAM: &str = "turnpike_relay";

/// What the program decided for a frame (`enum xdp_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    Other(u32),
}

impl From<u32> for XdpAction {
    fn from(value: u32) -> Self {
        match value {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            other => XdpAction::Other(other),
        }
    }
}

/// One `BPF_PROG_TEST_RUN`: the verdict and the frame as the program
/// left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunResult {
    pub action: XdpAction,
    pub frame: Vec<u8>,
}

/// Room for a frame the program grows (it adds at most a 4-byte
/// ChannelData header).
const GROWTH: usize = 64;

/// The loaded program and its maps.
pub struct RelayProgram {
    ebpf: Ebpf,
}

impl RelayProgram {
    /// Loads the embedded object: creates its maps, each route map with
    /// room for `max_routes` entries (the counters for twice that), and
    /// has the kernel verify the program. Needs `CAP_BPF` (root).
    pub fn load(max_routes: u32) -> Result<(RelayProgram, RelayMaps), XdpError> {
        let slots = max_routes.checked_mul(2).ok_or(XdpError::TooManyRoutes(max_routes))?;
        if max_routes == 0 {
            return Err(XdpError::TooManyRoutes(max_routes));
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("tp_channels", max_routes)
            .map_max_entries("tp_peers", max_routes)
            .map_max_entries("tp_counts", slots)
            .load(OBJECT)
            .map_err(|e| XdpError::Load(Box::new(e)))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing(PROGRAM))?
            .try_into()
            .map_err(|e| XdpError::Program(Box::new(e)))?;
        program.load().map_err(|e| XdpError::Program(Box::new(e)))?;
        let maps = RelayMaps::take(&mut ebpf, slots)?;
        Ok((RelayProgram { ebpf }, maps))
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, XdpError> {
        self.ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing(PROGRAM))?
            .try_into()
            .map_err(|e| XdpError::Program(Box::new(e)))
    }

    /// Attaches the program to interface `ifindex` in `mode` (driver or
    /// generic: `XdpMode::Driver`, `XdpMode::Skb`). Needs `CAP_BPF` and
    /// `CAP_NET_ADMIN`. Fails, touching nothing, when the interface
    /// already has an XDP program (the kernel's `EBUSY` or `EEXIST`).
    pub fn attach(&mut self, ifindex: u32, mode: XdpMode) -> Result<XdpLinkId, XdpError> {
        self.program_mut()?
            .attach_to_if_index(ifindex, mode)
            .map_err(|e| XdpError::Program(Box::new(e)))
    }

    /// Detaches what [`RelayProgram::attach`] attached (dropping the
    /// program detaches every link too).
    pub fn detach(&mut self, link: XdpLinkId) -> Result<(), XdpError> {
        self.program_mut()?
            .detach(link)
            .map_err(|e| XdpError::Program(Box::new(e)))
    }

    fn program(&self) -> Result<&Xdp, XdpError> {
        self.ebpf
            .program(PROGRAM)
            .ok_or(XdpError::Missing(PROGRAM))?
            .try_into()
            .map_err(|e| XdpError::Program(Box::new(e)))
    }

    /// Runs the program once on `frame` (an Ethernet frame) as if it had
    /// arrived on interface `ingress_ifindex` of the calling thread's
    /// network namespace (0: the namespace's loopback, where no route
    /// resolves a neighbour), with `BPF_PROG_TEST_RUN`. Nothing is sent:
    /// the kernel hands back the verdict and the rewritten frame.
    pub fn test_run(&self, frame: &[u8], ingress_ifindex: u32) -> Result<TestRunResult, XdpError> {
        let context = xdp_md(frame.len(), ingress_ifindex)?;
        let mut out = vec![0; frame.len() + GROWTH];
        let options = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&context),
            ..TestRunOptions::default()
        };
        let result = self
            .program()?
            .test_run(options)
            .map_err(|e| XdpError::Program(Box::new(e)))?;
        let len = usize::try_from(result.data_size_out).unwrap_or(usize::MAX);
        out.truncate(len.min(out.len()));
        Ok(TestRunResult {
            action: XdpAction::from(result.return_value),
            frame: out,
        })
    }
}

/// A `struct xdp_md` for a test run: the frame from offset 0 to its
/// end, received on `ingress_ifindex`, queue 0.
fn xdp_md(len: usize, ingress_ifindex: u32) -> Result<[u8; 24], XdpError> {
    let data_end = u32::try_from(len).map_err(|_| XdpError::FrameTooLong(len))?;
    let fields = [0, data_end, 0, ingress_ifindex, 0, 0];
    let mut md = [0; 24];
    for (chunk, field) in md.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&field.to_ne_bytes());
    }
    Ok(md)
}
