//! What the simulation asks of the cluster, declared here and implemented by cluster code
//! (the party directory, instance placement, drain by migration and player leases), so
//! that the sim never imports the modules above it. In a single server none is set.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use zonehost_protocol::message::Request;

use crate::link::{ConnShared, Link, Outbox, SessionId};

/// What a sim worker hands the directory.
#[derive(Debug)]
pub enum PartyCall {
    /// A party request of a local player, answered on its outbox.
    Request {
        /// The player.
        player: u64,
        /// Request id to answer.
        id: u32,
        /// The request (a party request).
        body: Request,
        /// When the connection task received it.
        received_at: Instant,
    },
    /// A local player's session ended (not handed to another server): it leaves its
    /// party, as on a single server.
    Forget {
        /// The player.
        player: u64,
    },
    /// A player was admitted or resumed here: if the store has it in a party, sync that
    /// party (mirror, tell, send the player to its leader).
    Arrived {
        /// The player.
        player: u64,
    },
}

/// The sim's side of the directory: a bounded, non-blocking queue.
#[derive(Debug, Clone)]
pub struct PartyHandle {
    tx: SyncSender<PartyCall>,
}

impl PartyHandle {
    /// The sim's side of a directory's queue.
    pub fn new(tx: SyncSender<PartyCall>) -> Self {
        Self { tx }
    }

    /// Queues a call; gives it back when the queue is full or the directory stopped.
    pub fn call(&self, call: PartyCall) -> Result<(), PartyCall> {
        self.tx.try_send(call).map_err(|e| match e {
            TrySendError::Full(c) | TrySendError::Disconnected(c) => c,
        })
    }
}

/// A player a draining server has handed off: the session left the simulation, its
/// final checkpoint was answered and its lease ended. It waits for the lease to be
/// released, then gets its `Redirect` ([`crate::cluster::Handoffs`]).
#[derive(Debug)]
pub struct Handoff {
    /// Stable player id.
    pub player_id: u64,
    /// The player's name (the ticket's `player`).
    pub player_name: String,
    /// The session that was handed off.
    pub session: SessionId,
    /// The connection (closed if the `Redirect` cannot be queued).
    pub conn: Arc<dyn Link>,
    /// The session's reliable outbox (the `Redirect` goes last on it).
    pub outbox: Outbox,
    /// Close bookkeeping of the connection.
    pub shared: Arc<ConnShared>,
    /// The player's party on this server when it was handed off: a party's members are
    /// sent to the same peer.
    pub party: Option<zonehost_game::PartyId>,
    /// The peer chosen when the player was handed off (`server_id`, address): a new
    /// instance placed by load ([`crate::placement::InstancePlacer`]). `None` for a drain,
    /// whose task chooses the peer.
    pub to: Option<(String, SocketAddr)>,
}

/// Where handed-off players go (drain by migration, or a new instance placed on a peer):
/// implemented by `crate::cluster::Handoffs`, whose task releases each player's lease and
/// sends its `Redirect`. Pushing never blocks.
pub trait HandoffSink: Send + Sync + Debug {
    /// Queues a handed-off player.
    fn push(&self, handoff: Handoff);
}

/// Placement of new dungeon instances on peers by load (cluster mode with
/// `place_instances`), implemented by `crate::placement::InstancePlacer`.
pub trait InstancePlacement: Send + Sync + Debug {
    /// The peer (`server_id`, address) a new instance opens on while this server is
    /// overloaded; `None` opens it here.
    fn instance_target(&self) -> Option<(String, SocketAddr)>;
    /// Counts a new instance placed here or on a peer.
    fn count_instance(&self, on_peer: bool);
    /// The queue of players saved in their new zone, waiting for their lease release and
    /// `Redirect`.
    fn relay(&self) -> &dyn HandoffSink;
}

/// Player ownership leases (cluster mode) as checkpoints see them, implemented by
/// `crate::cluster::PlayerLeases`.
pub trait LeaseFence: Send + Sync + Debug {
    /// The fence epoch of `player_id`'s checkpoints while `session` holds its lease;
    /// `None` when the lease is lost (nothing may be written).
    fn fence_epoch(&self, player_id: u64, session: SessionId) -> Option<u64>;
    /// The session ended and its final checkpoint was answered: its lease may be released.
    fn session_ended(&self, player_id: u64, session: SessionId);
}
