//! How the world names and shows its entities: ids, kinds and the read-only views the
//! server reads each tick ([`World::entities`](crate::World::entities),
//! [`World::ground_items`](crate::World::ground_items)). Beneath events, trades and the
//! world, which all name entities by [`EntityId`] without depending on one another.

use crate::items::Item;

/// Entity id, unique within one instance.
pub type EntityId = u32;

/// What an entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// A player character.
    Player,
    /// A monster; `flags` carries its [`MonsterKind`](crate::MonsterKind) code.
    Monster,
    /// An item lying on the ground; `flags` carries rarity and category.
    GroundItem,
}

impl EntityKind {
    /// The protocol's entity kind code (`zonehost_protocol::snapshot::kind`).
    pub fn wire_code(self) -> u8 {
        match self {
            EntityKind::Player => 1,
            EntityKind::Monster => 2,
            EntityKind::GroundItem => 3,
        }
    }
}

/// Player [`EntityView::flags`] bit: dead.
pub const FLAG_DEAD: u8 = 1;
/// Player [`EntityView::flags`] bit: leaving the zone.
pub const FLAG_LEAVING: u8 = 2;

/// Read-only view of an entity for snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityView {
    /// Entity id.
    pub id: EntityId,
    /// Kind.
    pub kind: EntityKind,
    /// Position in millimetres.
    pub pos_mm: (i32, i32),
    /// Velocity in millimetres per second during the last tick.
    pub vel_mms: (i32, i32),
    /// Current hit points (0 for ground items).
    pub hp: u16,
    /// Maximum hit points (0 for ground items).
    pub max_hp: u16,
    /// Kind-specific: players [`FLAG_DEAD`] | [`FLAG_LEAVING`]; monsters the
    /// [`MonsterKind`](crate::MonsterKind) code; ground items `rarity | category << 2` (category 0 weapon,
    /// 1 armour, 2 potion).
    pub flags: u8,
}

/// A ground item as seen by the server (for item tooltips and audits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroundView<'a> {
    /// Ground entity id.
    pub id: EntityId,
    /// The item.
    pub item: &'a Item,
    /// Where.
    pub pos_mm: (i32, i32),
    /// Who may pick it up now (`None` = anyone).
    pub owner: Option<u64>,
}
