//! Parties across servers (cluster mode): the party directory.
//!
//! With `[cluster] enabled = true` a party's members may play on different servers, so
//! party state lives in the [`Store`] ([`PartyRecord`], written only by compare-and-set on
//! its version), not in one server's memory. Each server runs one directory thread:
//!
//! - its sim workers hand it their players' party requests and session ends
//!   ([`PartyCall`], a bounded queue: the tick never waits) and it answers them on the
//!   player's outbox once the store has decided;
//! - it tells players about changes: local players directly, players another server holds
//!   (the player lease names it, [`Store::lease_of`](crate::store::LeaseStore::lease_of)) through that server's mailbox in the
//!   store ([`Store::post_mail`](crate::store::MailStore::post_mail)), which every directory polls a few times a second (one
//!   read per server, not per player);
//! - it mirrors the parties of its players into the sim's party registry (the workers
//!   read it for shared instances and XP sharing) and moves members into their leader's
//!   instance;
//! - members converge on the leader's server: a member whose leader plays on another
//!   server is saved, its lease released, and it is sent `Redirect{address, ticket}` to the
//!   leader's server (SPEC §2.2), where it enters the leader's instance;
//! - invitations are durable: written with the party into the store's invitation index
//!   ([`Store::write_party_invite`](crate::store::PartyStore::write_party_invite), expiring after `[cluster] party_invite_ttl_secs`), so
//!   an invitee answers on whichever server it plays now, and is told of a pending
//!   invitation again when it logs in or resumes ([`Store::invitation_of`](crate::store::PartyStore::invitation_of));
//! - members no server holds are pruned: every party with a local member is watched
//!   (`Absences`); a member of it without a live player lease for the absence grace (the
//!   session resume grace plus the lease TTL: a crashed server's player that did not come
//!   back) leaves it by the normal path (leader succession, disband below two).
//!
//! Party ids are random 64-bit ids in the store; the wire and the sim use their low 32 bits.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zonehost_game::party::MAX_PARTY_SIZE;
use zonehost_game::{Parties, PartyId};
use zonehost_protocol::frame::encode_frame;
use zonehost_protocol::message::{
    close_code, Event, PartyEvent, Request, RequestError, Response, ServerMsg,
};
use zonehost_protocol::token::player_id;

use crate::clock::unix_millis;
use crate::cluster::{player_resource, PlayerLeases, Tickets};
use crate::session::{unix_secs, Registry};
pub use crate::sim::ports::{PartyCall, PartyHandle};
use crate::sim::{Control, Outgoing, SessionId};
use crate::store::{Invitation, PartyRecord, Store, StoreError};
use crate::telemetry::{DisconnectCause, Stats};

/// How often a directory reads its mailbox.
pub const MAIL_POLL: Duration = Duration::from_millis(200);
/// Mails read per poll.
const MAIL_BATCH: usize = 64;
/// Compare-and-set rounds before a contended party write gives up (`Internal`).
const CAS_ROUNDS: usize = 8;
/// How long a handoff waits for the member's final checkpoint and lease release.
const HANDOFF_WAIT: Duration = Duration::from_secs(5);
/// Bounds of how often absent members are looked for (a quarter of the absence grace).
const PRUNE_EVERY_MIN: Duration = Duration::from_millis(250);
const PRUNE_EVERY_MAX: Duration = Duration::from_secs(15);

/// A message between directories, in the store's mailbox of the receiving server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum PartyMail {
    /// Tell `player` (held by the receiving server) `event`; `invited_to` is the party of
    /// an invitation (servers before durable invitations remembered it for the answer;
    /// the store's invitation index is the truth now, so it is only kept for them).
    Tell {
        player: u64,
        event: PartyEvent,
        invited_to: Option<u64>,
    },
    /// Party `party_id` changed: reload it, mirror it, tell and move local members.
    Sync { party_id: u64 },
}

/// What a directory needs.
#[derive(Debug)]
pub struct DirectorySettings {
    /// The shared store.
    pub store: Arc<dyn Store>,
    /// This server's id (lease holder name, mailbox name).
    pub server_id: String,
    /// Live sessions of this server.
    pub registry: Arc<Registry>,
    /// The sim's party registry (mirrored from the store).
    pub mirror: Arc<Mutex<Parties>>,
    /// Player leases of this server.
    pub leases: Arc<PlayerLeases>,
    /// Signs redirect tickets.
    pub tickets: Arc<Tickets>,
    /// The cluster's load view: the client-facing addresses of the other servers
    /// (configured or published with their loads, [`crate::placement::Placement::peer_address`]).
    pub placement: Arc<crate::placement::Placement>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Lifetime of an invitation (`[cluster] party_invite_ttl_secs`).
    pub invite_ttl: Duration,
    /// How long a member may be held by no server before it is removed from its party:
    /// the session resume grace plus the player lease TTL.
    pub absence_grace: Duration,
}

/// A running directory thread.
#[derive(Debug)]
pub struct Directory {
    handle: PartyHandle,
    stop: Arc<AtomicBool>,
    crashed: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Directory {
    /// Starts the directory thread with a call queue of `capacity`.
    pub fn spawn(settings: DirectorySettings, capacity: usize) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let crashed = Arc::new(AtomicBool::new(false));
        let state = DirectoryState {
            s: settings,
            names: HashMap::new(),
            changes: Vec::new(),
            served: BTreeMap::new(),
            absent: Absences::default(),
        };
        let (stop2, crashed2) = (stop.clone(), crashed.clone());
        let thread = std::thread::Builder::new()
            .name("zh-parties".into())
            .spawn(move || state.run(rx, stop2, crashed2))?;
        Ok(Self {
            handle: PartyHandle::new(tx),
            stop,
            crashed,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The sim's handle.
    pub fn handle(&self) -> PartyHandle {
        self.handle.clone()
    }

    /// A simulated crash (`Server::crash`, for tests of what survives one): from now on
    /// nothing reaches the store (calls are taken and dropped, no mail is read, nobody is
    /// pruned), as if the process had died; the sessions its workers end while stopping
    /// stay in their parties. [`Directory::stop`] still ends the thread.
    pub fn crash(&self) {
        self.crashed.store(true, Ordering::Release);
    }

    /// Stops the thread and waits for it (blocking).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let t = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = t {
            if t.join().is_err() {
                tracing::error!("the party directory thread panicked");
            }
        }
    }
}

/// Why a party operation failed.
#[derive(Debug, thiserror::Error)]
enum PartyFailure {
    /// Refused by the rules (sent to the client).
    #[error("{0}")]
    Refused(RequestError),
    /// The store failed or stayed contended.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Too many concurrent writers.
    #[error("party write contended")]
    Contended,
}

impl From<RequestError> for PartyFailure {
    fn from(e: RequestError) -> Self {
        PartyFailure::Refused(e)
    }
}

/// What the directory thread owns, and its loop ([`DirectoryState::run`]).
struct DirectoryState {
    s: DirectorySettings,
    /// Parties with a local member at their last sync: their members then.
    served: BTreeMap<u64, Vec<u64>>,
    /// Members of served parties seen without a live lease.
    absent: Absences,
    /// Names of players (not necessarily local), learned once.
    names: HashMap<u64, String>,
    /// Membership changes to propagate once the request is answered: `(before, after)`.
    changes: Vec<(Option<PartyRecord>, PartyRecord)>,
}

/// Members held by no server, since when (first seen so). Time is an argument.
#[derive(Debug, Default)]
struct Absences {
    since: HashMap<u64, Instant>,
}

impl Absences {
    /// Records whether `player` is held by a server (`live`) at `now`; true when it has
    /// been seen held by none for at least `grace`, never held in between.
    fn observe(&mut self, player: u64, live: bool, now: Instant, grace: Duration) -> bool {
        if live {
            self.since.remove(&player);
            return false;
        }
        let since = *self.since.entry(player).or_insert(now);
        now.saturating_duration_since(since) >= grace
    }

    /// Forgets everyone not in `watched` (no longer a member of a served party).
    fn retain(&mut self, watched: &HashSet<u64>) {
        self.since.retain(|p, _| watched.contains(p));
    }

    fn forget(&mut self, player: u64) {
        self.since.remove(&player);
    }
}

/// How often absent members are looked for, given the absence grace.
fn prune_every(grace: Duration) -> Duration {
    (grace / 4).clamp(PRUNE_EVERY_MIN, PRUNE_EVERY_MAX)
}

/// Most invitations a party may have pending at once: a leader cannot fill the party's
/// store row (and every invite's staleness check, one read per listed invitee) without
/// bound.
pub const MAX_PENDING_INVITES: usize = 2 * MAX_PARTY_SIZE;

/// Lists `invitee` among `party`'s pending invitations (once), refusing with `PartyFull`
/// when [`MAX_PENDING_INVITES`] are already pending.
fn add_invite(party: &mut PartyRecord, invitee: u64) -> Result<(), RequestError> {
    if party.invites.contains(&invitee) {
        return Ok(());
    }
    if party.invites.len() >= MAX_PENDING_INVITES {
        return Err(RequestError::PartyFull);
    }
    party.invites.push(invitee);
    Ok(())
}

fn random_party_id() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b) | 1,
        Err(_) => unix_millis().rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15,
    }
}

/// The sim's id of a store party.
pub fn wire_party(party_id: u64) -> PartyId {
    party_id as PartyId
}

impl DirectoryState {
    fn run(mut self, rx: Receiver<PartyCall>, stop: Arc<AtomicBool>, crashed: Arc<AtomicBool>) {
        let mut last_poll = Instant::now();
        let mut last_prune = Instant::now();
        let prune_period = prune_every(self.s.absence_grace);
        while !stop.load(Ordering::Acquire) {
            let call = rx.recv_timeout(MAIL_POLL);
            if crashed.load(Ordering::Acquire) {
                if let Err(RecvTimeoutError::Disconnected) = call {
                    break;
                }
                continue;
            }
            match call {
                Ok(call) => self.on_call(call),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_poll.elapsed() >= MAIL_POLL {
                last_poll = Instant::now();
                self.poll_mail();
            }
            if last_prune.elapsed() >= prune_period {
                last_prune = Instant::now();
                self.prune_absent(last_prune);
                self.propagate();
            }
        }
        // The sim stopped first: the session ends it queued last (a drain) still leave
        // their parties in the store.
        if crashed.load(Ordering::Acquire) {
            return;
        }
        while let Ok(call) = rx.try_recv() {
            self.on_call(call);
        }
    }

    fn on_call(&mut self, call: PartyCall) {
        self.handle_call(call);
        // The requester has its answer before it is told of (or moved by) the change.
        self.propagate();
    }

    /// Tells the servers of the members of every party changed since the last call.
    fn propagate(&mut self) {
        for (before, after) in std::mem::take(&mut self.changes) {
            self.changed(before.as_ref(), &after);
        }
    }

    /// Removes from the served parties the members no server has held for the absence
    /// grace (by the normal leave path). Local members are live; the others are live while
    /// a server holds their lease (attached, detached awaiting a resume, or crashed but
    /// not yet expired). Costs one lease read per remote member of a served party per
    /// round; parties whose members all play here cost nothing.
    fn prune_absent(&mut self, now: Instant) {
        let now_ms = unix_millis();
        let grace = self.s.absence_grace;
        let mut watched = HashSet::new();
        let mut due = Vec::new();
        let mut unserved = Vec::new();
        for (&party_id, members) in &self.served {
            if !members.iter().any(|m| self.s.registry.route(*m).is_some()) {
                // Its last local member left or was handed off: another server watches it.
                unserved.push(party_id);
                continue;
            }
            for &m in members {
                if self.s.registry.route(m).is_some() {
                    continue;
                }
                watched.insert(m);
                let live = match self.s.store.lease_of(&player_resource(m), now_ms) {
                    Ok(lease) => lease.is_some(),
                    Err(e) => {
                        tracing::warn!(player = m, error = %e, "party pruning: lease read failed");
                        continue;
                    }
                };
                if self.absent.observe(m, live, now, grace) {
                    due.push((party_id, m));
                }
            }
        }
        for party_id in unserved {
            self.served.remove(&party_id);
        }
        self.absent.retain(&watched);
        for (party_id, player) in due {
            self.absent.forget(player);
            // The reads above may be a whole round old: a member that came back on another
            // server since then holds its lease again and stays.
            match self
                .s
                .store
                .lease_of(&player_resource(player), unix_millis())
            {
                Ok(None) => {}
                Ok(Some(_)) => continue,
                Err(e) => {
                    tracing::warn!(player, error = %e, "party pruning: lease read failed");
                    continue;
                }
            }
            match self.remove_member(party_id, player, false) {
                Ok(()) => {
                    Stats::inc(&self.s.stats.party_members_pruned);
                    tracing::info!(
                        party = party_id,
                        player,
                        grace_ms = grace.as_millis() as u64,
                        "party member held by no server past the grace: removed"
                    );
                }
                // Left, or removed by another server's directory, meanwhile.
                Err(PartyFailure::Refused(_)) => {}
                Err(e) => {
                    tracing::warn!(party = party_id, player, error = %e, "party pruning failed")
                }
            }
        }
    }

    fn handle_call(&mut self, call: PartyCall) {
        match call {
            PartyCall::Request {
                player,
                id,
                body,
                received_at,
            } => {
                let kind = body.kind();
                let result = match self.request(player, body) {
                    Ok(()) => Ok(Response::Done),
                    Err(PartyFailure::Refused(e)) => Err(e),
                    Err(e) => {
                        tracing::warn!(player, error = %e, "party request failed");
                        Err(RequestError::Internal)
                    }
                };
                if let Some(c) = self.s.registry.contact(player) {
                    if let Ok(f) = encode_frame(&ServerMsg::Response { id, body: result }) {
                        let _ = c.outbox.try_send(Outgoing::Frame(f));
                    }
                }
                metrics::histogram!("zonehost_request_duration_seconds", "kind" => kind)
                    .record(received_at.elapsed().as_secs_f64());
            }
            PartyCall::Arrived { player } => {
                match self.s.store.party_of(player) {
                    Ok(Some(party)) => {
                        self.sync(party);
                        self.leader_arrived(party, player);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(player, error = %e, "party lookup failed"),
                }
                self.announce_invitation(player);
            }
            // A pending invitation outlives the session: it expires by itself.
            PartyCall::Forget { player } => match self.s.store.party_of(player) {
                Ok(Some(party)) => {
                    if let Err(e) = self.remove_member(party, player, false) {
                        tracing::warn!(player, error = %e, "leaving the party at session end failed");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(player, error = %e, "party lookup failed"),
            },
        }
    }

    fn request(&mut self, player: u64, body: Request) -> Result<(), PartyFailure> {
        match body {
            Request::PartyInvite { player: name } => self.invite(player, &name),
            Request::PartyAccept => self.accept(player),
            Request::PartyDecline => self.decline(player),
            Request::PartyLeave => {
                let party = self.real_party_of(player)?;
                self.remove_member(party, player, false)
            }
            Request::PartyKick { player: name } => {
                let target = player_id(&name);
                let party = self.real_party_of(player)?;
                let record = self
                    .s
                    .store
                    .load_party(party)?
                    .ok_or(RequestError::NotInParty)?;
                if record.leader != player {
                    return Err(RequestError::NotLeader.into());
                }
                if target == player || !record.members.contains(&target) {
                    return Err(RequestError::NotMember.into());
                }
                self.remove_member(party, target, true)
            }
            _ => Err(RequestError::NotAllowed.into()),
        }
    }

    /// The party of `player` with at least two members (a party being formed by an
    /// invitation does not count).
    fn real_party_of(&self, player: u64) -> Result<u64, PartyFailure> {
        let id = self
            .s
            .store
            .party_of(player)?
            .ok_or(RequestError::NotInParty)?;
        match self.s.store.load_party(id)? {
            Some(p) if p.members.len() >= 2 => Ok(id),
            _ => Err(RequestError::NotInParty.into()),
        }
    }

    /// Read-modify-write of one party with compare-and-set; `change` sees the current
    /// record (`None`: none) and returns the new one, or a refusal.
    /// With `invitation`, the write also records it in the store's invitation index.
    fn update(
        &self,
        party_id: u64,
        invitation: Option<&Invitation>,
        mut change: impl FnMut(Option<&PartyRecord>) -> Result<PartyRecord, PartyFailure>,
    ) -> Result<(Option<PartyRecord>, PartyRecord), PartyFailure> {
        for _ in 0..CAS_ROUNDS {
            let current = self.s.store.load_party(party_id)?;
            let mut next = change(current.as_ref())?;
            let expected = current.as_ref().map(|c| c.version);
            next.party_id = party_id;
            next.version = expected.map_or(1, |v| v + 1);
            let written = match invitation {
                Some(inv) => {
                    self.s
                        .store
                        .write_party_invite(&next, expected, inv, unix_millis())?
                }
                None => self.s.store.write_party(&next, expected)?,
            };
            if written {
                Stats::inc(&self.s.stats.party_writes);
                return Ok((current, next));
            }
            Stats::inc(&self.s.stats.party_write_conflicts);
        }
        Err(PartyFailure::Contended)
    }

    fn invite(&mut self, inviter: u64, name: &str) -> Result<(), PartyFailure> {
        let invitee = player_id(name);
        if invitee == inviter {
            return Err(RequestError::SelfInvite.into());
        }
        if self.holder_of(invitee)?.is_none() {
            return Err(RequestError::NoSuchPlayer.into());
        }
        if self.real_party_of(invitee).is_ok() {
            return Err(RequestError::AlreadyInParty.into());
        }
        let party_id = match self.s.store.party_of(inviter)? {
            Some(id) => id,
            None => random_party_id(),
        };
        let now_ms = unix_millis();
        let invitation = Invitation {
            party_id,
            invitee,
            expires_at_ms: now_ms
                .saturating_add(u64::try_from(self.s.invite_ttl.as_millis()).unwrap_or(u64::MAX)),
        };
        let stale = self.stale_invites(party_id, now_ms)?;
        self.update(party_id, Some(&invitation), |current| {
            let mut next = match current {
                Some(p) => {
                    if p.leader != inviter {
                        return Err(RequestError::NotLeader.into());
                    }
                    if p.members.len() >= MAX_PARTY_SIZE {
                        return Err(RequestError::PartyFull.into());
                    }
                    p.clone()
                }
                None => PartyRecord {
                    party_id,
                    leader: inviter,
                    members: vec![inviter],
                    invites: Vec::new(),
                    version: 0,
                },
            };
            next.invites.retain(|i| !stale.contains(i));
            add_invite(&mut next, invitee)?;
            Ok(next)
        })?;
        let by = self.name_of(inviter);
        self.tell(invitee, PartyEvent::Invited { by }, Some(party_id));
        Ok(())
    }

    /// The invitees `party_id` lists whose invitation to it expired or was replaced by a
    /// newer one (they are dropped at its next write).
    fn stale_invites(&self, party_id: u64, now_ms: u64) -> Result<HashSet<u64>, StoreError> {
        let mut stale = HashSet::new();
        if let Some(p) = self.s.store.load_party(party_id)? {
            for i in p.invites {
                let pending = self.s.store.invitation_of(i, now_ms)?;
                if pending.is_none_or(|inv| inv.party_id != party_id) {
                    stale.insert(i);
                }
            }
        }
        Ok(stale)
    }

    /// The invitation `invitee` may answer now (unexpired, its party still lists it).
    fn pending_invitation(&self, invitee: u64) -> Result<Invitation, PartyFailure> {
        self.s
            .store
            .invitation_of(invitee, unix_millis())?
            .ok_or(PartyFailure::Refused(RequestError::NoInvite))
    }

    /// Tells a player that arrived here of its pending invitation, if any (it may have
    /// been invited while it was moving, or told on a connection it lost).
    fn announce_invitation(&mut self, player: u64) {
        if self.real_party_of(player).is_ok() {
            return;
        }
        let invitation = match self.s.store.invitation_of(player, unix_millis()) {
            Ok(Some(inv)) => inv,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(player, error = %e, "invitation lookup failed");
                return;
            }
        };
        let leader = match self.s.store.load_party(invitation.party_id) {
            Ok(Some(p)) => p.leader,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(player, error = %e, "invitation lookup failed");
                return;
            }
        };
        let by = self.name_of(leader);
        self.tell_local(player, &PartyEvent::Invited { by });
    }

    fn accept(&mut self, invitee: u64) -> Result<(), PartyFailure> {
        let party_id = self.pending_invitation(invitee)?.party_id;
        // A party this player was forming by inviting others is abandoned.
        if let Some(own) = self.s.store.party_of(invitee)? {
            if own != party_id {
                match self.s.store.load_party(own)? {
                    Some(p) if p.members.len() >= 2 => {
                        return Err(RequestError::AlreadyInParty.into())
                    }
                    Some(_) => {
                        self.update(own, None, |current| {
                            // Re-checked on every compare-and-set attempt: someone may
                            // have accepted this player's own invitation meanwhile.
                            if current.is_some_and(|c| c.members.len() >= 2) {
                                return Err(RequestError::AlreadyInParty.into());
                            }
                            Ok(PartyRecord {
                                party_id: own,
                                leader: invitee,
                                members: Vec::new(),
                                invites: Vec::new(),
                                version: 0,
                            })
                        })?;
                    }
                    None => {}
                }
            }
        }
        let (before, after) = self.update(party_id, None, |current| {
            let p = current.ok_or(RequestError::NoInvite)?;
            if !p.invites.contains(&invitee) {
                return Err(RequestError::NoInvite.into());
            }
            if p.members.len() >= MAX_PARTY_SIZE {
                return Err(RequestError::PartyFull.into());
            }
            let mut next = p.clone();
            next.invites.retain(|i| *i != invitee);
            if !next.members.contains(&invitee) {
                next.members.push(invitee);
            }
            Ok(next)
        })?;
        self.changes.push((before, after));
        Ok(())
    }

    fn decline(&mut self, invitee: u64) -> Result<(), PartyFailure> {
        let party_id = self.pending_invitation(invitee)?.party_id;
        let stale = self.stale_invites(party_id, unix_millis())?;
        let (_, after) = self.update(party_id, None, |current| {
            let p = current.ok_or(RequestError::NoInvite)?;
            if !p.invites.contains(&invitee) {
                return Err(RequestError::NoInvite.into());
            }
            let mut next = p.clone();
            next.invites.retain(|i| *i != invitee && !stale.contains(i));
            if next.members.len() < 2 && next.invites.is_empty() {
                next.members.clear();
            }
            Ok(next)
        })?;
        let by = self.name_of(invitee);
        self.tell(after.leader, PartyEvent::Declined { by }, None);
        Ok(())
    }

    /// Removes `player` from `party_id` (leader succession, disband below two).
    fn remove_member(
        &mut self,
        party_id: u64,
        player: u64,
        kicked: bool,
    ) -> Result<(), PartyFailure> {
        let (before, after) = self.update(party_id, None, |current| {
            let p = current.ok_or(RequestError::NotInParty)?;
            if !p.members.contains(&player) {
                return Err(RequestError::NotInParty.into());
            }
            let mut next = p.clone();
            next.members.retain(|m| *m != player);
            if next.leader == player {
                if let Some(&first) = next.members.first() {
                    next.leader = first;
                }
            }
            if next.members.len() < 2 && (next.members.is_empty() || p.members.len() >= 2) {
                // A real party disbands below two; a forming one ends with its inviter.
                next.members.clear();
                next.invites.clear();
            }
            Ok(next)
        })?;
        if let Some(b) = before.as_ref().filter(|b| b.members.len() >= 2) {
            self.tell(player, PartyEvent::Left { kicked }, None);
            if after.members.is_empty() {
                // SPEC §6.4: the member left alone learns that the party is gone,
                // wherever it plays.
                for last in b.members.iter().filter(|m| **m != player) {
                    let event = PartyEvent::dissolved(wire_party(party_id));
                    self.tell(*last, event, None);
                }
            }
        }
        self.changes.push((before, after));
        Ok(())
    }

    /// After a membership change: every server holding a member (before or after) syncs
    /// the party; this one at once, the others through their mailbox.
    fn changed(&mut self, before: Option<&PartyRecord>, after: &PartyRecord) {
        let mut players: BTreeSet<u64> = after.members.iter().copied().collect();
        players.extend(before.iter().flat_map(|b| b.members.iter().copied()));
        let mut servers = BTreeSet::new();
        for p in players {
            if self.s.registry.route(p).is_some() {
                servers.insert(self.s.server_id.clone());
            } else if let Ok(Some(h)) = self.holder_of(p) {
                servers.insert(h);
            }
        }
        for server in servers {
            if server == self.s.server_id {
                self.sync(after.party_id);
            } else {
                self.post(
                    &server,
                    &PartyMail::Sync {
                        party_id: after.party_id,
                    },
                );
            }
        }
    }

    /// Mirrors party `party_id` from the store, tells local members, moves them to their
    /// leader (its instance here, or its server).
    fn sync(&mut self, party_id: u64) {
        let record = match self.s.store.load_party(party_id) {
            Ok(r) => r.filter(|r| r.members.len() >= 2),
            Err(e) => {
                tracing::warn!(party = party_id, error = %e, "party sync: load failed");
                return;
            }
        };
        let id = wire_party(party_id);
        let before: Vec<u64> = {
            let mirror = self.s.mirror.lock().unwrap_or_else(|p| p.into_inner());
            mirror
                .party(id)
                .map(|p| p.members.clone())
                .unwrap_or_default()
        };
        {
            let mut mirror = self.s.mirror.lock().unwrap_or_else(|p| p.into_inner());
            match &record {
                Some(r) => mirror.mirror(id, r.leader, &r.members),
                None => mirror.unmirror(id),
            }
        }
        let members = record
            .as_ref()
            .map(|r| r.members.clone())
            .unwrap_or_default();
        if members.iter().any(|m| self.s.registry.route(*m).is_some()) {
            self.served.insert(party_id, members.clone());
        } else {
            self.served.remove(&party_id);
        }
        for gone in before.iter().filter(|m| !members.contains(m)) {
            if let Some((_, route)) = self.s.registry.route(*gone) {
                route.control(Control::PartyLeft { player: *gone });
            }
        }
        let Some(r) = record else { return };
        let event = PartyEvent::Members {
            party: id,
            leader: self.name_of(r.leader),
            members: r.members.iter().map(|m| self.name_of(*m)).collect(),
        };
        let leader_server = if self.s.registry.route(r.leader).is_some() {
            Some(self.s.server_id.clone())
        } else {
            self.holder_of(r.leader).ok().flatten()
        };
        for m in &r.members {
            let Some((session, route)) = self.s.registry.route(*m) else {
                continue;
            };
            self.tell_local(*m, &event);
            match &leader_server {
                Some(h) if *h != self.s.server_id => self.hand_off(*m, session, h),
                _ => route.control(Control::PartyJoined {
                    party: id,
                    player: *m,
                }),
            }
        }
    }

    /// `player` was admitted here: if it leads `party_id` (for example its new instance
    /// was placed on this server by load), the servers holding its other members sync the
    /// party, which sends those members here.
    fn leader_arrived(&mut self, party_id: u64, player: u64) {
        match self.s.store.load_party(party_id) {
            Ok(Some(r)) if r.leader == player && r.members.len() >= 2 => {
                let mut servers = BTreeSet::new();
                for m in r.members.iter().filter(|m| **m != player) {
                    if let Ok(Some(h)) = self.holder_of(*m) {
                        servers.insert(h);
                    }
                }
                servers.remove(&self.s.server_id);
                for server in servers {
                    self.post(&server, &PartyMail::Sync { party_id });
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(party = party_id, error = %e, "party lookup failed"),
        }
    }

    /// Moves a local member to server `to`: the sim saves and ends its session here
    /// (without leaving the party), its lease is released, then it is redirected with a
    /// ticket for `to`.
    fn hand_off(&mut self, player: u64, session: SessionId, to: &str) {
        let (Some(address), Some(contact)) = (
            self.s.placement.peer_address(to),
            self.s.registry.contact(player),
        ) else {
            tracing::debug!(player, to, "no handoff: peer unknown or player detached");
            return;
        };
        let Some((_, route)) = self.s.registry.route(player) else {
            return;
        };
        route.control(Control::Handoff { session });
        let deadline = Instant::now() + HANDOFF_WAIT;
        while self.s.leases.holds(player, session) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.s.leases.holds(player, session) {
            tracing::warn!(
                player,
                to,
                "handoff: final checkpoint not answered in time; redirecting anyway"
            );
        }
        self.s.leases.release_ended();
        crate::cluster::send_last_frame(
            &contact.outbox,
            &contact.shared,
            contact.conn.as_ref(),
            &crate::cluster::redirect_to(&self.s.tickets, &contact.name, to, address, unix_secs()),
            close_code::REJECTED,
            DisconnectCause::Redirected,
        );
        Stats::inc(&self.s.stats.party_handoffs);
        tracing::info!(player, to, "party member handed to its leader's server");
    }

    /// Tells `player` `event`, wherever it plays.
    fn tell(&mut self, player: u64, event: PartyEvent, invited_to: Option<u64>) {
        if self.s.registry.route(player).is_some() {
            self.tell_local(player, &event);
            return;
        }
        match self.holder_of(player) {
            Ok(Some(server)) => self.post(
                &server,
                &PartyMail::Tell {
                    player,
                    event,
                    invited_to,
                },
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(player, error = %e, "party event not delivered"),
        }
    }

    fn tell_local(&self, player: u64, event: &PartyEvent) {
        let contact = self
            .s
            .registry
            .contact(player)
            .filter(|c| c.shared.is_welcomed());
        let Some(c) = contact else { return };
        if let Ok(f) = encode_frame(&ServerMsg::Event(Event::Party(event.clone()))) {
            if c.outbox.try_send(Outgoing::Frame(f)).is_err() {
                tracing::debug!(player, "party event dropped: outbox full or closed");
            }
        }
    }

    fn post(&self, server: &str, mail: &PartyMail) {
        let body = match postcard::to_allocvec(mail) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "encoding party mail failed");
                return;
            }
        };
        match self.s.store.post_mail(server, &body, unix_millis()) {
            Ok(_) => Stats::inc(&self.s.stats.party_mail_sent),
            Err(e) => tracing::warn!(server, error = %e, "posting party mail failed"),
        }
    }

    fn poll_mail(&mut self) {
        let mails = match self.s.store.read_mail(&self.s.server_id, MAIL_BATCH) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reading the party mailbox failed");
                return;
            }
        };
        if mails.is_empty() {
            return;
        }
        let ids: Vec<u128> = mails.iter().map(|m| m.id).collect();
        for mail in mails {
            Stats::inc(&self.s.stats.party_mail_received);
            match postcard::from_bytes::<PartyMail>(&mail.body) {
                Ok(PartyMail::Tell { player, event, .. }) => self.tell_local(player, &event),
                Ok(PartyMail::Sync { party_id }) => self.sync(party_id),
                Err(e) => {
                    Stats::inc(&self.s.stats.party_mail_invalid);
                    tracing::warn!(error = %e, "undecodable party mail dropped");
                }
            }
        }
        if let Err(e) = self.s.store.delete_mail(&self.s.server_id, &ids) {
            tracing::warn!(error = %e, "deleting handled party mail failed (handled again)");
        }
    }

    /// The server whose lease holds `player`, if any.
    fn holder_of(&self, player: u64) -> Result<Option<String>, StoreError> {
        if self.s.registry.route(player).is_some() {
            return Ok(Some(self.s.server_id.clone()));
        }
        Ok(self
            .s
            .store
            .lease_of(&player_resource(player), unix_millis())?
            .map(|l| l.holder))
    }

    fn name_of(&mut self, player: u64) -> String {
        if let Some(n) = self.s.registry.name_of(player) {
            return n;
        }
        if let Some(n) = self.names.get(&player) {
            return n.clone();
        }
        match self.s.store.load_player(player) {
            Ok(Some(r)) => {
                self.names.insert(player, r.name.clone());
                r.name
            }
            _ => format!("{player:016x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn party_mail_round_trips_and_garbage_is_an_error() {
        for mail in [
            PartyMail::Sync { party_id: 42 },
            PartyMail::Tell {
                player: 7,
                event: PartyEvent::Invited { by: "lead".into() },
                invited_to: Some(42),
            },
        ] {
            let bytes = postcard::to_allocvec(&mail).expect("encodes");
            assert_eq!(postcard::from_bytes::<PartyMail>(&bytes).ok(), Some(mail));
        }
        assert!(postcard::from_bytes::<PartyMail>(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn a_member_is_due_only_after_a_whole_grace_without_a_lease() {
        let grace = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut a = Absences::default();
        assert!(!a.observe(1, false, at(0), grace), "first seen absent");
        assert!(!a.observe(1, false, at(9), grace));
        assert!(
            a.observe(1, false, at(10), grace),
            "absent for the whole grace"
        );
        // Seen held once (e.g. it logged in elsewhere within the TTL): the clock restarts.
        assert!(!a.observe(2, false, at(0), grace));
        assert!(!a.observe(2, true, at(5), grace));
        assert!(!a.observe(2, false, at(11), grace));
        assert!(!a.observe(2, false, at(20), grace));
        assert!(a.observe(2, false, at(21), grace));
        // A player no longer watched is forgotten with its clock.
        a.retain(&HashSet::from([2]));
        assert!(!a.observe(1, false, at(30), grace), "1's clock restarted");
        a.forget(2);
        assert!(!a.observe(2, false, at(30), grace));
    }

    #[test]
    fn pending_invitations_are_listed_once_and_bounded() {
        let mut p = PartyRecord {
            party_id: 1,
            leader: 10,
            members: vec![10],
            invites: Vec::new(),
            version: 1,
        };
        for i in 0..MAX_PENDING_INVITES as u64 {
            assert_eq!(add_invite(&mut p, 100 + i), Ok(()));
        }
        assert_eq!(add_invite(&mut p, 100), Ok(()), "a repeat is no new entry");
        assert_eq!(p.invites.len(), MAX_PENDING_INVITES);
        assert_eq!(add_invite(&mut p, 999), Err(RequestError::PartyFull));
        assert!(!p.invites.contains(&999));
    }

    #[test]
    fn pruning_runs_a_few_times_per_grace_within_bounds() {
        assert_eq!(
            prune_every(Duration::from_secs(60)),
            Duration::from_secs(15)
        );
        assert_eq!(prune_every(Duration::from_secs(4)), Duration::from_secs(1));
        assert_eq!(prune_every(Duration::from_millis(100)), PRUNE_EVERY_MIN);
        assert_eq!(prune_every(Duration::from_secs(3600)), PRUNE_EVERY_MAX);
    }

    #[test]
    fn wire_party_ids_are_the_low_bits() {
        assert_eq!(wire_party(0x1234_5678_9abc_def0), 0x9abc_def0);
    }
}
