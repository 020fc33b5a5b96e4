//! The archived types of a snapshot body and their sizes (SPEC.md §4.3.2, §4.3.3).

use rkyv::{Archive, Deserialize, Serialize};

/// Entity kind codes carried in [`EntityState::kind`].
pub mod kind {
    /// A player character.
    pub const PLAYER: u8 = 1;
    /// A monster.
    pub const MONSTER: u8 = 2;
    /// An item lying on the ground.
    pub const ITEM: u8 = 3;
}

/// One entity as a client sees it, in full. Archived size: 22 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct EntityState {
    /// Entity id, unique within the instance.
    pub id: u32,
    /// Position x in millimetres.
    pub x_mm: i32,
    /// Position y in millimetres.
    pub y_mm: i32,
    /// Velocity x in centimetres per second.
    pub vx_cms: i16,
    /// Velocity y in centimetres per second.
    pub vy_cms: i16,
    /// Current hit points.
    pub hp: u16,
    /// Maximum hit points.
    pub max_hp: u16,
    /// Entity kind, see [`kind`].
    pub kind: u8,
    /// Kind-specific flags (SPEC.md §4.3.2).
    pub flags: u8,
}

/// A known entity moved or changed velocity since the baseline. Archived size: 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct EntityMove {
    /// Entity id.
    pub id: u32,
    /// Position x now minus position x in the baseline, millimetres.
    pub dx_mm: i16,
    /// Position y now minus position y in the baseline, millimetres.
    pub dy_mm: i16,
    /// Velocity x now, centimetres per second.
    pub vx_cms: i16,
    /// Velocity y now, centimetres per second.
    pub vy_cms: i16,
}

/// A known entity's hit points changed since the baseline. Archived size: 6 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct EntityHp {
    /// Entity id.
    pub id: u32,
    /// Current hit points.
    pub hp: u16,
}

/// The last input sequence the server applied for one player's entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct PlayerAck {
    /// The player's entity id.
    pub entity: u32,
    /// Highest input sequence applied (0 before any).
    pub last_input: u32,
}

/// The rkyv-archived body of one snapshot part.
#[derive(Debug, Clone, PartialEq, Eq, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct SnapshotBody {
    /// Zone template id of the instance.
    pub zone: u16,
    /// Input acknowledgements of the players the recipient is interested in (itself
    /// always among them), the same in every part.
    pub acks: Vec<PlayerAck>,
    /// Entities new to the recipient since the baseline, or changed in more than position,
    /// velocity and hit points: their full state.
    pub spawns: Vec<EntityState>,
    /// Known entities that moved or changed velocity.
    pub moves: Vec<EntityMove>,
    /// Known entities whose hit points changed.
    pub hps: Vec<EntityHp>,
    /// Ids of entities in the baseline that the recipient no longer sees.
    pub despawns: Vec<u32>,
}

/// Archived bytes of the body's root: `zone` and five (pointer, length) pairs.
pub const BODY_FIXED_LEN: usize = 42;
/// Archived bytes of one [`PlayerAck`].
pub const ACK_LEN: usize = 8;
/// Archived bytes of one [`EntityState`].
pub const ENTITY_LEN: usize = 22;
/// Archived bytes of one [`EntityMove`].
pub const MOVE_LEN: usize = 12;
/// Archived bytes of one [`EntityHp`].
pub const HP_LEN: usize = 6;
/// Archived bytes of one despawned id.
pub const DESPAWN_LEN: usize = 4;

impl ArchivedSnapshotBody {
    /// The last input sequence applied for `entity`, if the body carries its ack.
    pub fn ack_for(&self, entity: u32) -> Option<u32> {
        self.acks
            .iter()
            .find(|a| a.entity == entity)
            .map(|a| a.last_input.to_native())
    }

    /// Number of changes the body carries.
    pub fn change_count(&self) -> usize {
        self.spawns.len() + self.moves.len() + self.hps.len() + self.despawns.len()
    }
}

impl From<&ArchivedEntityState> for EntityState {
    fn from(a: &ArchivedEntityState) -> Self {
        Self {
            id: a.id.to_native(),
            x_mm: a.x_mm.to_native(),
            y_mm: a.y_mm.to_native(),
            vx_cms: a.vx_cms.to_native(),
            vy_cms: a.vy_cms.to_native(),
            hp: a.hp.to_native(),
            max_hp: a.max_hp.to_native(),
            kind: a.kind,
            flags: a.flags,
        }
    }
}
