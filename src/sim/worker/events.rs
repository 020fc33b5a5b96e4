//! The tick's event fan-out and what it makes durable: events to their players, request
//! completions as responses (held for the store when durable), item operations and
//! checkpoints, trades, and instance bookkeeping.

use super::*;

impl Worker {
    /// Sends one step's events: private ones to their player, instance-wide ones to every
    /// member, request completions as responses; collects transfers. With a store, item
    /// changes become item operations (pick-up: `Create` for loot, `Transfer` for an item a
    /// player dropped; drop: `Transfer` to the ground; use: `Destroy`), equipment changes
    /// a checkpoint, and the response to such a request is held until the store commits.
    pub(super) fn deliver_events(
        inst: &mut Instance,
        transfers: &mut Vec<Transfer>,
        mut persist: Option<&mut Persist>,
    ) {
        // (player id, token) of the durable command submitted for the latest inventory
        // change of this step; the request that caused it completes right after it.
        let mut last_durable: Option<(u64, u64)> = None;
        // (both sides' player ids, token) of the trade reserved by the latest acceptance:
        // the acceptance's response waits for the store's trade.
        let mut last_trade: Option<([u64; 2], u64)> = None;
        // Without a store a reserved trade completes at once.
        let mut undurable_trades = Vec::new();
        for ev in inst.world.events() {
            if let GameEvent::TradeReady { manifest } = ev {
                match persist.as_deref_mut() {
                    Some(p) => {
                        let record = Self::trade_record(p, manifest);
                        let players = record.players;
                        let token = p.trade(record, inst.id, manifest.trade);
                        last_trade = Some((players, token));
                    }
                    None => undurable_trades.push(manifest.trade),
                }
                continue;
            }
            if let Some(p) = persist.as_deref_mut() {
                match ev {
                    GameEvent::Inventory {
                        entity,
                        player_id,
                        change,
                    } => {
                        let token = Self::persist_change(
                            p,
                            &inst.world,
                            &inst.members,
                            &mut inst.ground_stored,
                            inst.id,
                            *entity,
                            *player_id,
                            change,
                        );
                        if let Some(t) = token {
                            last_durable = Some((*player_id, t));
                        }
                    }
                    GameEvent::ItemExpired { item, .. } if inst.ground_stored.remove(&item.0) => {
                        let op = ItemOp {
                            op_id: p.op_id(),
                            item_id: item.0,
                            kind: ItemOpKind::Destroy {
                                from: Owner::Ground {
                                    instance: p.settings.store_instance(inst.id),
                                },
                            },
                        };
                        p.item_op(op, None, inst.id);
                    }
                    _ => {}
                }
            }
            match ev {
                GameEvent::RequestDone {
                    player_id,
                    request_id,
                    result,
                    kind,
                    ..
                } => {
                    let Some(m) = inst
                        .members
                        .iter_mut()
                        .find(|m| m.join.player_id == *player_id)
                    else {
                        continue;
                    };
                    let received = m
                        .requests
                        .iter()
                        .position(|(id, _)| id == request_id)
                        .and_then(|i| m.requests.remove(i))
                        .map(|(_, at)| at);
                    if let (Ok(()), Some((players, token)), Some(p), RequestKind::TradeAccept) =
                        (result, last_trade, persist.as_deref_mut(), *kind)
                    {
                        if players.contains(player_id) {
                            last_trade = None;
                            let held = HeldResponse {
                                session: m.session,
                                request_id: *request_id,
                                kind: *kind,
                                received: received.unwrap_or_else(Instant::now),
                            };
                            if p.hold(token, held) {
                                continue;
                            }
                        }
                    }
                    if let (Ok(()), Some((pid, token)), Some(p)) =
                        (result, last_durable, persist.as_deref_mut())
                    {
                        if pid == *player_id && waits_for_store(*kind) {
                            let held = HeldResponse {
                                session: m.session,
                                request_id: *request_id,
                                kind: *kind,
                                received: received.unwrap_or_else(Instant::now),
                            };
                            last_durable = None;
                            if p.hold(token, held) {
                                continue;
                            }
                        }
                    }
                    if let Some(at) = received {
                        metrics::histogram!("zonehost_request_duration_seconds", "kind" => kind.as_str())
                            .record(at.elapsed().as_secs_f64());
                    }
                    let body = result.map(|()| Response::Done).map_err(wire::reject);
                    respond(&m.join, *request_id, body);
                }
                GameEvent::Transfer {
                    player_id, to_zone, ..
                } => {
                    if let Some(m) = inst.members.iter().find(|m| m.join.player_id == *player_id) {
                        transfers.push(Transfer {
                            session: m.session,
                            to_zone: *to_zone,
                        });
                    }
                }
                other => {
                    let Some(wire_event) = wire::event(other) else {
                        continue;
                    };
                    let Some(f) = frame(&ServerMsg::Event(wire_event)) else {
                        continue;
                    };
                    match other.player_id() {
                        Some(pid) => {
                            if let Some(m) = inst.members.iter().find(|m| m.join.player_id == pid) {
                                if m.detached_at.is_none() {
                                    send(&m.join, f);
                                }
                            }
                        }
                        None => {
                            for m in inst.members.iter().filter(|m| m.detached_at.is_none()) {
                                send(&m.join, f.clone());
                            }
                        }
                    }
                }
            }
        }
        for t in undurable_trades {
            inst.world.complete_trade(t, true);
        }
    }

    /// The store's manifest of a trade the world reserved: every item with its giver and
    /// recipient, the gold each side gives, a fresh trade id.
    pub(super) fn trade_record(p: &mut Persist, m: &zonehost_game::TradeManifest) -> TradeRecord {
        let players = [m.sides[0].player_id, m.sides[1].player_id];
        let legs = m
            .sides
            .iter()
            .enumerate()
            .flat_map(|(i, side)| {
                side.items.iter().map(move |item| TradeLeg {
                    item_id: item.id.0,
                    from: players[i],
                    to: players[1 - i],
                })
            })
            .collect();
        TradeRecord {
            trade_id: p.trade_id(),
            players,
            legs,
            gold: [m.sides[0].gold, m.sides[1].gold],
            state: TradeState::Open,
            settled: false,
            opened_at_ms: persist::unix_millis(),
        }
    }

    /// Phase three of a trade: the store decided; the world hands every reserved offer to
    /// where the decision sends it, both players are checkpointed in one batch (their gold
    /// changes land together), and the acceptance is answered.
    pub(super) fn trade_committed(&mut self, token: u64, result: Result<TradeOutcome, StoreError>) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let Some(pending) = p.take_trade(token) else {
            return;
        };
        let trade_id = pending.manifest.trade_id;
        let committed = match result {
            Ok(TradeOutcome::Committed) => Some(true),
            Ok(TradeOutcome::Aborted { refused }) => {
                tracing::warn!(
                    trade = trade_id,
                    ?refused,
                    "the store aborted a trade: an offered item had changed owner"
                );
                Some(false)
            }
            Err(e) if pending.attempts < persist::ITEM_OP_ATTEMPTS => {
                tracing::warn!(trade = trade_id, attempt = pending.attempts, error = %e, "trade failed; resubmitting it unchanged");
                p.retry_trade(token, pending);
                return;
            }
            Err(e) => {
                // The store's row decides what happened; recovery at the next start
                // resolves it, and logins reconcile inventories with the item table.
                tracing::error!(trade = trade_id, error = %e, "trade failed for good; offers given back in the world");
                p.settings.item_failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        let outcome = match committed {
            Some(true) => "committed",
            Some(false) => "aborted",
            None => "failed",
        };
        metrics::counter!("zonehost_trades_total", "outcome" => outcome).increment(1);
        let mut sessions = Vec::new();
        if let Some(inst) = self.instances.get_mut(&pending.instance) {
            match inst
                .world
                .complete_trade(pending.world_trade, committed == Some(true))
            {
                Some(u) if u.items.is_empty() && !u.gold_kept => {}
                Some(u) => tracing::info!(
                    trade = trade_id,
                    undelivered_items = u.items.len(),
                    gold_kept = u.gold_kept,
                    "a side left during the trade: its items come with its next login"
                ),
                None => tracing::error!(
                    trade = trade_id,
                    "no reserved trade in the world to complete"
                ),
            }
            sessions.extend(
                inst.members
                    .iter()
                    .filter(|m| pending.manifest.players.contains(&m.join.player_id))
                    .map(|m| m.session),
            );
        }
        self.checkpoint(&sessions);
        let body = match committed {
            Some(true) => Ok(Response::Done),
            _ => Err(RequestError::Internal),
        };
        self.answer(pending.held, body);
    }

    /// Submits what makes one inventory change durable; returns the command's token.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn persist_change(
        p: &mut Persist,
        world: &World,
        members: &[Member],
        ground_stored: &mut HashSet<u128>,
        instance: u32,
        entity: u32,
        player_id: u64,
        change: &InventoryChange,
    ) -> Option<u64> {
        let member = members.iter().find(|m| m.join.player_id == player_id)?;
        let me = Owner::Player(player_id);
        let ground = Owner::Ground {
            instance: p.settings.store_instance(instance),
        };
        let kind = match change {
            InventoryChange::PickedUp { item, .. } => {
                if ground_stored.remove(&item.id.0) {
                    ItemOpKind::Transfer {
                        from: ground,
                        to: me,
                    }
                } else {
                    match persist::encode_item(item) {
                        Ok(data) => ItemOpKind::Create { owner: me, data },
                        Err(e) => {
                            tracing::error!(player_id, error = %e, "item not persisted");
                            return None;
                        }
                    }
                }
            }
            InventoryChange::Dropped { item, .. } => {
                ground_stored.insert(item.0);
                ItemOpKind::Transfer {
                    from: me,
                    to: ground,
                }
            }
            InventoryChange::Consumed { .. } => ItemOpKind::Destroy { from: me },
            InventoryChange::Equipped { .. } | InventoryChange::Unequipped { .. } => {
                let state = world.export_player(entity)?;
                let pos = world.player_pos(entity).unwrap_or_default();
                // No fence: the player's lease is lost, nothing more is written.
                let fence = p.settings.fence_for(player_id, member.session)?;
                let record = match persist::record_of(
                    &member.join.player_name,
                    fence,
                    world.zone().id,
                    pos,
                    &state,
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(player_id, error = %e, "checkpoint not built");
                        return None;
                    }
                };
                return Some(p.save(vec![record], vec![member.session]));
            }
            // The starter kit is created by the login itself; a returned drop never left
            // the player in the store; a trade was made durable by the store's trade.
            InventoryChange::Granted { .. }
            | InventoryChange::Returned { .. }
            | InventoryChange::Traded { .. } => return None,
        };
        let item_id = match change {
            InventoryChange::PickedUp { item, .. } => item.id.0,
            InventoryChange::Dropped { item, .. } | InventoryChange::Consumed { item, .. } => {
                item.0
            }
            _ => return None,
        };
        let op = ItemOp {
            op_id: p.op_id(),
            item_id,
            kind,
        };
        Some(p.item_op(op, Some(member.session), instance))
    }

    /// Marks dirty the members whose durable state or position changed this step.
    pub(super) fn mark_dirty(inst: &mut Instance, p: &mut Persist, now: Instant) {
        let mut changed = Vec::new();
        inst.world.take_dirty(&mut changed);
        for m in &inst.members {
            let moved = inst
                .world
                .player_pos(m.entity)
                .is_some_and(|pos| pos != m.saved_pos);
            if moved || changed.contains(&m.join.player_id) {
                p.mark_dirty(m.session, now);
            }
        }
    }

    pub(super) fn owner_of(&self, player_id: u64) -> InstanceOwner {
        let parties = self
            .settings
            .parties
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match parties.party_of(player_id) {
            Some(p) => InstanceOwner::Party(p.id),
            None => InstanceOwner::Player(player_id),
        }
    }

    /// The instance of `zone` for `owner`, created if needed.
    pub(super) fn instance_for(&mut self, zone: u16, owner: InstanceOwner) -> Option<u32> {
        if let Some(id) = self.by_key.get(&(zone, owner)) {
            return Some(*id);
        }
        let template = self.settings.content.zone(zone)?;
        let id = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        let seed = self.settings.seed_salt ^ (u64::from(id) << 20) ^ u64::from(zone);
        let world = World::from_template(template, seed);
        self.instances.insert(
            id,
            Box::new(Instance {
                id,
                key: (zone, owner),
                world,
                members: Vec::new(),
                snaps: InstanceSnapshots::default(),
                snapshot_phase: id,
                acks: Vec::new(),
                ground_stored: HashSet::new(),
            }),
        );
        self.by_key.insert((zone, owner), id);
        Stats::gauge_add(&self.stats.instances_live, 1);
        Some(id)
    }

    pub(super) fn remove_instance_if_empty(&mut self, id: u32) {
        if self
            .instances
            .get(&id)
            .is_some_and(|i| i.members.is_empty())
        {
            if let Some(inst) = self.instances.remove(&id) {
                if self.by_key.get(&inst.key) == Some(&id) {
                    self.by_key.remove(&inst.key);
                }
                Stats::gauge_add(&self.stats.instances_live, -1);
                // Sweep: items players dropped here go with the instance.
                if let Some(p) = self.persist.as_mut() {
                    let from = Owner::Ground {
                        instance: p.settings.store_instance(id),
                    };
                    for item_id in inst.ground_stored {
                        let op = ItemOp {
                            op_id: p.op_id(),
                            item_id,
                            kind: ItemOpKind::Destroy { from },
                        };
                        p.item_op(op, None, id);
                    }
                }
            }
        }
    }
}
