//! A pure party registry: invite, accept, decline, leave, kick, leader succession.
//!
//! Independent of any [`crate::World`]: the server keeps one registry (parties may span
//! instances) and mirrors membership into worlds with [`crate::World::set_party`].

use std::collections::BTreeMap;

/// Party id.
pub type PartyId = u32;
/// Most members in a party (leader included).
pub const MAX_PARTY_SIZE: usize = 4;

/// One party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// Id.
    pub id: PartyId,
    /// Current leader (a member).
    pub leader: u64,
    /// Members in join order, leader included.
    pub members: Vec<u64>,
}

/// Why a party operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PartyError {
    /// A player cannot invite themselves.
    #[error("cannot invite yourself")]
    SelfInvite,
    /// The invitee (or accepting player) is already in a party.
    #[error("already in a party")]
    AlreadyInParty,
    /// Only the leader may invite or kick.
    #[error("not the party leader")]
    NotLeader,
    /// The party has [`MAX_PARTY_SIZE`] members.
    #[error("party full")]
    PartyFull,
    /// No pending (still valid) invite.
    #[error("no pending invite")]
    NoInvite,
    /// The player is not in a party.
    #[error("not in a party")]
    NotInParty,
    /// The kick target is not a member of the leader's party (or is the leader).
    #[error("not a member")]
    NotMember,
}

/// What an operation changed (for notifying members and updating worlds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartyChange {
    /// An invite is pending.
    Invited {
        /// Who invited.
        inviter: u64,
        /// Who is invited.
        invitee: u64,
    },
    /// An invite was declined.
    Declined {
        /// Who invited.
        inviter: u64,
        /// Who declined.
        invitee: u64,
    },
    /// A player joined (with `created`, the inviter's new party was formed too).
    Joined {
        /// Party.
        party: PartyId,
        /// New member.
        player: u64,
        /// The party was created by this accept (the inviter is its leader).
        created: bool,
    },
    /// A player left or was kicked.
    Left {
        /// Party.
        party: PartyId,
        /// Who left.
        player: u64,
        /// Whether they were kicked.
        kicked: bool,
        /// The new leader, if leadership passed on.
        new_leader: Option<u64>,
        /// The party dissolved (one member would remain); that member is party-less now.
        disbanded: bool,
        /// When it dissolved: the member that remained (now party-less), to be told.
        last_member: Option<u64>,
    },
}

/// All parties and pending invites.
#[derive(Debug, Clone, Default)]
pub struct Parties {
    parties: BTreeMap<PartyId, Party>,
    member_of: BTreeMap<u64, PartyId>,
    invites: BTreeMap<u64, u64>,
    next_id: PartyId,
}

impl Parties {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The party `player` is in.
    pub fn party_of(&self, player: u64) -> Option<&Party> {
        self.member_of
            .get(&player)
            .and_then(|id| self.parties.get(id))
    }

    /// The party with id `id`.
    pub fn party(&self, id: PartyId) -> Option<&Party> {
        self.parties.get(&id)
    }

    /// Who invited `invitee`, if an invite is pending.
    pub fn pending_invite(&self, invitee: u64) -> Option<u64> {
        self.invites.get(&invitee).copied()
    }

    /// `inviter` invites `invitee` (a newer invite replaces an older one).
    pub fn invite(&mut self, inviter: u64, invitee: u64) -> Result<PartyChange, PartyError> {
        if inviter == invitee {
            return Err(PartyError::SelfInvite);
        }
        if self.member_of.contains_key(&invitee) {
            return Err(PartyError::AlreadyInParty);
        }
        if let Some(p) = self.party_of(inviter) {
            if p.leader != inviter {
                return Err(PartyError::NotLeader);
            }
            if p.members.len() >= MAX_PARTY_SIZE {
                return Err(PartyError::PartyFull);
            }
        }
        self.invites.insert(invitee, inviter);
        Ok(PartyChange::Invited { inviter, invitee })
    }

    /// `invitee` accepts its pending invite.
    pub fn accept(&mut self, invitee: u64) -> Result<PartyChange, PartyError> {
        let inviter = self.invites.remove(&invitee).ok_or(PartyError::NoInvite)?;
        if self.member_of.contains_key(&invitee) {
            return Err(PartyError::AlreadyInParty);
        }
        if let Some(&id) = self.member_of.get(&inviter) {
            let party = self.parties.get_mut(&id).ok_or(PartyError::NoInvite)?;
            if party.leader != inviter {
                return Err(PartyError::NoInvite);
            }
            if party.members.len() >= MAX_PARTY_SIZE {
                return Err(PartyError::PartyFull);
            }
            party.members.push(invitee);
            self.member_of.insert(invitee, id);
            return Ok(PartyChange::Joined {
                party: id,
                player: invitee,
                created: false,
            });
        }
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        self.parties.insert(
            id,
            Party {
                id,
                leader: inviter,
                members: vec![inviter, invitee],
            },
        );
        self.member_of.insert(inviter, id);
        self.member_of.insert(invitee, id);
        Ok(PartyChange::Joined {
            party: id,
            player: invitee,
            created: true,
        })
    }

    /// `invitee` declines its pending invite.
    pub fn decline(&mut self, invitee: u64) -> Result<PartyChange, PartyError> {
        let inviter = self.invites.remove(&invitee).ok_or(PartyError::NoInvite)?;
        Ok(PartyChange::Declined { inviter, invitee })
    }

    /// `player` leaves its party. The oldest remaining member becomes leader if the
    /// leader left; a party left with one member dissolves.
    pub fn leave(&mut self, player: u64) -> Result<PartyChange, PartyError> {
        self.remove_member(player, false)
    }

    /// `leader` removes `target` from the party.
    pub fn kick(&mut self, leader: u64, target: u64) -> Result<PartyChange, PartyError> {
        let party = self.party_of(leader).ok_or(PartyError::NotInParty)?;
        if party.leader != leader {
            return Err(PartyError::NotLeader);
        }
        if target == leader || !party.members.contains(&target) {
            return Err(PartyError::NotMember);
        }
        self.remove_member(target, true)
    }

    /// Forgets a player entirely (logout): pending invite to them and membership.
    pub fn forget(&mut self, player: u64) -> Option<PartyChange> {
        self.invites.remove(&player);
        self.remove_member(player, false).ok()
    }

    /// Sets party `id` to what another authority decided (the server's store, when parties
    /// span servers): `leader` and `members` replace what was known; members listed in
    /// another party leave it; fewer than two members removes the party.
    pub fn mirror(&mut self, id: PartyId, leader: u64, members: &[u64]) {
        self.unmirror(id);
        if members.len() < 2 {
            return;
        }
        for m in members {
            if let Some(other) = self.member_of.get(m).copied() {
                if let Some(p) = self.parties.get_mut(&other) {
                    p.members.retain(|x| x != m);
                }
            }
            self.member_of.insert(*m, id);
            self.invites.remove(m);
        }
        self.parties.insert(
            id,
            Party {
                id,
                leader,
                members: members.to_vec(),
            },
        );
    }

    /// Removes party `id` (disbanded by another authority).
    pub fn unmirror(&mut self, id: PartyId) {
        if let Some(p) = self.parties.remove(&id) {
            for m in p.members {
                if self.member_of.get(&m) == Some(&id) {
                    self.member_of.remove(&m);
                }
            }
        }
    }

    fn remove_member(&mut self, player: u64, kicked: bool) -> Result<PartyChange, PartyError> {
        let id = self
            .member_of
            .remove(&player)
            .ok_or(PartyError::NotInParty)?;
        let party = self.parties.get_mut(&id).ok_or(PartyError::NotInParty)?;
        party.members.retain(|m| *m != player);
        let mut new_leader = None;
        if party.leader == player {
            if let Some(&first) = party.members.first() {
                party.leader = first;
                new_leader = Some(first);
            }
        }
        let disbanded = party.members.len() <= 1;
        let last_member = if disbanded {
            party.members.first().copied()
        } else {
            None
        };
        if disbanded {
            for m in &party.members {
                self.member_of.remove(m);
            }
            self.parties.remove(&id);
            new_leader = None;
        }
        Ok(PartyChange::Left {
            party: id,
            player,
            kicked,
            new_leader,
            disbanded,
            last_member,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_replaces_and_unmirror_removes() {
        let mut p = Parties::new();
        p.mirror(7, 1, &[1, 2, 3]);
        assert_eq!(p.party_of(2).map(|x| (x.id, x.leader)), Some((7, 1)));
        p.mirror(7, 2, &[2, 3]);
        assert_eq!(p.party_of(1), None);
        assert_eq!(p.party_of(3).map(|x| x.leader), Some(2));
        p.mirror(7, 2, &[2]);
        assert_eq!(p.party(7), None, "a party of one is no party");
        p.mirror(8, 4, &[4, 5]);
        p.unmirror(8);
        assert_eq!(p.party_of(4), None);
        assert_eq!(p.party_of(5), None);
    }

    #[test]
    fn lifecycle() {
        let mut p = Parties::new();
        assert_eq!(p.invite(1, 1), Err(PartyError::SelfInvite));
        assert!(p.invite(1, 2).is_ok());
        assert_eq!(
            p.decline(2),
            Ok(PartyChange::Declined {
                inviter: 1,
                invitee: 2
            })
        );
        assert_eq!(p.accept(2), Err(PartyError::NoInvite));
        assert!(p.invite(1, 2).is_ok());
        let Ok(PartyChange::Joined {
            party,
            created: true,
            ..
        }) = p.accept(2)
        else {
            panic!("join");
        };
        assert_eq!(p.invite(2, 3), Err(PartyError::NotLeader));
        for n in 3..=4 {
            assert!(p.invite(1, n).is_ok());
            assert!(p.accept(n).is_ok());
        }
        assert_eq!(p.invite(1, 5), Err(PartyError::PartyFull));
        assert_eq!(p.invite(1, 3), Err(PartyError::AlreadyInParty));
        // leader leaves: the oldest remaining member leads
        let Ok(PartyChange::Left {
            new_leader,
            disbanded,
            ..
        }) = p.leave(1)
        else {
            panic!("leave");
        };
        assert_eq!((new_leader, disbanded), (Some(2), false));
        assert_eq!(p.party(party).map(|x| x.leader), Some(2));
        assert_eq!(p.kick(3, 4), Err(PartyError::NotLeader));
        assert_eq!(p.kick(2, 2), Err(PartyError::NotMember));
        assert!(p.kick(2, 4).is_ok());
        let Ok(PartyChange::Left {
            disbanded,
            last_member,
            ..
        }) = p.leave(3)
        else {
            panic!("leave");
        };
        assert!(disbanded);
        assert_eq!(last_member, Some(2), "the member left alone is named");
        assert!(p.party_of(2).is_none() && p.party(party).is_none());
        assert_eq!(p.leave(2), Err(PartyError::NotInParty));
    }

    #[test]
    fn stale_invite_from_demoted_leader_is_void() {
        let mut p = Parties::new();
        assert!(p.invite(1, 2).is_ok() && p.accept(2).is_ok());
        assert!(p.invite(1, 3).is_ok());
        assert!(p.leave(1).is_ok()); // party of 2 dissolves
                                     // 1 is party-less now, so the invite creates a new party
        assert!(matches!(
            p.accept(3),
            Ok(PartyChange::Joined { created: true, .. })
        ));
    }
}
