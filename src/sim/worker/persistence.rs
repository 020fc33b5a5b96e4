//! Persistence glue: checkpoints and the store's replies (item operations committed or
//! undone, saves, held answers).

use super::*;

impl Worker {
    /// Checkpoints `sessions` now, in one command; returns its token.
    pub(super) fn checkpoint(&mut self, sessions: &[SessionId]) -> Option<u64> {
        let p = self.persist.as_mut()?;
        let mut records = Vec::with_capacity(sessions.len());
        let mut saved = Vec::with_capacity(sessions.len());
        for &s in sessions {
            p.clear_dirty(s);
            let Some(inst) = self
                .sessions
                .get(&s)
                .and_then(|i| self.instances.get_mut(i))
            else {
                continue;
            };
            let zone = inst.world.zone().id;
            let Some(m) = inst.members.iter_mut().find(|m| m.session == s) else {
                continue;
            };
            let Some(state) = inst.world.export_player(m.entity) else {
                continue;
            };
            let pos = inst.world.player_pos(m.entity).unwrap_or_default();
            let Some(fence) = p.settings.fence_for(m.join.player_id, s) else {
                // The player's lease is lost: nothing more is written.
                continue;
            };
            match persist::record_of(&m.join.player_name, fence, zone, pos, &state) {
                Ok(r) => {
                    m.saved_pos = pos;
                    records.push(r);
                    saved.push(s);
                }
                Err(e) => {
                    tracing::error!(player_id = state.player_id, error = %e, "checkpoint not built")
                }
            }
        }
        if records.is_empty() {
            return None;
        }
        Some(p.save(records, saved))
    }

    /// Checkpoints the players dirty for at least the checkpoint interval.
    pub(super) fn checkpoint_due(&mut self, now: Instant) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let mut due = Vec::new();
        p.take_due(now, &mut due);
        if !due.is_empty() {
            self.checkpoint(&due);
        }
    }

    /// Drains the store's replies (never blocks) and acts on them.
    pub(super) fn poll_store(&mut self) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        p.flush_backlog();
        let mut replies = p.take_replies();
        for reply in replies.drain(..) {
            self.on_store_reply(reply);
        }
        if let Some(p) = self.persist.as_mut() {
            p.reuse_replies(replies);
            p.update_flushed();
        }
    }

    pub(super) fn on_store_reply(&mut self, reply: StoreReply) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        match reply {
            StoreReply::Loaded { token, result, .. } => {
                p.loaded_record(token, result);
                self.finish_load(token);
            }
            StoreReply::Items { token, result, .. } => {
                p.loaded_items(token, result);
                self.finish_load(token);
            }
            StoreReply::Item { token, result, .. } => self.item_committed(token, result),
            StoreReply::Saved { token, result } => self.saved(token, result),
            StoreReply::Trade { token, result, .. } => self.trade_committed(token, result),
            StoreReply::Barrier { token } => p.barrier_answered(token),
        }
    }

    /// Phase three of an item operation: answer the held request (or undo it in the world
    /// when the store refused it).
    pub(super) fn item_committed(&mut self, token: u64, result: Result<ItemOutcome, StoreError>) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let Some(pending) = p.take_item(token) else {
            return;
        };
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                if pending.attempts < persist::ITEM_OP_ATTEMPTS {
                    tracing::warn!(
                        item = format_args!("{:032x}", pending.op.item_id),
                        attempt = pending.attempts,
                        error = %e,
                        "item operation failed; resubmitting it with the same op id"
                    );
                    p.retry_item(token, pending);
                    return;
                }
                tracing::error!(
                    item = format_args!("{:032x}", pending.op.item_id),
                    error = %e,
                    "item operation failed for good; answered Internal"
                );
                p.settings.item_failures.fetch_add(1, Ordering::Relaxed);
                // A drop that definitely did not apply leaves the item the player's in
                // the store: it goes back to the bag (an unknown outcome stays where the
                // world put it; the next login reconciles with the store).
                if let ItemOpKind::Transfer {
                    from: from @ Owner::Player(_),
                    to: Owner::Ground { .. },
                } = pending.op.kind
                {
                    if !matches!(e, StoreError::UnknownOutcome { .. }) {
                        self.undo_item_op(
                            &pending.op,
                            pending.session,
                            pending.instance,
                            Some(from),
                        );
                    }
                }
                self.answer(pending.held, Err(RequestError::Internal));
                return;
            }
        };
        if outcome.applied() {
            self.answer(pending.held, Ok(Response::Done));
            return;
        }
        tracing::warn!(
            item = format_args!("{:032x}", pending.op.item_id),
            outcome = ?outcome,
            "the store refused an item operation; undone in the world"
        );
        p.settings.item_failures.fetch_add(1, Ordering::Relaxed);
        let actual = match outcome {
            ItemOutcome::OwnerMismatch { actual, .. } => actual,
            _ => None,
        };
        self.undo_item_op(&pending.op, pending.session, pending.instance, actual);
        self.answer(pending.held, Err(RequestError::Internal));
    }

    /// Takes back from the world what a refused item operation gave. A refused drop of an
    /// item the store still gives to the player (`actual`) goes back to the bag.
    pub(super) fn undo_item_op(
        &mut self,
        op: &ItemOp,
        session: Option<SessionId>,
        instance: u32,
        actual: Option<Owner>,
    ) {
        let item = ItemId(op.item_id);
        match &op.kind {
            ItemOpKind::Create {
                owner: Owner::Player(_),
                ..
            }
            | ItemOpKind::Transfer {
                to: Owner::Player(_),
                ..
            } => {
                let Some(session) = session else { return };
                let Some(inst) = self
                    .sessions
                    .get(&session)
                    .and_then(|i| self.instances.get_mut(i))
                else {
                    return;
                };
                if let Some(m) = inst.members.iter().find(|m| m.session == session) {
                    inst.world.remove_item(m.entity, item);
                }
            }
            ItemOpKind::Transfer {
                from,
                to: Owner::Ground { .. },
            } => {
                if let Some(inst) = self.instances.get_mut(&instance) {
                    inst.ground_stored.remove(&op.item_id);
                    let entity = session
                        .and_then(|s| inst.members.iter().find(|m| m.session == s))
                        .map(|m| m.entity);
                    let returned = match entity {
                        Some(e) if actual == Some(*from) => inst.world.return_to_bag(e, item),
                        _ => Err(zonehost_game::Reject::NoSuchTarget),
                    };
                    if let Err(why) = returned {
                        // Not the player's any more, the player is gone, or the bag filled
                        // up: the ground copy is not durable, remove it (a player-owned
                        // item comes back with the next login's reconciliation).
                        tracing::debug!(item = format_args!("{:032x}", op.item_id), %why, "refused drop not returned to the bag");
                        inst.world.remove_ground_item(item);
                    }
                }
            }
            _ => {}
        }
    }

    /// A checkpoint's outcome: stale ones are reported, failed ones retried later.
    pub(super) fn saved(&mut self, token: u64, result: Result<Vec<SaveOutcome>, StoreError>) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let Some(mut pending) = p.take_save(token) else {
            return;
        };
        let ok = match result {
            Ok(outcomes) => {
                let mut ok = true;
                for (o, r) in outcomes.iter().zip(&pending.records) {
                    match *o {
                        // A resubmitted copy of a save that had landed.
                        SaveOutcome::Stale { stored, .. } if stored == r.fence() => {}
                        SaveOutcome::Stale { player_id, stored } => {
                            ok = false;
                            tracing::warn!(
                                player_id,
                                stored = %stored,
                                epoch = p.settings.epoch,
                                "checkpoint refused as stale: a newer one is stored (another server?)"
                            );
                        }
                        SaveOutcome::Saved { .. } => {}
                    }
                }
                ok
            }
            Err(e) => {
                let (attempt, players) = (pending.attempts, pending.players.len());
                match p.resave(token, pending) {
                    Ok(()) => {
                        tracing::warn!(error = %e, attempt, players, "checkpoint failed; resubmitted unchanged");
                        return;
                    }
                    Err(given_up) => pending = given_up,
                }
                // Live sessions get a new checkpoint at the next interval; a session that
                // has ended has none: its progress since the last checkpoint is lost.
                tracing::error!(
                    error = %e,
                    players = ?pending.players,
                    live_sessions = pending.sessions.len(),
                    "checkpoint failed after {} attempts",
                    persist::SAVE_ATTEMPTS
                );
                let now = self.now;
                for s in &pending.sessions {
                    p.mark_dirty(*s, now);
                }
                false
            }
        };
        if let Some(ended) = pending.ended.take() {
            let (player, session) = *ended;
            p.settings.session_done(player, session);
            if let Some(h) = self.handoffs_waiting.remove(&session) {
                // A placed instance's player goes to the placer's relay, a drained one to
                // the drain task.
                let queue = match (&h.to, &self.placer) {
                    (Some(_), Some(placer)) => Some(placer.relay()),
                    _ => self.handoffs.as_deref(),
                };
                if let Some(q) = queue {
                    q.push(h);
                }
            }
        }
        for h in pending.held {
            let body = if ok {
                Ok(Response::Done)
            } else {
                Err(RequestError::Internal)
            };
            self.answer(Some(h), body);
        }
    }

    /// Sends a held response.
    pub(super) fn answer(&self, held: Option<HeldResponse>, body: Result<Response, RequestError>) {
        let Some(h) = held else { return };
        metrics::histogram!("zonehost_request_duration_seconds", "kind" => h.kind.as_str())
            .record(h.received.elapsed().as_secs_f64());
        if let Some(m) = self.member(h.session) {
            respond(&m.join, h.request_id, body);
        }
    }

    /// Sends `Welcome` (with a fresh resume token) to a joining or resuming session;
    /// false if the session could not take it (and its connection was closed).
    pub(super) fn send_welcome(
        settings: &WorkerSettings,
        join: &Join,
        world: &World,
        instance: u32,
        entity: u32,
        tick: u32,
    ) -> bool {
        let last_input = world.last_input(entity).unwrap_or(0);
        let welcome = ServerMsg::Welcome(Welcome {
            player_id: join.player_id,
            entity_id: entity,
            zone: world.zone().id,
            instance,
            tick_rate_hz: settings.tick_rate_hz,
            snapshot_rate_hz: settings.snapshot_rate_hz,
            server_tick: tick,
            server_time_us: unix_micros(),
            max_speed_mms: MAX_SPEED_MMS,
            last_input,
            resume_token: settings
                .resume
                .mint(&join.player_name, unix_micros() / 1_000_000),
        });
        let Some(welcome) = frame(&welcome) else {
            join.conn.close(close_code::INTERNAL, b"internal");
            return false;
        };
        if join.outbox.try_send(Outgoing::Frame(welcome)).is_err() {
            join.shared.set_cause(DisconnectCause::SlowReader);
            join.conn.close(close_code::SLOW_READER, b"slow reader");
            return false;
        }
        join.shared.mark_welcomed();
        true
    }
}
