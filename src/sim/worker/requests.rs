//! Requests and parties: applying a session's work, game and party requests, party
//! announcements, and snapshots.

use super::*;

impl Worker {
    pub(super) fn apply(&mut self, work: Work) {
        match work {
            Work::Input {
                session,
                count,
                inputs,
                received_at,
                ack_tick,
            } => {
                let Some(instance_id) = self.sessions.get(&session) else {
                    return;
                };
                let Some(inst) = self.instances.get_mut(instance_id) else {
                    return;
                };
                let Some(m) = inst.members.iter_mut().find(|m| m.session == session) else {
                    return;
                };
                // The newest tick the client has completely: the baseline of its next
                // snapshot (taken as reported: a new connection reports 0).
                m.reported_tick = ack_tick;
                let now = Instant::now();
                self.meters
                    .input_age
                    .record(now.saturating_duration_since(received_at).as_secs_f64());
                // The first input reporting a newer snapshot of this worker closes that
                // snapshot's round trip. A tick the worker has not reached is a client's
                // lie or another worker's tick: not measured.
                if ack_tick > m.acked_tick && u64::from(ack_tick) <= self.ticks {
                    m.acked_tick = ack_tick;
                    if let Some(sent) = self.snapshot_times.sent_at(ack_tick) {
                        self.meters
                            .snapshot_round_trip
                            .record(now.saturating_duration_since(sent).as_secs_f64());
                    }
                }
                let mut newest = None;
                for input in &inputs[..usize::from(count)] {
                    if inst.world.queue_input(m.entity, *input) {
                        Stats::inc(&self.stats.inputs_queued);
                        newest = Some(input.seq);
                    }
                }
                if let Some(seq) = newest {
                    let period =
                        snapshot_period(self.settings.ticks_per_snapshot, m.snapshot_divisor);
                    m.arrivals.record(self.ticks, period);
                    if m.pending.len() == PENDING_INPUT_TIMES {
                        m.pending.pop_front();
                    }
                    m.pending.push_back((seq, received_at));
                }
            }
            Work::Request {
                session,
                id,
                body,
                received_at,
            } => self.request(session, id, body, received_at),
        }
    }

    pub(super) fn request(
        &mut self,
        session: SessionId,
        id: u32,
        body: Request,
        received_at: Instant,
    ) {
        let kind = body.kind();
        if let Some(mapped) = wire::game_request(&body) {
            let Some(&instance_id) = self.sessions.get(&session) else {
                return;
            };
            let Some(inst) = self.instances.get_mut(&instance_id) else {
                return;
            };
            let Some(m) = inst.members.iter_mut().find(|m| m.session == session) else {
                return;
            };
            if m.migrating.is_some() {
                // Its new worker applies it, after the handover.
                if m.parked.len() < PARKED_REQUESTS {
                    m.parked.push(Work::Request {
                        session,
                        id,
                        body,
                        received_at,
                    });
                } else {
                    respond(&m.join, id, Err(RequestError::RateLimited));
                }
                return;
            }
            let queued = mapped.and_then(|req| {
                inst.world
                    .queue_request(m.entity, id, req)
                    .map_err(|e| match e {
                        zonehost_game::QueueError::QueueFull => RequestError::RateLimited,
                        zonehost_game::QueueError::UnknownEntity => RequestError::NotAllowed,
                    })
            });
            match queued {
                Ok(()) => {
                    if m.requests.len() == PENDING_REQUESTS {
                        m.requests.pop_front();
                    }
                    m.requests.push_back((id, received_at));
                }
                Err(e) => respond(&m.join, id, Err(e)),
            }
            return;
        }
        let Some(m) = self.member(session) else {
            return;
        };
        let player = m.join.player_id;
        // A granted snapshot rate, set once the member can be borrowed mutably.
        let mut divisor = None;
        let body = match body {
            Request::Ping { client_time_us } => {
                let tick = self.ticks as u32;
                Ok(Response::Pong {
                    client_time_us,
                    server_tick: tick,
                })
            }
            Request::GetInventory => {
                let state = self
                    .sessions
                    .get(&session)
                    .and_then(|i| self.instances.get(i))
                    .and_then(|inst| {
                        let m = inst.members.iter().find(|m| m.session == session)?;
                        inst.world.export_player(m.entity)
                    });
                state
                    .map(|s| Response::Inventory(wire::inventory(&s)))
                    .ok_or(RequestError::Internal)
            }
            Request::GetZone => self
                .sessions
                .get(&session)
                .and_then(|i| self.instances.get(i))
                .map(|inst| Response::Zone(wire::zone(inst.world.template())))
                .ok_or(RequestError::Internal),
            Request::SnapshotRate { hz } => {
                let server_hz = self.settings.snapshot_rate_hz;
                let k = snapshot_divisor(server_hz, hz);
                divisor = Some(k);
                Ok(Response::SnapshotRate { hz: server_hz / k })
            }
            party_request => match &self.directory {
                Some(d) => {
                    // The directory answers once the store has decided.
                    let call = PartyCall::Request {
                        player,
                        id,
                        body: party_request,
                        received_at,
                    };
                    if d.call(call).is_err() {
                        if let Some(m) = self.member(session) {
                            respond(&m.join, id, Err(RequestError::RateLimited));
                        }
                    }
                    return;
                }
                None => self.party_request(player, party_request),
            },
        };
        if let Some(m) = self.member_mut(session) {
            if let Some(k) = divisor {
                m.set_snapshot_divisor(k);
            }
            respond(&m.join, id, body);
        }
        metrics::histogram!("zonehost_request_duration_seconds", "kind" => kind)
            .record(received_at.elapsed().as_secs_f64());
    }

    pub(super) fn party_request(
        &mut self,
        player: u64,
        body: Request,
    ) -> Result<Response, RequestError> {
        let result = {
            let mut parties = self
                .settings
                .parties
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match body {
                Request::PartyInvite { player: name } => {
                    if self.registry.contact(player_id(&name)).is_none() {
                        return Err(RequestError::NoSuchPlayer);
                    }
                    parties.invite(player, player_id(&name))
                }
                Request::PartyAccept => parties.accept(player),
                Request::PartyDecline => parties.decline(player),
                Request::PartyLeave => parties.leave(player),
                Request::PartyKick { player: name } => parties.kick(player, player_id(&name)),
                _ => return Err(RequestError::NotAllowed),
            }
        };
        let change = result.map_err(wire::party_error)?;
        self.announce_party(change);
        Ok(Response::Done)
    }

    /// Tells the players concerned about a party change, mirrors membership into this
    /// worker's worlds and, when someone joins, moves them into the leader's instance if
    /// this worker owns it.
    pub(super) fn announce_party(&mut self, change: PartyChange) {
        let tell = |pid: u64, ev: PartyEvent| {
            // A session not yet welcomed (still loading) must see its Welcome first; it
            // gets its party's membership right after the Welcome (`tell_party_after_welcome`).
            let contact = self
                .registry
                .contact(pid)
                .filter(|c| c.shared.is_welcomed());
            if let (Some(c), Some(f)) = (contact, frame(&ServerMsg::Event(Event::Party(ev)))) {
                if c.outbox.try_send(Outgoing::Frame(f)).is_err() {
                    tracing::debug!(player = pid, "party event dropped: outbox full or closed");
                }
            }
        };
        let name = |pid: u64| {
            self.registry
                .name_of(pid)
                .unwrap_or_else(|| format!("{pid:016x}"))
        };
        match change {
            PartyChange::Invited { inviter, invitee } => {
                tell(invitee, PartyEvent::Invited { by: name(inviter) })
            }
            PartyChange::Declined { inviter, invitee } => {
                tell(inviter, PartyEvent::Declined { by: name(invitee) })
            }
            PartyChange::Joined { party, player, .. } => {
                self.announce_members(party);
                self.join_leader_instance(party, player);
            }
            PartyChange::Left {
                party,
                player,
                kicked,
                disbanded,
                last_member,
                ..
            } => {
                tell(player, PartyEvent::Left { kicked });
                if let Some(last) = last_member {
                    // SPEC §6.4: the member left alone learns that the party is gone.
                    tell(last, PartyEvent::dissolved(party));
                }
                self.set_party_in_worlds(player, None);
                if disbanded {
                    // The one remaining member is party-less now.
                    let left: Vec<u64> = self
                        .instances
                        .values()
                        .flat_map(|i| i.members.iter().map(|m| m.join.player_id))
                        .filter(|p| self.party_id_of(*p).is_none() && *p != player)
                        .collect();
                    for p in left {
                        self.set_party_in_worlds(p, None);
                    }
                }
                self.announce_members(party);
            }
        }
    }

    pub(super) fn announce_members(&mut self, party: PartyId) {
        let members = {
            let parties = self
                .settings
                .parties
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            parties.party(party).map(|p| (p.leader, p.members.clone()))
        };
        let Some((leader, members)) = members else {
            return;
        };
        let name = |pid: u64| {
            self.registry
                .name_of(pid)
                .unwrap_or_else(|| format!("{pid:016x}"))
        };
        let ev = PartyEvent::Members {
            party,
            leader: name(leader),
            members: members.iter().map(|p| name(*p)).collect(),
        };
        let Some(f) = frame(&ServerMsg::Event(Event::Party(ev))) else {
            return;
        };
        for pid in &members {
            // A member still loading must see its Welcome first; it is told its party's
            // membership right after it (see `join`).
            let contact = self
                .registry
                .contact(*pid)
                .filter(|c| c.shared.is_welcomed());
            if let Some(c) = contact {
                let _ = c.outbox.try_send(Outgoing::Frame(f.clone()));
            }
            self.set_party_in_worlds(*pid, Some(party));
        }
    }

    pub(super) fn set_party_in_worlds(&mut self, player: u64, party: Option<PartyId>) {
        for inst in self.instances.values_mut() {
            if inst.world.set_party(player, party) {
                return;
            }
        }
    }

    /// Moves `player` into its party leader's instance: at once when both are on this
    /// worker, else by handing the player over to the leader's worker.
    pub(super) fn join_leader_instance(&mut self, party: PartyId, player: u64) {
        let Some(leader) = self.leader_of(party) else {
            return;
        };
        let find = |pid: u64| {
            self.instances.values().find_map(|i| {
                i.members
                    .iter()
                    .find(|m| m.join.player_id == pid)
                    .map(|m| (i.key.0, m.session))
            })
        };
        let Some((zone, session)) = find(player) else {
            return;
        };
        if find(leader).is_some() {
            if let Some(id) = self.leader_instance(party, leader) {
                if let Some(inst) = self.instances.get(&id) {
                    let zone = inst.key.0;
                    self.transfer(session, zone);
                }
            }
            return;
        }
        if let Some(w) = self.worker_of(leader) {
            self.request_migration(
                session,
                w,
                Goal::Leader {
                    leader,
                    party,
                    zone,
                },
            );
        }
    }

    pub(super) fn leader_of(&self, party: PartyId) -> Option<u64> {
        let parties = self
            .settings
            .parties
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        parties.party(party).map(|p| p.leader)
    }

    /// Moves each instance's snapshot phase onto the tick its attached members' inputs are
    /// applied on (see [`best_phase`]), then ages the arrival counts. Run every
    /// [`PHASE_REVIEW_TICKS`] ticks, before that tick's snapshots.
    pub(super) fn review_snapshot_phases(&mut self) {
        for inst in self.instances.values_mut() {
            let attached = inst.members.iter().filter(|m| m.detached_at.is_none());
            if let Some(p) = best_phase(inst.snapshot_phase, attached.map(|m| &m.arrivals)) {
                inst.snapshot_phase = p;
            }
            for m in &mut inst.members {
                m.arrivals.decay();
            }
        }
    }

    /// Snapshot ticks are the worker's tick count, not the world's, so a player's snapshot
    /// ticks keep increasing across zone changes (clients order snapshots by tick). Each
    /// client gets its own delta against the tick it reported (SPEC.md §4.3); clients
    /// that share a baseline and an interest share the encoded bytes.
    ///
    /// Runs every tick. A client is due every `ticks_per_snapshot × k` ticks, where k is
    /// its divisor (`Request::SnapshotRate`), at its instance's phase
    /// (`phase::snapshot_due`): instances take turns, and once a second each instance's
    /// phase moves onto the tick where its members' inputs arrive
    /// ([`Worker::review_snapshot_phases`]),
    /// so that an input is seen in the snapshot of the tick that applies it. An instance
    /// none of whose clients is due this tick records and encodes nothing.
    pub(super) fn send_snapshots(&mut self) {
        let tick = self.ticks as u32;
        let ticks = self.ticks;
        let per_snapshot = self.settings.ticks_per_snapshot;
        let radius = self.settings.interest_radius_mm;
        let mut sent_any = false;
        for inst in self.instances.values_mut() {
            let phase = inst.snapshot_phase;
            // No client of any divisor is due on a tick that is not a snapshot tick of the
            // instance: most ticks are decided here without touching its members.
            if !snapshot_due(ticks, phase, per_snapshot, 1) {
                continue;
            }
            let zone = inst.world.zone().id;
            // The tick's state is recorded at the first due member (and when): one pass
            // over the members, and an instance none of whose clients is due records
            // nothing.
            let mut recorded: Option<Instant> = None;
            let mut oldest_baseline = u32::MAX;
            for m in &mut inst.members {
                if m.detached_at.is_some() {
                    continue;
                }
                // A client that reported nothing yet (0) gets full states: it keeps no
                // history alive (an idle client that never sends an input never does).
                if m.reported_tick != 0 {
                    oldest_baseline = oldest_baseline.min(m.reported_tick);
                }
                if !snapshot_due(ticks, phase, per_snapshot, m.snapshot_divisor) {
                    continue;
                }
                let recorded_at = *recorded.get_or_insert_with(|| {
                    if !sent_any {
                        sent_any = true;
                        self.snapshot_times.sent(tick, Instant::now());
                    }
                    record_snapshot(&mut inst.snaps, &mut inst.acks, &inst.world, tick);
                    Instant::now()
                });
                let encoded = inst.snaps.for_client(
                    &mut self.snapshot_scratch,
                    &mut m.baselines,
                    m.entity,
                    m.reported_tick,
                    radius,
                    inst.id,
                    zone,
                    &inst.acks,
                );
                let (datagrams, how) = match encoded {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(instance = inst.id, error = %e, "snapshot encoding failed");
                        continue;
                    }
                };
                if how.full {
                    Stats::inc(&self.stats.snapshots_full);
                } else {
                    Stats::inc(&self.stats.snapshots_delta);
                }
                if !how.shared {
                    for d in datagrams {
                        self.meters.snapshot_bytes.record(d.len() as f64);
                    }
                }
                if let Some(received) = m.applied_since_snapshot.take() {
                    self.meters.input_to_snapshot.record(
                        recorded_at
                            .saturating_duration_since(received)
                            .as_secs_f64(),
                    );
                }
                for d in datagrams {
                    if m.join.conn.displaces_on_send(d.len()) {
                        Stats::inc(&self.stats.datagrams_displaced);
                    }
                    match m.join.conn.send_datagram(d.clone()) {
                        Ok(()) => {
                            Stats::inc(&self.stats.datagrams_out);
                            self.stats
                                .datagram_bytes_out
                                .fetch_add(d.len() as u64, Ordering::Relaxed);
                        }
                        Err(_) => Stats::inc(&self.stats.datagram_send_errors),
                    }
                }
            }
            if recorded.is_some() {
                inst.snaps.prune(oldest_baseline);
            }
        }
    }
}

/// Records the instance's state at `tick` for this tick's snapshots: every entity in wire
/// form, and every player's newest applied input.
fn record_snapshot(
    snaps: &mut InstanceSnapshots,
    acks: &mut Vec<PlayerAck>,
    world: &World,
    tick: u32,
) {
    snaps.begin(
        tick,
        world.entities().map(|e| EntityState {
            id: e.id,
            x_mm: e.pos_mm.0,
            y_mm: e.pos_mm.1,
            vx_cms: (e.vel_mms.0 / 10).clamp(i16::MIN.into(), i16::MAX.into()) as i16,
            vy_cms: (e.vel_mms.1 / 10).clamp(i16::MIN.into(), i16::MAX.into()) as i16,
            hp: e.hp,
            max_hp: e.max_hp,
            kind: e.kind.wire_code(),
            flags: e.flags,
        }),
    );
    acks.clear();
    acks.extend(
        world
            .player_acks()
            .map(|(entity, last_input)| PlayerAck { entity, last_input }),
    );
}
