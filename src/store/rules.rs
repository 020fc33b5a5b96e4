//! Rules every backend applies the same way: the party version and invitation checks, the
//! pending-invitation test, and fresh mail ids.

use super::error::StoreError;
use super::types::{Invitation, PartyRecord};

/// Checks the version rule of [`Store::write_party`](crate::store::PartyStore::write_party).
pub fn check_party_version(party: &PartyRecord, expected: Option<u64>) -> Result<(), StoreError> {
    let want = expected.map_or(Some(1), |v| v.checked_add(1));
    if Some(party.version) != want {
        return Err(StoreError::Invalid {
            reason: format!(
                "party {:016x}: version {} written over {:?}",
                party.party_id, party.version, expected
            ),
        });
    }
    if !party.members.is_empty() && !party.members.contains(&party.leader) {
        return Err(StoreError::Invalid {
            reason: format!("party {:016x}: leader is not a member", party.party_id),
        });
    }
    Ok(())
}

/// Checks the rules of [`Store::write_party_invite`](crate::store::PartyStore::write_party_invite) besides the version.
pub fn check_invitation(
    party: &PartyRecord,
    invitation: &Invitation,
    now_ms: u64,
) -> Result<(), StoreError> {
    let reason = if party.members.is_empty() {
        "a disbanded party invites nobody"
    } else if invitation.party_id != party.party_id {
        "the invitation is for another party"
    } else if !party.invites.contains(&invitation.invitee) {
        "the invitee is not listed in invites"
    } else if party.members.contains(&invitation.invitee) {
        "the invitee is a member"
    } else if invitation.expires_at_ms <= now_ms {
        "the invitation has expired already"
    } else {
        return Ok(());
    };
    Err(StoreError::Invalid {
        reason: format!(
            "party {:016x}, invitee {:016x}: {reason}",
            party.party_id, invitation.invitee
        ),
    })
}

/// The invitation `index` (the invitation index entry of its invitee) as valid at
/// `now_ms` against `party` (the party it names, as stored now).
pub fn pending_invitation(
    index: Invitation,
    party: Option<&PartyRecord>,
    now_ms: u64,
) -> Option<Invitation> {
    let party = party?;
    (index.expires_at_ms > now_ms
        && party.party_id == index.party_id
        && party.invites.contains(&index.invitee)
        && !party.members.contains(&index.invitee))
    .then_some(index)
}

/// A fresh mail id: `now_ms` in the high 64 bits, random low bits.
pub fn mail_id(now_ms: u64) -> u128 {
    let mut b = [0u8; 8];
    let low = match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        }
    };
    (u128::from(now_ms) << 64) | u128::from(low)
}
