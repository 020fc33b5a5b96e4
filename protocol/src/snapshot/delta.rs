//! What changed between a client's baseline and now ([`diff`]), as an ordered list of
//! [`Change`]s for [`super::encode_snapshot`].

use super::body::{EntityHp, EntityMove, EntityState, DESPAWN_LEN, ENTITY_LEN, HP_LEN, MOVE_LEN};

/// One change of a snapshot body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A full entity state: new to the client, or changed beyond a move or hit points.
    Spawn(EntityState),
    /// A known entity moved or changed velocity.
    Move(EntityMove),
    /// A known entity's hit points changed.
    Hp(EntityHp),
    /// An entity of the baseline the client no longer sees.
    Despawn(u32),
}

impl Change {
    /// Archived bytes this change takes in a body.
    pub fn archived_len(&self) -> usize {
        match self {
            Change::Spawn(_) => ENTITY_LEN,
            Change::Move(_) => MOVE_LEN,
            Change::Hp(_) => HP_LEN,
            Change::Despawn(_) => DESPAWN_LEN,
        }
    }
}

/// The changes of one snapshot in sending order, with a scratch buffer reused between
/// calls to [`diff`].
#[derive(Debug, Clone, Default)]
pub struct Changes {
    list: Vec<Change>,
    ids: Vec<u32>,
}

impl Changes {
    /// Changes in the given order (for encoders that compute them otherwise).
    pub fn from_list(list: Vec<Change>) -> Self {
        Self {
            list,
            ids: Vec::new(),
        }
    }

    /// The changes, most important first.
    pub fn as_slice(&self) -> &[Change] {
        &self.list
    }

    /// Iterates the changes, most important first.
    pub fn iter(&self) -> std::slice::Iter<'_, Change> {
        self.list.iter()
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Archived bytes of all changes together.
    pub fn archived_len(&self) -> usize {
        self.list.iter().map(Change::archived_len).sum()
    }
}

/// Computes what a client that has `base` must be told to have `cur`.
///
/// `base` is the client's state at its baseline, sorted by id (empty for a full state);
/// `cur` is what it should see now, in importance order, without duplicate ids. The
/// result lists despawns first (ids ascending, 4 bytes each), then for each entity of
/// `cur` in order: a spawn when it is new, changed kind, flags or maximum hit points, or
/// moved more than ±32 767 mm on an axis; otherwise a move when position or velocity
/// changed and a hit-point change when hit points did. An unchanged entity costs nothing.
pub fn diff(base: &[EntityState], cur: &[EntityState], out: &mut Changes) {
    out.list.clear();
    out.ids.clear();
    out.ids.extend(cur.iter().map(|e| e.id));
    out.ids.sort_unstable();
    for b in base {
        if out.ids.binary_search(&b.id).is_err() {
            out.list.push(Change::Despawn(b.id));
        }
    }
    for e in cur {
        let Ok(i) = base.binary_search_by_key(&e.id, |b| b.id) else {
            out.list.push(Change::Spawn(*e));
            continue;
        };
        let b = &base[i];
        if b == e {
            continue;
        }
        let dx = i16::try_from(i64::from(e.x_mm) - i64::from(b.x_mm));
        let dy = i16::try_from(i64::from(e.y_mm) - i64::from(b.y_mm));
        let (Ok(dx_mm), Ok(dy_mm)) = (dx, dy) else {
            out.list.push(Change::Spawn(*e));
            continue;
        };
        if b.kind != e.kind || b.flags != e.flags || b.max_hp != e.max_hp {
            out.list.push(Change::Spawn(*e));
            continue;
        }
        if (b.x_mm, b.y_mm, b.vx_cms, b.vy_cms) != (e.x_mm, e.y_mm, e.vx_cms, e.vy_cms) {
            out.list.push(Change::Move(EntityMove {
                id: e.id,
                dx_mm,
                dy_mm,
                vx_cms: e.vx_cms,
                vy_cms: e.vy_cms,
            }));
        }
        if b.hp != e.hp {
            out.list.push(Change::Hp(EntityHp { id: e.id, hp: e.hp }));
        }
    }
}
