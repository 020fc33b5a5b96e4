//! Moving sessions: work routing and forwarding, migration between sim workers, handoff
//! and placement on peer servers.

use super::*;

impl Worker {
    /// Applies work for a session of this worker; forwards work for a session handed to
    /// another worker; defers (once, `first`) work for a session not known yet.
    pub(super) fn route_work(&mut self, work: Work, first: bool) {
        let session = match &work {
            Work::Input { session, .. } | Work::Request { session, .. } => *session,
        };
        if self.sessions.contains_key(&session) {
            self.apply(work);
            return;
        }
        if let Some(&(to, _)) = self.forwarded.get(&session) {
            let inbox = self.peers.as_ref().and_then(|p| p.get(to));
            match inbox {
                Some(inbox) => {
                    Stats::inc(&self.stats.sim_forwarded);
                    if inbox.work(work).is_err() {
                        self.stats.dropped(DropCause::InboxFull);
                    }
                }
                None => self.stats.dropped(DropCause::InboxFull),
            }
            return;
        }
        // Work queued right behind the `Join` (a client pipelining requests after its
        // `Hello`) waits while the session loads: it is applied right after the `Welcome`.
        if (first || self.loading(session)) && self.deferred.len() < self.inbox.work.capacity() {
            self.deferred.push(work);
        }
        // Otherwise: the session ended; its work is dropped.
    }

    /// Whether `session` is waiting for its player to load from the store.
    pub(super) fn loading(&self, session: SessionId) -> bool {
        self.persist.as_ref().is_some_and(|p| p.is_loading(session))
    }

    /// Passes a lifecycle message for a session handed to another worker on to it;
    /// returns the message to handle here otherwise.
    pub(super) fn forward_control(&mut self, msg: Control) -> Option<Control> {
        let session = match &msg {
            Control::Leave { session }
            | Control::Detach { session }
            | Control::Handoff { session } => *session,
            Control::Attach(join) => join.session,
            _ => return Some(msg),
        };
        if self.sessions.contains_key(&session) {
            return Some(msg);
        }
        let Some(&(to, _)) = self.forwarded.get(&session) else {
            return Some(msg);
        };
        match self.peers.as_ref().and_then(|p| p.get(to)) {
            Some(inbox) => {
                Stats::inc(&self.stats.sim_forwarded);
                inbox.control(msg);
                None
            }
            None => Some(msg),
        }
    }

    /// Index of the worker that owns `player`'s session, if it is live on this server.
    pub(super) fn worker_of(&self, player: u64) -> Option<usize> {
        self.registry.route(player).map(|(_, r)| r.worker())
    }

    /// Asks for `session` to be handed to worker `to` once settled (stage 5); false when
    /// there is no such peer or no such member.
    pub(super) fn request_migration(&mut self, session: SessionId, to: usize, goal: Goal) -> bool {
        let peer = self.peers.as_ref().is_some_and(|p| to < p.len());
        if !peer || to == self.settings.index {
            return false;
        }
        let now = self.now;
        let Some(m) = self.member_mut(session) else {
            return false;
        };
        let fresh = m.migrating.is_none();
        m.migrating = Some((to, goal, now));
        if fresh {
            self.migrating.push(session);
        }
        true
    }

    /// Hands over the pending migrants whose requests and item operations are settled: a
    /// response still held for the store, an item operation in flight (which the store
    /// may refuse, and the world must then undo) keep the player here until answered.
    pub(super) fn migrate_settled(&mut self, now: Instant) {
        for session in std::mem::take(&mut self.migrating) {
            let Some(m) = self.member(session) else {
                continue;
            };
            let Some((to, goal, since)) = m.migrating else {
                continue;
            };
            if !self.settled(session, since, now) {
                self.migrating.push(session);
                continue;
            }
            self.migrate_out(session, to, goal);
        }
    }

    /// Whether `session`, waiting since `since` to leave this worker, has nothing left
    /// here: no item operation in flight (the store may refuse it, and the world must then
    /// undo it), no response held for the store, and no request awaiting its completion
    /// event (those delay it at most [`MIGRATION_SETTLE`]).
    pub(super) fn settled(&self, session: SessionId, since: Instant, now: Instant) -> bool {
        let Some(m) = self.member(session) else {
            return false;
        };
        let requests_open =
            !m.requests.is_empty() && now.saturating_duration_since(since) < MIGRATION_SETTLE;
        let store_open = self
            .persist
            .as_ref()
            .is_some_and(|p| p.item_ops_of(session) > 0 || p.holds_for(session));
        !(requests_open || store_open)
    }

    /// Ends the sessions of the party members the directory hands to their leader's server
    /// ([`Control::Handoff`]) once they are settled ([`Worker::settled`]: no item operation
    /// or held response open, so their final checkpoint carries every outcome and no
    /// answer is lost), or after [`HANDOFF_SETTLE_MAX`] at the latest (the directory waits
    /// for the checkpoint a little longer). A member handed to another worker meanwhile is
    /// followed there.
    pub(super) fn hand_off_settled(&mut self, now: Instant) {
        for (session, since) in std::mem::take(&mut self.party_handoffs) {
            if !self.sessions.contains_key(&session) {
                // Moved to another worker (forwarded there) or already gone.
                let _ = self.forward_control(Control::Handoff { session });
                continue;
            }
            if self.settled(session, since, now)
                || now.saturating_duration_since(since) >= HANDOFF_SETTLE_MAX
            {
                self.leave_inner(session, true);
            } else {
                self.party_handoffs.push((session, since));
            }
        }
    }

    /// Decides where the new instance of `session`'s zone change to `to_zone` opens (see
    /// "Placing new instances" in [`crate::placement`]); true when it goes to a peer (the
    /// player is queued for its handoff, [`Worker::place_settled`]). Only for a dungeon
    /// whose instance does not exist here yet, entered by a solo player or a party leader
    /// that is attached and not moving to another worker; never while draining.
    pub(super) fn place_on_peer(&mut self, session: SessionId, to_zone: u16) -> bool {
        if self.draining {
            return false;
        }
        let Some(placer) = self.placer.clone() else {
            return false;
        };
        // Towns are not placed (an unknown zone is refused by `transfer_here`).
        if self.settings.content.zone(to_zone).is_none_or(|z| z.town) {
            return false;
        }
        let Some(m) = self.member(session) else {
            return false;
        };
        if m.detached_at.is_some() || m.migrating.is_some() {
            return false;
        }
        let player = m.join.player_id;
        if let Some(party) = self.party_id_of(player) {
            if self.leader_of(party) != Some(player) {
                // A party's instances are its leader's to place.
                return false;
            }
        }
        let Some(to) = placer.instance_target() else {
            placer.count_instance(false);
            return false;
        };
        tracing::debug!(session, zone = to_zone, peer = %to.0, "new instance placed on a peer");
        self.placing.push(Placing {
            session,
            to_zone,
            to,
            since: self.now,
        });
        true
    }

    /// Hands off the players whose new instance goes to a peer once they are settled
    /// ([`Worker::settled`]): each is saved in the new zone at its spawn (the final
    /// checkpoint, queued after its item operations), leaves the simulation keeping its
    /// party and connection, and once the checkpoint is answered goes to the placer's
    /// queue (lease release, then `Redirect`). A player whose connection was lost
    /// meanwhile (no `Redirect` can reach it) enters the zone here after all.
    pub(super) fn place_settled(&mut self, now: Instant) {
        for p in std::mem::take(&mut self.placing) {
            let Some(m) = self.member(p.session) else {
                continue;
            };
            // Its instance opened here meanwhile (a party member entered it first): join it.
            let opened_here = self
                .by_key
                .contains_key(&(p.to_zone, self.owner_of(m.join.player_id)));
            if m.detached_at.is_some() || self.draining || opened_here {
                if let Some(placer) = &self.placer {
                    placer.count_instance(false);
                }
                self.transfer_here(p.session, p.to_zone);
                continue;
            }
            if !self.settled(p.session, p.since, now) {
                self.placing.push(p);
                continue;
            }
            let handoff = Handoff {
                player_id: m.join.player_id,
                player_name: m.join.player_name.clone(),
                session: p.session,
                conn: m.join.conn.clone(),
                outbox: m.join.outbox.clone(),
                shared: m.join.shared.clone(),
                party: self.party_id_of(m.join.player_id),
                to: Some(p.to),
            };
            let dest = self
                .settings
                .content
                .zone(p.to_zone)
                .map(|z| (p.to_zone, z.spawn_mm));
            if let Some(placer) = &self.placer {
                placer.count_instance(true);
            }
            self.leave_inner_to(p.session, true, dest);
            if self.final_save_pending(p.session) {
                self.handoffs_waiting.insert(p.session, handoff);
            } else if let Some(placer) = &self.placer {
                // Nothing was saved (the lease is lost): the owner's server answers the
                // ticket login with a redirect of its own, or the session closes.
                placer.relay().push(handoff);
            }
        }
    }

    /// Exports `session`'s player from its world and hands it to worker `to`.
    pub(super) fn migrate_out(&mut self, session: SessionId, to: usize, goal: Goal) {
        let Some(&instance_id) = self.sessions.get(&session) else {
            return;
        };
        let Some(inst) = self.instances.get_mut(&instance_id) else {
            return;
        };
        let Some(pos) = inst.members.iter().position(|m| m.session == session) else {
            return;
        };
        let entity = inst.members[pos].entity;
        let last_input = inst.world.last_input(entity).unwrap_or(0);
        let Some(state) = inst.world.take_player(entity) else {
            inst.members[pos].migrating = None;
            return;
        };
        let mut member = inst.members.swap_remove(pos);
        member.migrating = None;
        self.sessions.remove(&session);
        if let Some(p) = self.persist.as_mut() {
            // The new worker checkpoints the player on arrival.
            p.clear_dirty(session);
        }
        self.inbox.players.fetch_sub(1, Ordering::Relaxed);
        if let Some(w) = self.stats.workers.get(self.settings.index) {
            Stats::gauge_add(&w.players, -1);
        }
        self.remove_instance_if_empty(instance_id);
        tracing::debug!(
            session,
            player = %member.join.player_name,
            from = self.settings.index,
            to,
            "player handed to another sim worker"
        );
        Stats::inc(&self.stats.sim_migrations);
        self.hand_over(
            Box::new(Migrant {
                member,
                state,
                last_input,
                goal,
                hops: 0,
            }),
            to,
        );
    }

    /// Queues a migrant on worker `to`, then points its session's route there (messages
    /// queued here in between are forwarded).
    pub(super) fn hand_over(&mut self, migrant: Box<Migrant>, to: usize) {
        let session = migrant.member.session;
        let player = migrant.member.join.player_id;
        let Some(inbox) = self.peers.as_ref().and_then(|p| p.get(to)).cloned() else {
            // Validated by `request_migration`; a worker alone has no one to hand to.
            self.migrate_in_here(migrant);
            return;
        };
        self.forwarded.insert(session, (to, self.now));
        inbox.control(Control::Migrate(Handover::pack(migrant)));
        if let Some((s, route)) = self.registry.route(player) {
            if s == session {
                route.set(to);
            }
        }
    }

    /// A migrant arrives: into its leader's instance (passed on, a bounded number of
    /// times, if the leader has moved on meanwhile), else its party's or its own
    /// instance of the zone.
    pub(super) fn migrate_in(&mut self, mut m: Box<Migrant>) {
        self.forwarded.remove(&m.member.session);
        if let Goal::Leader { leader, party, .. } = m.goal {
            if self.leader_instance(party, leader).is_none() && m.hops < MIGRATION_HOPS {
                if let Some(w) = self.worker_of(leader).filter(|w| *w != self.settings.index) {
                    m.hops += 1;
                    self.hand_over(m, w);
                    return;
                }
            }
        }
        self.migrate_in_here(m);
    }

    pub(super) fn migrate_in_here(&mut self, m: Box<Migrant>) {
        let Migrant {
            mut member,
            state,
            last_input,
            goal,
            ..
        } = *m;
        let session = member.session;
        member.acked_tick = self.ticks as u32;
        let player = member.join.player_id;
        let owner = self.owner_of(player);
        let town = self.settings.content.town().map(|t| t.id);
        let to = match goal {
            Goal::Leader {
                leader,
                party,
                zone,
            } => self
                .leader_instance(party, leader)
                .or_else(|| self.instance_for(zone, owner)),
            Goal::Zone(zone) => self.instance_for(zone, owner),
        }
        .or_else(|| town.and_then(|z| self.instance_for(z, owner)));
        let parked = std::mem::take(&mut member.parked);
        self.inbox.players.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = self.stats.workers.get(self.settings.index) {
            Stats::gauge_add(&w.players, 1);
        }
        match to {
            Some(to) => self.place(member, state, last_input, to),
            None => {
                tracing::error!("content has no town zone; migrant closed");
                member
                    .join
                    .conn
                    .close(close_code::INTERNAL, b"transfer failed");
            }
        }
        let Some(&to) = self.sessions.get(&session) else {
            // Not placed (its connection was closed): the session ends here, unsaved.
            self.inbox.players.fetch_sub(1, Ordering::Relaxed);
            if let Some(w) = self.stats.workers.get(self.settings.index) {
                Stats::gauge_add(&w.players, -1);
            }
            Stats::gauge_add(&self.stats.sessions_active, -1);
            self.registry.release(player, session);
            self.end_lease(player, session);
            return;
        };
        // Everyone in the instance now sees its party (XP sharing), whichever worker
        // processed the party change.
        let pids: Vec<u64> = self
            .instances
            .get(&to)
            .map(|i| i.members.iter().map(|m| m.join.player_id).collect())
            .unwrap_or_default();
        for pid in pids {
            let party = self.party_id_of(pid);
            if let Some(inst) = self.instances.get_mut(&to) {
                inst.world.set_party(pid, party);
            }
        }
        self.checkpoint(&[session]);
        for work in parked {
            self.apply(work);
        }
        if self.draining {
            let goaway = ServerMsg::Goaway(Goaway {
                reason: "server is shutting down".into(),
                reconnect_after_ms: self.settings.reconnect_after_ms,
            });
            if let Some(f) = frame(&goaway) {
                self.goaway_and_leave(session, &f);
            }
        }
    }

    /// The instance of `party`'s `leader` on this worker, re-keyed as the party's so the
    /// party keeps sharing it.
    pub(super) fn leader_instance(&mut self, party: PartyId, leader: u64) -> Option<u32> {
        let id = self.instances.values().find_map(|i| {
            i.members
                .iter()
                .any(|m| m.join.player_id == leader)
                .then_some(i.id)
        })?;
        let inst = self.instances.get_mut(&id)?;
        let zone = inst.key.0;
        if self.by_key.get(&inst.key) == Some(&id) {
            self.by_key.remove(&inst.key);
        }
        inst.key = (zone, InstanceOwner::Party(party));
        self.by_key.insert(inst.key, id);
        Some(id)
    }
}
