//! The dataplane where XDP does not exist: the same API, and `load` says why there is none.

use super::{
    Attachment, ChannelBinding, ChannelTraffic, Counters, DataplaneError, ProgramStats, TestRun,
    Totals, XdpConfig,
};
use crate::proto::FiveTuple;

const WHY: &str = "XDP is a Linux feature";

/// Never loaded: [`Dataplane::load`] always fails, so a relay here serves everything in
/// userspace.
#[derive(Debug)]
pub struct Dataplane {
    _never: std::convert::Infallible,
}

impl Dataplane {
    /// Always fails with [`DataplaneError::Unsupported`].
    pub fn load(_config: &XdpConfig) -> Result<Dataplane, DataplaneError> {
        Err(DataplaneError::Unsupported(WHY))
    }

    /// Where the program is attached (never anywhere).
    pub fn attachments(&self) -> &[Attachment] {
        &[]
    }

    /// The most channels the maps hold.
    pub fn max_channels(&self) -> u32 {
        0
    }

    /// How many channels are offloaded now.
    pub fn bound_channels(&self) -> usize {
        0
    }

    /// What the kernel says about the loaded program.
    pub fn program_stats(&self) -> Result<ProgramStats, DataplaneError> {
        Err(DataplaneError::Unsupported(WHY))
    }

    pub(super) fn bind(
        &self,
        _binding: ChannelBinding,
        _tuple: FiveTuple,
    ) -> Result<(), DataplaneError> {
        Err(DataplaneError::Unsupported(WHY))
    }

    pub(super) fn unbind(&self, _binding: &ChannelBinding) -> Result<(), DataplaneError> {
        Ok(())
    }

    /// Reads the totals.
    pub fn totals(&self) -> Result<Totals, DataplaneError> {
        Err(DataplaneError::Unsupported(WHY))
    }

    /// Reads the totals and every bound channel's traffic.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        Err(DataplaneError::Unsupported(WHY))
    }

    /// What the kernel forwarded per channel since the last call (nothing, ever).
    pub fn take_traffic(
        &self,
        _owned: impl FnMut(&FiveTuple) -> bool,
    ) -> Result<Vec<ChannelTraffic>, DataplaneError> {
        Ok(Vec::new())
    }

    /// Runs the program on a frame with BPF_PROG_TEST_RUN.
    pub fn test_run(
        &self,
        _frame: &[u8],
        _ingress_ifindex: u32,
        _repeat: u32,
    ) -> Result<TestRun, DataplaneError> {
        Err(DataplaneError::Unsupported(WHY))
    }
}
