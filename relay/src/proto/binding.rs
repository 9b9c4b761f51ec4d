//! Binding (RFC 8489 §3, RFC 5780 §6.1): the client's server-reflexive address, in the RFC 3489
//! form for classic clients.

use super::{Command, Ctx, Inbound, Server, canonical};
use crate::stun::{
    ATTR_HEADER_LEN, AttrType, ChangeRequest, MappedAddress, Message, UnknownAttributes,
    XorMappedAddress,
};

impl Server {
    /// Binding (RFC 8489): the reflexive address, or 420 for CHANGE-REQUEST; without
    /// authentication, so as small as the module docs of `dispatch` say.
    pub(super) fn binding(
        &self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        out: &mut [u8],
    ) -> Command {
        let classic = !ctx.header.has_magic_cookie();
        // This server has no alternate address, so it cannot answer from another IP or port:
        // RFC 5780 §6.1 asks for 420 rather than a response that would mislead the client's
        // NAT behaviour discovery (RFC 3489 clients make the same test).
        if let Some(Ok(change)) = msg.get::<ChangeRequest>()
            && (change.change_ip || change.change_port)
        {
            return self.error(
                ctx,
                out,
                420,
                "Unknown Attribute: no alternate address",
                |e| {
                    if classic {
                        // RFC 3489 §11.2.10: an even number of entries, the last repeated.
                        e.add_raw(AttrType::UNKNOWN_ATTRIBUTES, &[0x00, 0x03, 0x00, 0x03])
                    } else {
                        e.add(&UnknownAttributes(
                            [AttrType::CHANGE_REQUEST].into_iter().collect(),
                        ))
                    }
                },
            );
        }
        let remote = canonical(inbound.remote);
        self.success(ctx, out, |e| {
            if classic {
                // RFC 3489 §11.2.1: MAPPED-ADDRESS only; XOR-MAPPED-ADDRESS is
                // comprehension-required and a classic client would reject the response.
                return e.add(&MappedAddress(remote));
            }
            e.add(&XorMappedAddress(remote))?;
            // MAPPED-ADDRESS too, as coturn does, so that tools that read only it keep
            // working; but only within the answer's budget (an IPv6 one to a 20-byte request
            // over UDP would exceed three times its size). No SOFTWARE: that is for
            // authenticated clients only, so Binding answers never carry it.
            let mapped = ATTR_HEADER_LEN + if remote.is_ipv4() { 8 } else { 20 };
            let fingerprint = if ctx.fingerprint { 8 } else { 0 };
            if e.len() + mapped + fingerprint <= ctx.budget() {
                e.add(&MappedAddress(remote))?;
            }
            Ok(())
        })
    }
}
