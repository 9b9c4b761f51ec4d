//! The dataplane where XDP does not exist: the same API, and `load` says why there is none.

use std::net::{IpAddr, SocketAddr};

use super::{
    AllocationBinding, Attachment, ChannelBinding, ChannelTraffic, Counters, DataplaneError,
    NextHop, NextHopChanges, PeerEntry, PermissionBinding, ProgramStats, TestRun, Totals,
    XdpConfig,
};
use crate::proto::FiveTuple;

const WHY: &str = "XDP is a Linux feature";

/// Whether the kernel has tcx links: there is no such kernel here.
pub fn tcx_links() -> bool {
    false
}

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
    pub fn attachments(&self) -> Vec<Attachment> {
        Vec::new()
    }

    /// The interfaces waiting for another XDP program to go: none.
    pub fn waiting(&self) -> Vec<String> {
        Vec::new()
    }

    /// Attaches to the waiting interfaces: there are none.
    pub fn attach_waiting(&self) -> Vec<(String, Result<Attachment, DataplaneError>)> {
        Vec::new()
    }

    /// Frames the attached interfaces dropped: nothing is attached.
    pub fn interface_drops(&self) -> Vec<Option<u64>> {
        Vec::new()
    }

    /// Whether the object has the TC program: there is no object.
    pub fn has_tc_program(&self) -> bool {
        false
    }

    /// Takes the program off an interface: nothing is attached.
    pub fn detach(&self, _index: usize) -> Result<bool, DataplaneError> {
        Ok(false)
    }

    /// The most channels the maps hold.
    pub fn max_channels(&self) -> u32 {
        0
    }

    /// How many channels are offloaded now.
    pub fn bound_channels(&self) -> usize {
        0
    }

    /// How many permissions are offloaded now.
    pub fn installed_permissions(&self) -> usize {
        0
    }

    /// How many allocations are offloaded now.
    pub fn installed_allocations(&self) -> usize {
        0
    }

    /// What PEER_TO_CLIENT holds for `peer` on `relay` (nothing, ever).
    pub fn peer_entry(
        &self,
        _relay: SocketAddr,
        _peer: SocketAddr,
    ) -> Result<Option<PeerEntry>, DataplaneError> {
        Ok(None)
    }

    /// What ALLOCATIONS holds for a client (nothing, ever).
    pub fn allocation_entry(
        &self,
        _client: SocketAddr,
        _listener: SocketAddr,
    ) -> Result<Option<Vec<SocketAddr>>, DataplaneError> {
        Ok(None)
    }

    /// What the kernel says about the loaded program.
    pub fn program_stats(&self) -> Result<ProgramStats, DataplaneError> {
        Err(DataplaneError::Unsupported(WHY))
    }

    /// What the kernel says about the TC program.
    pub fn tc_program_stats(&self) -> Result<ProgramStats, DataplaneError> {
        Err(DataplaneError::Unsupported(WHY))
    }

    pub(super) fn bind(
        &self,
        _binding: ChannelBinding,
        _tuple: FiveTuple,
    ) -> Result<(), DataplaneError> {
        Err(DataplaneError::Unsupported(WHY))
    }

    pub(super) fn unbind(
        &self,
        _binding: &ChannelBinding,
    ) -> Result<Option<ChannelTraffic>, DataplaneError> {
        Ok(None)
    }

    pub(super) fn permit(
        &self,
        _binding: PermissionBinding,
        _tuple: FiveTuple,
    ) -> Result<(), DataplaneError> {
        Err(DataplaneError::Unsupported(WHY))
    }

    pub(super) fn revoke(
        &self,
        _binding: &PermissionBinding,
    ) -> Result<Option<ChannelTraffic>, DataplaneError> {
        Ok(None)
    }

    pub(super) fn offload(&self, _binding: AllocationBinding) -> Result<(), DataplaneError> {
        Err(DataplaneError::Unsupported(WHY))
    }

    pub(super) fn unload(&self, _binding: &AllocationBinding) -> Result<(), DataplaneError> {
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

    /// What the kernel forwarded per channel and permission since the last call (nothing, ever).
    pub fn take_traffic(
        &self,
        _owned: impl FnMut(&FiveTuple) -> bool,
    ) -> Result<Vec<ChannelTraffic>, DataplaneError> {
        Ok(Vec::new())
    }

    /// Resolves the next hops again (there are none).
    pub fn refresh_next_hops(&self) -> Result<NextHopChanges, DataplaneError> {
        Ok(NextHopChanges::default())
    }

    /// What the next-hop map holds for `dst` (nothing, ever).
    pub fn next_hop(&self, _dst: IpAddr) -> Result<Option<NextHop>, DataplaneError> {
        Ok(None)
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

    /// Runs the TC program on a frame with BPF_PROG_TEST_RUN.
    pub fn test_run_tc(
        &self,
        _frame: &[u8],
        _ingress_ifindex: u32,
        _repeat: u32,
    ) -> Result<TestRun, DataplaneError> {
        Err(DataplaneError::Unsupported(WHY))
    }
}
