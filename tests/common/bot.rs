//! A well-behaved player over `zonehost-client` for the persistence and crash tests: it
//! keeps its own position from the snapshots (with a receive-time history), collects the
//! reliable events, and waits for each request's response with a bounded deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zonehost_client::{Client, ClientError, Incoming};
use zonehost_protocol::datagram::InputCmd;
use zonehost_protocol::message::{
    Event, InventoryEvent, InventoryView, RejectCode, Request, RequestError, Response,
};
use zonehost_protocol::ClientEvent;

use super::WAIT;

/// One position sample: when the snapshot arrived and where the player was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Receive time.
    pub at: Instant,
    /// Position, millimetres.
    pub x_mm: i32,
    /// Position, millimetres.
    pub y_mm: i32,
}

/// A connected player.
#[derive(Debug)]
pub struct Bot {
    /// The client connection.
    pub client: Client,
    /// Player name.
    pub name: String,
    /// Own entity id in the current instance.
    pub entity: u32,
    /// Current instance id.
    pub instance: u32,
    /// Newest known own position.
    pub pos: Option<(i32, i32)>,
    /// Every position seen, oldest first (only positions that changed are kept).
    pub history: Vec<Sample>,
    /// Reliable events received and not yet taken.
    pub events: Vec<Event>,
    /// Responses received while waiting for another one: `(id, body)`.
    pub responses: Vec<(u32, Result<Response, RequestError>)>,
}

/// Why a bot could not get in.
#[derive(Debug)]
pub enum JoinError {
    /// The server refused the session with this code.
    Rejected(RejectCode, String),
    /// Anything else.
    Other(ClientError),
}

impl Bot {
    /// Connects and waits for `Welcome`.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        token: &str,
        name: &str,
    ) -> Result<Self, JoinError> {
        match Client::connect(endpoint, addr, "localhost", token, "persistence-test").await {
            Ok(client) => {
                let w = client.welcome().clone();
                Ok(Self {
                    client,
                    name: name.to_owned(),
                    entity: w.entity_id,
                    instance: w.instance,
                    pos: None,
                    history: Vec::new(),
                    events: Vec::new(),
                    responses: Vec::new(),
                })
            }
            Err(ClientError::Rejected(r)) => Err(JoinError::Rejected(r.code, r.reason)),
            Err(e) => Err(JoinError::Other(e)),
        }
    }

    /// Connects, retrying (with a fresh token each time) while the previous session of
    /// this player is still being released (`AlreadyConnected`), within [`WAIT`].
    pub async fn connect_again(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        mut token: impl FnMut() -> String,
        name: &str,
    ) -> Self {
        let deadline = Instant::now() + WAIT;
        loop {
            match Self::connect(endpoint, addr, &token(), name).await {
                Ok(bot) => return bot,
                Err(JoinError::Rejected(RejectCode::AlreadyConnected, _))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{name}: could not log in again: {e:?}"),
            }
        }
    }

    /// Handles one thing from the server (bounded by [`WAIT`]).
    pub async fn pump(&mut self) -> Result<(), ClientError> {
        let next = tokio::time::timeout(WAIT, self.client.next_event())
            .await
            .map_err(|_| ClientError::Timeout(WAIT))??;
        self.handle(next);
        Ok(())
    }

    /// Takes in one thing the client received.
    pub fn handle(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Snapshot(info, _) => {
                if info.stale || info.other_instance {
                    return;
                }
                if let Some(e) = self.client.view().iter().find(|e| e.id == self.entity) {
                    let p = (e.x_mm, e.y_mm);
                    if self.pos != Some(p) {
                        self.history.push(Sample {
                            at: Instant::now(),
                            x_mm: p.0,
                            y_mm: p.1,
                        });
                    }
                    self.pos = Some(p);
                }
            }
            Incoming::Event(ClientEvent::Response { id, body, .. }) => {
                self.responses.push((id, body));
            }
            Incoming::Event(ClientEvent::Event(ev)) => {
                if let Event::ZoneEntered {
                    instance,
                    entity_id,
                    ..
                } = &ev
                {
                    self.instance = *instance;
                    self.entity = *entity_id;
                }
                self.events.push(ev);
            }
            Incoming::Event(_) => {}
        }
    }

    /// The response to request `id`, if it has arrived.
    pub fn take_response(&mut self, id: u32) -> Option<Result<Response, RequestError>> {
        let i = self.responses.iter().position(|(rid, _)| *rid == id)?;
        Some(self.responses.remove(i).1)
    }

    /// Sends `request` and waits for its response (other traffic is taken in meanwhile).
    pub async fn request(&mut self, request: Request) -> Result<Response, RequestError> {
        let what = format!("{request:?}");
        let id = self.client.request(request).await.expect("request sent");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(r) = self.take_response(id) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no response to {what}",
                self.name
            );
            self.pump().await.expect("connection alive");
        }
    }

    /// The inventory, as the server sees it.
    pub async fn inventory(&mut self) -> InventoryView {
        match self.request(Request::GetInventory).await {
            Ok(Response::Inventory(v)) => v,
            other => panic!("{}: GetInventory answered {other:?}", self.name),
        }
    }

    /// The ground entity of the `Dropped` event of `item`, if received (taken).
    pub fn take_dropped(&mut self, item: u128) -> Option<u32> {
        let i = self.events.iter().position(
            |e| matches!(e, Event::Inventory(InventoryEvent::Dropped { item: it, .. }) if *it == item),
        )?;
        match self.events.remove(i) {
            Event::Inventory(InventoryEvent::Dropped { ground, .. }) => Some(ground),
            _ => None,
        }
    }

    /// Drops `item` and waits for the response; returns the ground entity it became.
    pub async fn drop_item(&mut self, item: u128) -> u32 {
        let r = self.request(Request::Drop { item }).await;
        assert_eq!(r, Ok(Response::Done), "{}: drop {item:032x}", self.name);
        self.take_dropped(item)
            .unwrap_or_else(|| panic!("{}: no Dropped event before the response", self.name))
    }

    /// Waits for a snapshot showing the player's own position.
    pub async fn position(&mut self) -> (i32, i32) {
        let deadline = Instant::now() + WAIT;
        self.pos = None;
        loop {
            if let Some(p) = self.pos {
                return p;
            }
            assert!(Instant::now() < deadline, "{}: no snapshot", self.name);
            self.pump().await.expect("connection alive");
        }
    }

    /// Sends `n` movement inputs and waits until a snapshot acknowledges the last one;
    /// returns the position it shows.
    pub async fn walk(&mut self, n: u32, move_x: i16, move_y: i16) -> (i32, i32) {
        let mut last = 0;
        for _ in 0..n {
            last = self
                .client
                .send_input(InputCmd::new(move_x, move_y, 0))
                .expect("input sent");
            // Pace the inputs just under the tick rate (the server applies one per tick
            // and drops inputs beyond a small bank).
            let pace = tokio::time::sleep(Duration::from_millis(17));
            tokio::pin!(pace);
            loop {
                tokio::select! {
                    _ = &mut pace => break,
                    next = self.client.next_event() => self.handle(next.expect("connection alive")),
                }
            }
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if self.client.session().highest_acked() >= last {
                if let Some(p) = self.pos {
                    // The acking snapshot's own position was taken in `handle`.
                    return p;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: input {last} not acked",
                self.name
            );
            self.pump().await.expect("connection alive");
        }
    }
}
