//! The XDP fast path at start-up and while it runs: attaching it where configured (or saying
//! once why it cannot be, and serving in userspace), attaching it late where another relay
//! process's program held the interface, and feeding what the kernel relayed into the same
//! metrics as userspace, taking it off an interface whose sends fail.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::RelayConfig;

use crate::dataplane::{self, Dataplane, XdpConfig};
use crate::metrics::{Datapath, Direction, Metrics};
use crate::proto::Transport;

/// Attaches the XDP fast path when interfaces are configured (`listeners`: the STUN/TURN
/// listening addresses; `handing_over`: a relay on the same ports hands them over to this
/// one, and its program on the interfaces is expected). On failure the relay says why
/// once, exports it (`xdpturn_xdp_attached 0`) and serves everything in userspace. An
/// interface that has another XDP program (the relay this one takes the ports over from,
/// until it exits) waits, said once: the program stays loaded and its maps current, and
/// [`attach_when_free`] attaches it later.
pub fn load_dataplane(
    cfg: &RelayConfig,
    listeners: &[SocketAddr],
    handing_over: bool,
    metrics: &Metrics,
) -> Option<Arc<dataplane::Dataplane>> {
    metrics.xdp_attached.set(0);
    if cfg.xdp_interfaces.is_empty() {
        return None;
    }
    let config = XdpConfig {
        interfaces: cfg.xdp_interfaces.clone(),
        mode: cfg.xdp_mode,
        max_channels: cfg.xdp_max_channels.max(1),
        listeners: listeners.to_vec(),
    };
    match Dataplane::load(&config) {
        Ok(dp) => {
            for a in dp.attachments() {
                attached(&a, dp.max_channels(), metrics);
            }
            let waiting = dp.waiting();
            metrics
                .xdp_waiting
                .set(waiting.len().try_into().unwrap_or(i64::MAX));
            for interface in waiting {
                if handing_over {
                    tracing::info!(
                        interface,
                        "the relay this one takes the ports over from has its XDP program on \
                         {interface}; attaching when it lets go"
                    );
                } else {
                    tracing::warn!(
                        interface,
                        "another XDP program is attached to {interface}; relaying in userspace \
                         until it is detached"
                    );
                }
            }
            Some(Arc::new(dp))
        }
        Err(err) => {
            fallback(&err, metrics);
            tracing::warn!(error = %err, "XDP fast path unavailable; relaying everything in userspace");
            None
        }
    }
}

/// How often [`attach_when_free`] tries an interface another XDP program holds: the fast path
/// returns within this long of the other relay's exit, at the cost of one failing syscall per
/// waiting interface each time.
pub const ATTACH_RETRY: Duration = Duration::from_secs(2);

/// Attaches the program to the interfaces that had another XDP program at start-up, each as
/// soon as it is free ([`ATTACH_RETRY`]); returns when none waits any more.
///
/// Why: during a hand-over of the host ports (serve::handover) the relay that hands them over
/// drains its allocations for minutes, and its program stays attached to the interfaces until
/// its process exits (the kernel then detaches its BPF links, however it exits). Without this,
/// the new relay would relay everything in userspace until it is restarted. Meanwhile the
/// program is loaded and the workers keep its maps as if it were attached, so from the attach
/// on the kernel forwards every allocation already there.
///
/// An interface that fails otherwise (gone, or refusing the mode) stops waiting: said once,
/// counted in `xdpturn_xdp_fallbacks_total`, and relayed in userspace.
pub async fn attach_when_free(dp: Arc<Dataplane>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(ATTACH_RETRY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !dp.waiting().is_empty() {
        tick.tick().await;
        let done = dp.attach_waiting();
        if done.is_empty() {
            continue;
        }
        metrics
            .xdp_waiting
            .set(dp.waiting().len().try_into().unwrap_or(i64::MAX));
        for (interface, result) in done {
            match result {
                Ok(a) => attached(&a, dp.max_channels(), &metrics),
                Err(err) => {
                    fallback(&err, &metrics);
                    tracing::warn!(
                        interface,
                        error = %err,
                        "XDP fast path unavailable on this interface; relaying its traffic in \
                         userspace"
                    );
                }
            }
        }
    }
}

/// Says that the program is attached to `a` and exports it.
fn attached(a: &dataplane::Attachment, max_channels: u32, metrics: &Metrics) {
    tracing::info!(
        interface = %a.interface,
        mode = a.mode.as_str(),
        why = a.why.describe(),
        max_channels,
        "XDP fast path attached"
    );
    metrics
        .xdp_interface_mode
        .with_label_values(&[a.interface.as_str(), a.mode.as_str(), a.why.as_str()])
        .set(1);
    metrics.xdp_attached.set(1);
}

fn fallback(err: &dataplane::DataplaneError, metrics: &Metrics) {
    metrics
        .xdp_fallbacks
        .with_label_values(&[err.metric_label()])
        .inc();
}

/// Feeds what the kernel relayed into the same counters as userspace, labelled
/// `datapath="xdp"`. Frames the attached interfaces dropped meanwhile are counted apart
/// (`xdpturn_xdp_send_failures_total`) and, while the program forwards, taken out of the
/// packet counts (a frame the program sent that the interface dropped did not leave; the
/// counters do not say which way it was going, so each direction gives up its share). An
/// interface that drops more than [`SEND_FAILURES_TOLERATED`] frames in a second, and more
/// than a tenth of what the program forwarded, has a mode whose frames do not arrive (native
/// XDP on a veth whose other end runs none): it loses the fast path, and its traffic is
/// relayed in userspace from then on.
pub async fn export_xdp_counters(dp: Arc<dataplane::Dataplane>, metrics: Arc<Metrics>) {
    // totals(): a fixed handful of syscalls, whatever the number of channels.
    let mut last = dataplane::Totals::default();
    let mut drops_before = dp.interface_drops();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Ok(now) = dp.totals() else { continue };
        let forwarded = now.client_to_peer.since(last.client_to_peer).packets
            + now.peer_to_client.since(last.peer_to_client).packets;
        let mut failed_now = 0u64;
        let drops = dp.interface_drops();
        let attachments = dp.attachments();
        for (index, (count, before)) in drops.iter().zip(&drops_before).enumerate() {
            let (Some(count), Some(before)) = (count, before) else {
                continue;
            };
            let new = count.saturating_sub(*before);
            let Some(a) = attachments.get(index) else {
                continue;
            };
            // Drops while the program forwards nothing are not its.
            if new == 0 || forwarded == 0 {
                continue;
            }
            failed_now += new;
            metrics
                .xdp_send_failures
                .with_label_values(&[a.interface.as_str()])
                .inc_by(new);
            if new > SEND_FAILURES_TOLERATED && new * 10 > forwarded {
                match dp.detach(index) {
                    Ok(true) => {
                        tracing::error!(
                            interface = %a.interface,
                            mode = a.mode.as_str(),
                            dropped = new,
                            forwarded,
                            "XDP sends on this interface fail (its frames do not leave): the \
                             fast path is off it from now on, and its traffic is relayed in \
                             userspace; try another --xdp-mode"
                        );
                        metrics
                            .xdp_fallbacks
                            .with_label_values(&["send_failures"])
                            .inc();
                        metrics
                            .xdp_interface_mode
                            .with_label_values(&[
                                a.interface.as_str(),
                                a.mode.as_str(),
                                a.why.as_str(),
                            ])
                            .set(0);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        err = %e,
                        interface = %a.interface,
                        "taking the fast path off an interface whose sends fail"
                    ),
                }
            }
        }
        drops_before = drops;
        let failed_now = failed_now.min(forwarded);
        for (dir, cur, prev) in [
            (
                Direction::ClientToPeer,
                now.client_to_peer,
                last.client_to_peer,
            ),
            (
                Direction::PeerToClient,
                now.peer_to_client,
                last.peer_to_client,
            ),
        ] {
            let d = cur.since(prev);
            // The failed frames did not leave: taken out of each direction in proportion to
            // its share of what the program forwarded in this second (the drop counters do not
            // say which way a frame was going).
            let failed = if forwarded == 0 {
                0
            } else {
                (u128::from(failed_now) * u128::from(d.packets) / u128::from(forwarded)) as u64
            };
            let r = metrics.relayed(Datapath::Xdp, Transport::Udp, dir);
            r.packets.inc_by(d.packets.saturating_sub(failed));
            r.bytes.inc_by(d.bytes);
        }
        for ((kind, cur), prev) in dataplane::MessageKind::ALL
            .iter()
            .zip(now.kinds)
            .zip(last.kinds)
        {
            for (direction, cur, prev) in [
                ("client_to_peer", cur.client_to_peer, prev.client_to_peer),
                ("peer_to_client", cur.peer_to_client, prev.peer_to_client),
            ] {
                metrics
                    .xdp_forwarded
                    .with_label_values(&[kind.as_str(), direction])
                    .inc_by(cur.since(prev).packets);
            }
        }
        last = now;
    }
}

/// Frames an interface may fail to send in a second before it loses the fast path (with more
/// than a tenth of what the program forwarded): a full ring drops a few now and then; a mode
/// whose frames do not arrive drops them all.
const SEND_FAILURES_TOLERATED: u64 = 20;
