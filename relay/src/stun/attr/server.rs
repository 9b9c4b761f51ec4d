//! What a server says about itself: SOFTWARE (RFC 8489 §14.14), and ALTERNATE-DOMAIN
//! (§14.16), the name an ALTERNATE-SERVER's TLS certificate is checked against.

use super::{Attr, AttrError, AttrType};
use crate::stun::TransactionId;

text_attr!(
    /// SOFTWARE (RFC 8489 §14.14): fewer than 128 characters, at most 763 bytes.
    Software, AttrType::SOFTWARE, 763
);
text_attr!(
    /// ALTERNATE-DOMAIN (RFC 8489 §14.16): a domain name, at most 255 bytes.
    AlternateDomain, AttrType::ALTERNATE_DOMAIN, 255
);
