//! Parties and trades: invitations, accepting and leaving, and a leader's trades with the
//! nearest member.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use zonehost_protocol::message::{PartyEvent, Request};

use super::{Brain, TRADE_PATIENCE, TRADE_REACH};
use crate::stats::Metric;

impl Brain {
    pub(super) fn party_request(&mut self, now: Instant) -> Option<(Metric, Request, u128)> {
        if let Some(by) = self.invited_by.take() {
            if self.s.party_member_of.as_deref().is_none_or(|l| l == by) && !self.in_party {
                return Some((Metric::Party, Request::PartyAccept, 0));
            }
            return Some((Metric::Party, Request::PartyDecline, 0));
        }
        if self.in_party && self.leave_at.is_some_and(|t| now >= t) {
            self.leave_at = None;
            return Some((Metric::Party, Request::PartyLeave, 0));
        }
        if !self.s.party_leader_of.is_empty() && now >= self.invite_at {
            let n = self.s.party_leader_of.len();
            for k in 0..n {
                let i = (self.invite_next + k) % n;
                let name = &self.s.party_leader_of[i];
                if !self.party_members.contains(name) {
                    self.invite_next = i + 1;
                    self.invite_at = now + Duration::from_secs(2);
                    return Some((
                        Metric::Party,
                        Request::PartyInvite {
                            player: name.clone(),
                        },
                        0,
                    ));
                }
            }
            self.invite_at = now + Duration::from_secs(2);
        }
        None
    }

    /// Trading (party bots with `party_trade_every`): a leader opens a trade with the
    /// nearest player (in a party instance, a member); each side offers one potion, then
    /// accepts; a refusal cancels the trade.
    pub(super) fn trade_request(&mut self, now: Instant) -> Option<(Metric, Request, u128)> {
        let every = self.s.party_trade_every?;
        if self.dead {
            return None;
        }
        if let Some(t) = self.trade.as_mut() {
            if t.committing {
                return None;
            }
            if t.since
                .is_some_and(|s| now.saturating_duration_since(s) > TRADE_PATIENCE)
            {
                t.since = Some(now);
                t.cancel = true;
            }
            if t.cancel {
                t.cancel = false;
                return Some((Metric::TradeCancel, Request::TradeCancel, 0));
            }
            if !t.offered {
                t.offered = true;
                let offer = self
                    .bag
                    .iter()
                    .find(|i| Self::is_potion(i) && !t.mine.contains(&i.id))
                    .map(|i| i.id);
                if let Some(item) = offer {
                    return Some((Metric::TradeOffer, Request::TradeOffer { item }, item));
                }
            }
            if !t.mine_accepted {
                t.mine_accepted = true;
                return Some((Metric::TradeAccept, Request::TradeAccept, 0));
            }
            return None;
        }
        if self.s.party_leader_of.is_empty() || !self.in_party || now < self.trade_at {
            return None;
        }
        let (with, d) = self.nearest_player?;
        if d > TRADE_REACH || !self.inventory_known {
            return None;
        }
        self.trade_at = now + every;
        Some((Metric::TradeOpen, Request::TradeOpen { with }, 0))
    }

    pub(super) fn on_party(&mut self, p: &PartyEvent, now: Instant) {
        match p {
            PartyEvent::Invited { by } => self.invited_by = Some(by.clone()),
            PartyEvent::Declined { .. } => self.invite_at = now + Duration::from_secs(2),
            PartyEvent::Members { members, .. } => {
                self.in_party = members.contains(&self.name);
                self.party_members = members.clone();
                if self.in_party && self.s.party_member_of.is_some() && self.leave_at.is_none() {
                    let (lo, hi) = self.s.party_stay;
                    let stay = if hi > lo {
                        lo + (hi - lo).mul_f64(self.rng.random::<f64>())
                    } else {
                        lo
                    };
                    self.leave_at = Some(now + stay);
                }
            }
            PartyEvent::Left { .. } => {
                self.in_party = false;
                self.party_members.clear();
                self.leave_at = None;
                self.invite_at = now + Duration::from_secs(2);
            }
        }
    }
}
