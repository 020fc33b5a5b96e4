//! Session lifecycle: joining (store loads, admission, welcome), zone transfers, detach
//! and attach, leaving, and drain.

use super::*;

impl Worker {
    /// Refuses a session that was never welcomed: `Reject` then close, claim released.
    pub(super) fn reject_join(
        &self,
        join: &Join,
        code: RejectCode,
        reason: &str,
        cause: DisconnectCause,
    ) {
        let reject = ServerMsg::Reject(Reject {
            code,
            reason: reason.into(),
        });
        if let Some(frame) = frame(&reject) {
            let msg = Outgoing::CloseAfter {
                frame,
                code: close_code::REJECTED,
                cause,
            };
            let _ = join.outbox.try_send(msg);
        }
        if code != RejectCode::Draining {
            self.stats.rejected(code);
        }
        self.registry.release(join.player_id, join.session);
        self.end_lease(join.player_id, join.session);
    }

    /// A session that ends without a final checkpoint (never admitted, or its lease is
    /// lost): its ownership lease, if any, is released now.
    pub(super) fn end_lease(&self, player_id: u64, session: SessionId) {
        if let Some(p) = self.persist.as_ref() {
            p.settings.session_done(player_id, session);
        }
    }

    /// A new session: with a store, load the player first (the tick never waits: the
    /// player enters when both replies have arrived, see [`Worker::finish_load`]).
    pub(super) fn join(&mut self, join: Box<Join>) {
        if self.draining {
            self.reject_join(
                &join,
                RejectCode::Draining,
                "server is draining",
                DisconnectCause::Shutdown,
            );
            return;
        }
        if let Some(p) = self.persist.as_mut() {
            p.load(join);
            return;
        }
        self.admit(join, None);
    }

    /// Forgets a session still waiting for its load (its connection ended first).
    pub(super) fn cancel_load(&mut self, session: SessionId) -> bool {
        let Some(p) = self.persist.as_mut() else {
            return false;
        };
        let Some(join) = p.cancel_load(session) else {
            return false;
        };
        self.registry.release(join.player_id, session);
        p.settings.session_done(join.player_id, session);
        true
    }

    /// Admits a loaded player once its record and items have both arrived.
    pub(super) fn finish_load(&mut self, token: u64) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let Some(l) = p.take_loaded(token) else {
            return;
        };
        let join = l.join;
        if self.draining {
            self.reject_join(
                &join,
                RejectCode::Draining,
                "server is draining",
                DisconnectCause::Shutdown,
            );
            return;
        }
        let loaded = match (l.record, l.items) {
            (Some(Ok(record)), Some(Ok(items))) => Self::loaded_state(&join, record, &items),
            (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e),
            _ => return,
        };
        match loaded {
            Ok(loaded) => self.admit(join, loaded),
            Err(e) => {
                tracing::error!(
                    player = %join.player_name,
                    player_id = join.player_id,
                    error = %e,
                    "player could not be loaded; session refused"
                );
                self.reject_join(
                    &join,
                    RejectCode::Internal,
                    "your character could not be loaded",
                    DisconnectCause::Rejected,
                );
            }
        }
    }

    /// The state a login starts from: `None` for a brand-new player (starter kit), else
    /// the saved state with its inventory reconciled against the item table.
    pub(super) fn loaded_state(
        join: &Join,
        record: Option<PlayerRecord>,
        items: &[ItemRecord],
    ) -> Result<Option<Loaded>, StoreError> {
        let (mut state, zone, pos) = match record {
            None if items.is_empty() => return Ok(None),
            None => (PlayerState::new(join.player_id), None, None),
            Some(r) => {
                let state = persist::state_of(&r)?;
                (state, Some(r.zone), Some((r.x_mm, r.y_mm)))
            }
        };
        let r = persist::reconcile(&mut state, items);
        if r != persist::Reconciled::default() {
            tracing::info!(
                player = %join.player_name,
                player_id = join.player_id,
                removed = r.removed,
                added = r.added,
                unplaced = r.unplaced,
                "inventory reconciled with the item table"
            );
        }
        Ok(Some(Loaded { state, zone, pos }))
    }

    /// Puts a player in the world and welcomes it: a new character (starter kit, created
    /// in the store) or a loaded one (zone and position restored when the zone exists,
    /// else the town).
    pub(super) fn admit(&mut self, join: Box<Join>, loaded: Option<Loaded>) {
        let session = join.session;
        let pid = join.player_id;
        let town = self.settings.content.town().map(|t| t.id);
        let saved_zone = loaded
            .as_ref()
            .and_then(|l| l.zone)
            .filter(|z| self.settings.content.zone(*z).is_some());
        let Some(id) = saved_zone
            .or(town)
            .and_then(|zone| self.instance_for(zone, InstanceOwner::Player(join.player_id)))
        else {
            tracing::error!("content has no town zone; refusing the session");
            join.conn.close(close_code::INTERNAL, b"no start zone");
            self.registry.release(join.player_id, session);
            self.end_lease(join.player_id, session);
            return;
        };
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        let fresh = loaded.is_none();
        let entity = match loaded {
            None => Ok(inst.world.add_player(join.player_id)),
            Some(l) => {
                let restore = saved_zone.and(l.pos);
                inst.world.add_player_with_state(l.state).inspect(|&e| {
                    if let Some(pos) = restore {
                        inst.world.place_player(e, pos);
                    }
                })
            }
        };
        let entity = match entity {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(
                    player = %join.player_name,
                    player_id = join.player_id,
                    error = %e,
                    "saved state refused by the world; session refused"
                );
                self.remove_instance_if_empty(id);
                self.reject_join(
                    &join,
                    RejectCode::Internal,
                    "your character could not be loaded",
                    DisconnectCause::Rejected,
                );
                return;
            }
        };
        if !Self::send_welcome(
            &self.settings,
            &join,
            &inst.world,
            id,
            entity,
            self.ticks as u32,
        ) {
            inst.world.remove_player(entity);
            self.registry.release(join.player_id, session);
            self.end_lease(join.player_id, session);
            self.remove_instance_if_empty(id);
            return;
        }
        if let Some(party) = self.party_id_of(join.player_id) {
            self.announce_members(party);
        }
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        // The starter kit granted by `add_player` is reported at once.
        for ev in inst.world.events() {
            if let Some(f) = wire::event(ev).and_then(|e| frame(&ServerMsg::Event(e))) {
                send(&join, f);
            }
        }
        if let (true, Some(p), Some(state)) = (
            fresh,
            self.persist.as_mut(),
            inst.world.export_player(entity),
        ) {
            let kit = state
                .inventory
                .bag
                .iter()
                .chain(state.inventory.equipment.items());
            for item in kit {
                match persist::encode_item(item) {
                    Ok(data) => {
                        let op = ItemOp {
                            op_id: p.op_id(),
                            item_id: item.id.0,
                            kind: ItemOpKind::Create {
                                owner: Owner::Player(join.player_id),
                                data,
                            },
                        };
                        p.item_op(op, Some(session), id);
                    }
                    Err(e) => tracing::error!(error = %e, "starter item not persisted"),
                }
            }
        }
        tracing::debug!(session, player = %join.player_name, instance = id, "joined");
        let mut member = Member::new(session, entity, *join);
        member.acked_tick = self.ticks as u32;
        member.saved_pos = inst.world.player_pos(entity).unwrap_or_default();
        inst.add_member(member);
        self.sessions.insert(session, id);
        self.inbox.players.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = self.stats.workers.get(self.settings.index) {
            Stats::gauge_add(&w.players, 1);
        }
        Stats::gauge_add(&self.stats.sessions_active, 1);
        if fresh {
            // A new character exists from its first second on.
            self.checkpoint(&[session]);
        }
        // A party member arriving (e.g. redirected to its leader's server) joins its
        // leader's instance.
        if let Some(party) = self.party_id_of(pid) {
            self.join_leader_instance(party, pid);
        }
        self.tell_directory_arrived(pid);
    }

    /// Moves a player to its instance of `to_zone` (its party's, if any) and tells it: on
    /// its leader's worker, on a peer server (a new dungeon instance placed by load), or
    /// here.
    pub(super) fn transfer(&mut self, session: SessionId, to_zone: u16) {
        let Some(player) = self.member(session).map(|m| m.join.player_id) else {
            return;
        };
        // A newer zone change (a respawn in town, another portal) supersedes a placement
        // still waiting for the player's item operations: decide again for this one.
        self.placing.retain(|p| p.session != session);
        // A party member whose leader lives on another worker goes there.
        let leader = self.party_id_of(player).and_then(|p| self.leader_of(p));
        if let Some(w) = leader
            .filter(|l| *l != player)
            .and_then(|l| self.worker_of(l))
            .filter(|w| *w != self.settings.index)
        {
            if self.request_migration(session, w, Goal::Zone(to_zone)) {
                return;
            }
        }
        let owner = self.owner_of(player);
        if !self.by_key.contains_key(&(to_zone, owner)) && self.place_on_peer(session, to_zone) {
            return;
        }
        self.transfer_here(session, to_zone);
    }

    /// Moves a player to its instance of `to_zone` on this worker (created if needed).
    pub(super) fn transfer_here(&mut self, session: SessionId, to_zone: u16) {
        let Some(&from) = self.sessions.get(&session) else {
            return;
        };
        let Some(player) = self.member(session).map(|m| m.join.player_id) else {
            return;
        };
        let owner = self.owner_of(player);
        let Some(to) = self.instance_for(to_zone, owner) else {
            tracing::warn!(zone = to_zone, "transfer to an unknown zone ignored");
            return;
        };
        if to == from {
            return;
        }
        let Some(src) = self.instances.get_mut(&from) else {
            return;
        };
        let Some(member) = src.take_member(session) else {
            return;
        };
        let last_input = src.world.last_input(member.entity).unwrap_or(0);
        let Some(state) = src.world.take_player(member.entity) else {
            return;
        };
        self.remove_instance_if_empty(from);
        self.place(member, state, last_input, to);
        // Zone change: checkpoint the new zone and position at once.
        self.checkpoint(&[session]);
    }

    /// Adds a member (with its exported state) to instance `to` and announces the zone.
    pub(super) fn place(
        &mut self,
        mut member: Member,
        state: PlayerState,
        last_input: u32,
        to: u32,
    ) {
        let party = self.party_id_of(member.join.player_id);
        let Some(dst) = self.instances.get_mut(&to) else {
            return;
        };
        let entity = match dst.world.add_player_with_state(state) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "player state refused by the target world; closing the session");
                member
                    .join
                    .conn
                    .close(close_code::INTERNAL, b"transfer failed");
                return;
            }
        };
        dst.world.set_last_input(entity, last_input);
        member.entity = entity;
        member.pending.clear();
        member.requests.clear();
        if party.is_some() {
            dst.world.set_party(member.join.player_id, party);
        }
        let entered = Event::ZoneEntered {
            zone: dst.world.zone().id,
            instance: dst.id,
            entity_id: entity,
        };
        if let Some(f) = frame(&ServerMsg::Event(entered)) {
            send(&member.join, f);
        }
        self.sessions.insert(member.session, to);
        dst.add_member(member);
    }

    pub(super) fn party_id_of(&self, player_id: u64) -> Option<PartyId> {
        let parties = self
            .settings
            .parties
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        parties.party_of(player_id).map(|p| p.id)
    }

    /// The connection of `session` was lost at `now`: keep its player in the world for
    /// the grace period, sending it nothing.
    pub(super) fn detach(&mut self, session: SessionId, now: Instant) {
        if self.cancel_load(session) {
            return;
        }
        let Some(m) = self.member_mut(session) else {
            return;
        };
        if m.detached_at.is_none() {
            m.detached_at = Some(now);
            Stats::gauge_add(&self.stats.sessions_active, -1);
            Stats::gauge_add(&self.stats.sessions_detached, 1);
        }
    }

    /// A resumed connection takes over a detached session.
    pub(super) fn attach(&mut self, join: Box<Join>) {
        let session = join.session;
        let found = self
            .sessions
            .get(&session)
            .and_then(|id| self.instances.get(id))
            .and_then(|inst| {
                let m = inst.members.iter().find(|m| m.session == session)?;
                Some((inst.id, m.entity, m.detached_at.is_some()))
            });
        let Some((instance, entity, true)) = found else {
            let reject = ServerMsg::Reject(Reject {
                code: RejectCode::SessionExpired,
                reason: "the session ended before it was resumed".into(),
            });
            if let Some(frame) = frame(&reject) {
                let msg = Outgoing::CloseAfter {
                    frame,
                    code: close_code::REJECTED,
                    cause: DisconnectCause::Rejected,
                };
                let _ = join.outbox.try_send(msg);
            }
            return;
        };
        let welcomed = match self.instances.get(&instance) {
            Some(inst) => Self::send_welcome(
                &self.settings,
                &join,
                &inst.world,
                instance,
                entity,
                self.ticks as u32,
            ),
            None => false,
        };
        if !welcomed {
            return;
        }
        let player_id = join.player_id;
        if let Some(m) = self.member_mut(session) {
            m.rejoin(*join);
            m.detached_at = None;
            m.pending.clear();
            // The new connection's client has no snapshot yet: full states until it
            // reports one.
            m.reported_tick = 0;
            m.baselines.clear();
            Stats::gauge_add(&self.stats.sessions_active, 1);
            Stats::gauge_add(&self.stats.sessions_detached, -1);
        }
        // Party changes while it was away were not sent to the lost connection.
        if self.tell_directory_arrived(player_id) {
            return;
        }
        if let Some(party) = self.party_id_of(player_id) {
            self.announce_members(party);
        }
    }

    /// Cluster mode: asks the party directory to sync the party of a player that arrived
    /// (login, resume): it is mirrored, told and sent to its leader. False without one.
    pub(super) fn tell_directory_arrived(&self, player: u64) -> bool {
        let Some(d) = &self.directory else {
            return false;
        };
        if d.call(PartyCall::Arrived { player }).is_err() {
            tracing::debug!(player, "party directory queue full: arrival not synced");
        }
        true
    }

    pub(super) fn member(&self, session: SessionId) -> Option<&Member> {
        let inst = self.instances.get(self.sessions.get(&session)?)?;
        inst.members.iter().find(|m| m.session == session)
    }

    pub(super) fn member_mut(&mut self, session: SessionId) -> Option<&mut Member> {
        let inst = self.instances.get_mut(self.sessions.get(&session)?)?;
        inst.members.iter_mut().find(|m| m.session == session)
    }

    pub(super) fn leave(&mut self, session: SessionId) {
        self.leave_inner(session, false);
    }

    /// Ends a session with its final checkpoint. `handoff`: the player moves to another
    /// server (party convergence): it stays in its party and its connection stays open.
    pub(super) fn leave_inner(&mut self, session: SessionId, handoff: bool) {
        self.leave_inner_to(session, handoff, None);
    }

    /// [`Worker::leave_inner`], the final checkpoint saving the player at `dest` (zone,
    /// position) instead of where it stands: the new zone of an instance placed on a peer.
    pub(super) fn leave_inner_to(
        &mut self,
        session: SessionId,
        handoff: bool,
        dest: Option<(u16, (i32, i32))>,
    ) {
        if self.cancel_load(session) {
            return;
        }
        let Some(instance_id) = self.sessions.remove(&session) else {
            return;
        };
        let Some(inst) = self.instances.get_mut(&instance_id) else {
            return;
        };
        let Some(member) = inst.take_member(session) else {
            return;
        };
        let pos_mm = inst.world.player_pos(member.entity).unwrap_or_default();
        let state = inst.world.take_player(member.entity);
        let player = member.join.player_id;
        let mut final_save = None;
        if let (Some(p), Some(state)) = (self.persist.as_mut(), state) {
            // The last checkpoint of a session: on disconnect, expiry and drain (none
            // when the player's lease is lost).
            p.clear_dirty(session);
            let (zone, pos_mm) = dest.unwrap_or((inst.world.zone().id, pos_mm));
            let built = p.settings.fence_for(player, session).map(|fence| {
                persist::record_of(&member.join.player_name, fence, zone, pos_mm, &state)
            });
            match built {
                Some(Ok(r)) => final_save = Some(p.save(vec![r], Vec::new())),
                Some(Err(e)) => {
                    tracing::error!(player_id = state.player_id, error = %e, "final checkpoint not built")
                }
                None => {}
            }
        }
        // The lease is released once the final checkpoint is answered (see `saved`).
        match (final_save, self.persist.as_mut()) {
            (Some(token), Some(p)) => p.mark_final(token, player, session),
            _ => self.end_lease(player, session),
        }
        self.registry.release(player, session);
        self.inbox.players.fetch_sub(1, Ordering::Relaxed);
        if let Some(w) = self.stats.workers.get(self.settings.index) {
            Stats::gauge_add(&w.players, -1);
        }
        if member.detached_at.is_some() {
            Stats::gauge_add(&self.stats.sessions_detached, -1);
        } else {
            Stats::gauge_add(&self.stats.sessions_active, -1);
        }
        self.remove_instance_if_empty(instance_id);
        if self.handoffs.is_some() {
            // Drain by migration: parties stay as they are, so that every worker still
            // sees who is with whom and a party's members go to the same peer.
            return;
        }
        if let Some(d) = &self.directory {
            if !handoff && d.call(PartyCall::Forget { player }).is_err() {
                tracing::warn!(player, "party directory queue full: the player stays in its party until it is cleaned up");
            }
            return;
        }
        let change = {
            let mut parties = self
                .settings
                .parties
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            parties.forget(player)
        };
        if let Some(change) = change {
            self.announce_party(change);
        }
    }

    pub(super) fn drain(&mut self) {
        self.draining = true;
        let goaway = ServerMsg::Goaway(Goaway {
            reason: "server is shutting down".into(),
            reconnect_after_ms: self.settings.reconnect_after_ms,
        });
        let Some(frame) = frame(&goaway) else { return };
        let sessions: Vec<SessionId> = self.sessions.keys().copied().collect();
        for session in sessions {
            self.goaway_and_leave(session, &frame);
        }
        self.drain_loads();
    }

    /// Drain by migration: every session leaves the simulation with a final checkpoint
    /// (as at a disconnect) but keeps its connection; once that checkpoint is answered
    /// (and the lease ended) it is pushed to `handoffs`, whose drain task releases the
    /// lease and sends the `Redirect`. Loads in progress are refused as in [`Worker::drain`].
    pub(super) fn drain_to_peers(&mut self, handoffs: Arc<dyn HandoffSink>) {
        self.draining = true;
        self.handoffs = Some(handoffs.clone());
        let sessions: Vec<SessionId> = self.sessions.keys().copied().collect();
        // Parties are not changed by the leaves of a migration (see `leave`).
        let handoffs_of: Vec<(SessionId, Option<Handoff>)> = sessions
            .iter()
            .map(|&session| {
                let handoff = self.member(session).map(|m| Handoff {
                    player_id: m.join.player_id,
                    player_name: m.join.player_name.clone(),
                    session,
                    conn: m.join.conn.clone(),
                    outbox: m.join.outbox.clone(),
                    shared: m.join.shared.clone(),
                    party: self.party_id_of(m.join.player_id),
                    to: None,
                });
                (session, handoff)
            })
            .collect();
        for (session, handoff) in handoffs_of {
            self.leave_inner(session, true);
            let Some(handoff) = handoff else { continue };
            if self.final_save_pending(session) {
                self.handoffs_waiting.insert(session, handoff);
            } else {
                handoffs.push(handoff);
            }
        }
        self.drain_loads();
    }

    /// Whether the final checkpoint of ended `session` is in flight.
    pub(super) fn final_save_pending(&self, session: SessionId) -> bool {
        self.persist
            .as_ref()
            .is_some_and(|p| p.final_save_pending(session))
    }

    /// Refuses the logins still loading and submits the drain barrier.
    pub(super) fn drain_loads(&mut self) {
        if let Some(p) = self.persist.as_mut() {
            let joins = p.take_loads();
            // Everything submitted so far (the final checkpoints above) is durable when
            // this barrier is answered; the server waits for it before exiting.
            p.submit_barrier();
            for join in joins {
                self.reject_join(
                    &join,
                    RejectCode::Draining,
                    "server is draining",
                    DisconnectCause::Shutdown,
                );
            }
        }
    }

    /// Sends `Goaway` (then close) to `session` and ends it with its final checkpoint.
    pub(super) fn goaway_and_leave(&mut self, session: SessionId, goaway: &Bytes) {
        if let Some(m) = self.member(session) {
            let msg = Outgoing::CloseAfter {
                frame: goaway.clone(),
                code: close_code::SHUTDOWN,
                cause: DisconnectCause::Shutdown,
            };
            if m.join.outbox.try_send(msg).is_err() {
                m.join.shared.set_cause(DisconnectCause::Shutdown);
                m.join.conn.close(close_code::SHUTDOWN, b"shutdown");
            }
        }
        self.leave(session);
    }
}
