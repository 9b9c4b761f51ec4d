//! The ICE connectivity-check attributes (RFC 8445 §16.1): PRIORITY, ICE-CONTROLLED,
//! ICE-CONTROLLING and USE-CANDIDATE.

use super::{Attr, AttrError, AttrType, expect_len};
use crate::stun::TransactionId;

int_attr!(
    /// PRIORITY (RFC 8445 §16.1).
    Priority, AttrType::PRIORITY, u32, 4, "4"
);
int_attr!(
    /// ICE-CONTROLLED (RFC 8445 §16.1): tie-breaker.
    IceControlled, AttrType::ICE_CONTROLLED, u64, 8, "8"
);
int_attr!(
    /// ICE-CONTROLLING (RFC 8445 §16.1): tie-breaker.
    IceControlling, AttrType::ICE_CONTROLLING, u64, 8, "8"
);
flag_attr!(
    /// USE-CANDIDATE (RFC 8445 §16.1).
    UseCandidate, AttrType::USE_CANDIDATE
);
