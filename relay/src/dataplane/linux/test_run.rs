//! Running the loaded program on a frame with BPF_PROG_TEST_RUN, for tests and benchmarks:
//! the kernel returns the verdict and the rewritten packet and sends nothing.

use aya::TestRunResult;
use aya::programs::TestRunOptions;

use super::attach::load_tc_program;
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
        run(program, frame, &ctx, repeat)
    }
}

impl Dataplane {
    /// [`Dataplane::test_run`] of the TC program (`xdpturn_tc`) instead of the XDP one, loaded
    /// first if it is not: the frame as an skb arriving on `ingress_ifindex` (which must be an
    /// interface of the calling thread's namespace). The verdict is the TC action as a `u32`
    /// (`TC_ACT_REDIRECT` = 7, `TC_ACT_SHOT` = 2, `TC_ACT_UNSPEC` = `u32::MAX`). The skb
    /// carries no checksum offload state (`CHECKSUM_NONE`).
    pub fn test_run_tc(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<TestRun, DataplaneError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let program = load_tc_program(&mut inner.ebpf, &mut inner.tc)?;
        let ctx = sk_buff(ingress_ifindex);
        run(program, frame, &ctx, repeat)
    }
}

/// One BPF_PROG_TEST_RUN call of `program` (the XDP or the TC one) on `frame`, with `ctx` its
/// context (an `xdp_md` or an `__sk_buff`).
fn run<P>(program: &P, frame: &[u8], ctx: &[u8], repeat: u32) -> Result<TestRun, DataplaneError>
where
    P: for<'a> aya::programs::TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    // Room for the largest growth (a ChannelData header and an IPv6 header instead of an IPv4
    // one).
    let mut out = vec![0u8; frame.len() + 64];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(ctx),
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

/// The start of the `struct __sk_buff` a TC test run starts from, up to `ifindex` (the
/// kernel takes the rest as zeros): `ingress_ifindex` (offset 36) and `ifindex` (40), the
/// device the skb arrives on; every field before them must be zero.
fn sk_buff(ifindex: u32) -> Vec<u8> {
    let mut ctx = vec![0u8; 44];
    ctx[36..40].copy_from_slice(&ifindex.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
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
