//! Running the loaded program on a frame with BPF_PROG_TEST_RUN, for tests and benchmarks:
//! the kernel returns the verdict and the rewritten packet and sends nothing.

use aya::programs::{TestRun as _, TestRunOptions};

use super::{Dataplane, xdp_program};
use crate::dataplane::{DataplaneError, TestRun};

impl Dataplane {
    /// Runs the program on `frame` with BPF_PROG_TEST_RUN, `repeat` times (at least once), as
    /// if it had arrived on interface `ingress_ifindex` of the calling thread's network
    /// namespace (0: the namespace's loopback). For tests and benchmarks: the kernel returns
    /// the verdict and the rewritten packet but sends nothing; the counters count every run.
    pub fn test_run(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<TestRun, DataplaneError> {
        let mut inner = self.lock();
        let program = xdp_program(&mut inner.ebpf)?;
        let ctx = xdp_md(frame, ingress_ifindex)?;
        // Room for the largest growth (a ChannelData header and an IPv6 header instead of an
        // IPv4 one).
        let mut out = vec![0u8; frame.len() + 64];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .map_err(|e| DataplaneError::TestRun(e.into()))?;
        out.truncate(result.data_size_out as usize);
        Ok(TestRun {
            verdict: result.return_value,
            output: out,
            duration: result.duration,
        })
    }
}

/// The `struct xdp_md` a test run starts from: data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex.
fn xdp_md(frame: &[u8], ingress_ifindex: u32) -> Result<Vec<u8>, DataplaneError> {
    let len = u32::try_from(frame.len()).map_err(|e| DataplaneError::TestRun(e.into()))?;
    let mut ctx = Vec::with_capacity(24);
    for field in [0, len, 0, ingress_ifindex, 0, 0] {
        ctx.extend_from_slice(&field.to_ne_bytes());
    }
    Ok(ctx)
}
