//! Tasks that hand players to peers (cluster mode): drain by migration, and the relay of
//! players whose new instance was placed on a peer. Each releases the players' leases
//! before their `Redirect`, since the peer takes the lease when the ticket logs in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use zonehost_protocol::message::Goaway;

use crate::cluster::{Handoff, Handoffs, PlayerLeases, Tickets};
use crate::placement::Placement;
use crate::session::unix_secs;

/// Drain by migration (cluster mode): what the drain task needs to hand the
/// players the sim workers let go to peers.
#[derive(Debug)]
pub struct DrainMigration {
    /// Where the sim workers hand the players they let go.
    pub handoffs: Arc<Handoffs>,
    /// Where each party's first member was sent: the others follow it.
    party_targets: Mutex<HashMap<u32, (String, SocketAddr)>>,
    placement: Arc<Placement>,
    leases: Arc<PlayerLeases>,
    tickets: Arc<Tickets>,
    /// Sent instead of a `Redirect` when no peer is live.
    goaway: Goaway,
}

impl DrainMigration {
    /// Hands the players to the least loaded live peer of `placement` (a party's members
    /// to the same one), or sends them `goaway` when there is none.
    pub fn new(
        placement: Arc<Placement>,
        leases: Arc<PlayerLeases>,
        tickets: Arc<Tickets>,
        goaway: Goaway,
    ) -> Self {
        Self {
            handoffs: Arc::new(Handoffs::default()),
            party_targets: Mutex::new(HashMap::new()),
            placement,
            leases,
            tickets,
            goaway,
        }
    }

    /// Releases the leases of the players handed off so far (their final checkpoints are
    /// answered), then sends each a `Redirect` to the least-loaded live peer.
    pub async fn round(&self) {
        let taken = take_released(&self.handoffs, &self.leases).await;
        if taken.is_empty() {
            return;
        }
        let now = unix_secs();
        let mut parties = self.party_targets.lock().unwrap_or_else(|p| p.into_inner());
        for h in &taken {
            let target = match h.party {
                Some(party) => match parties.get(&party) {
                    Some(t) => Some(t.clone()),
                    None => {
                        let t = self.placement.least_loaded_peer();
                        if let Some(t) = &t {
                            parties.insert(party, t.clone());
                        }
                        t
                    }
                },
                None => self.placement.least_loaded_peer(),
            };
            self.handoffs.send(
                h,
                target.as_ref().map(|(id, a)| (id.as_str(), *a)),
                &self.tickets,
                &self.goaway,
                now,
            );
        }
    }
}

/// Redirects the players whose new instance was placed on a peer
/// ([`crate::placement::InstancePlacer`]) as their sim workers queue them (their final checkpoint
/// answered): releases their leases, then sends each its `Redirect`, until `stop` turns
/// true.
pub async fn relay_placed(
    handoffs: Arc<Handoffs>,
    leases: Arc<PlayerLeases>,
    tickets: Arc<Tickets>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = handoffs.pushed() => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
        let taken = take_released(&handoffs, &leases).await;
        let now = unix_secs();
        for h in &taken {
            handoffs.redirect(h, &tickets, now);
        }
    }
}

/// Takes the players queued in `handoffs` (their final checkpoints answered) and releases
/// their leases: the lease goes before the `Redirect`, since the peer takes it when the
/// ticket logs in.
async fn take_released(handoffs: &Handoffs, leases: &Arc<PlayerLeases>) -> Vec<Handoff> {
    let taken = handoffs.take();
    if !taken.is_empty() {
        let l = leases.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || l.release_ended()).await {
            tracing::error!(error = %e, "releasing handed-off players' leases failed");
        }
    }
    taken
}
