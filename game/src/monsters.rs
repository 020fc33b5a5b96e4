//! Monster kinds: compiled-in definitions, level scaling and loot tables.

use serde::{Deserialize, Serialize};

use crate::items::{LootTable, BOSS_RARITY, NORMAL_RARITY};

/// A monster kind. The numeric value is stable and is sent to clients in entity flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum MonsterKind {
    /// Slow, tough melee.
    Zombie = 1,
    /// Ordinary melee.
    Skeleton = 2,
    /// Ranged, physical.
    SkeletonArcher = 3,
    /// Ranged, fire.
    FireImp = 4,
    /// Heavy melee, fire.
    HellKnight = 5,
    /// Boss: melee plus a periodic fire nova.
    AshenKing = 6,
}

/// How a kind fights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// Walks up and hits.
    Melee,
    /// Attacks from range when it has line of sight.
    Ranged,
    /// Melee plus a fire nova around itself every `nova_ticks`.
    Boss,
}

/// Damage element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Element {
    /// Mitigated by armour.
    Physical,
    /// Mitigated by fire resistance.
    Fire,
}

/// Everything about a monster kind at level 1 plus its growth per level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonsterDef {
    /// Kind.
    pub kind: MonsterKind,
    /// Name used in zone files (`kind = "skeleton_archer"`).
    pub name: &'static str,
    /// Fighting style.
    pub behaviour: Behaviour,
    /// Element of its attacks.
    pub element: Element,
    /// Hit points at level 1.
    pub hp: u32,
    /// Damage range at level 1.
    pub damage: (u32, u32),
    /// Accuracy at level 0; +10 per level.
    pub accuracy: u32,
    /// Evasion at level 0; +4 per level.
    pub evasion: u32,
    /// Armour at level 0; +3 per level.
    pub armour: u32,
    /// Fire resistance in percent (may be negative: weak to fire).
    pub fire_resist: i32,
    /// Attack reach in millimetres.
    pub range_mm: i32,
    /// Ticks between attacks.
    pub attack_ticks: u32,
    /// Movement speed in millimetres per second.
    pub speed_mms: i32,
    /// Players closer than this are noticed.
    pub aggro_mm: i32,
    /// Farther than this from home, the monster gives up and walks back.
    pub leash_mm: i32,
    /// XP per monster level.
    pub xp: u32,
    /// Critical hit chance in percent.
    pub crit_pct: u32,
    /// Loot.
    pub loot: LootTable,
}

/// Ticks between a boss's fire novas.
pub const NOVA_TICKS: u32 = 300;
/// Radius of the fire nova in millimetres.
pub const NOVA_RADIUS_MM: i32 = 5000;

const COMMON_LOOT: LootTable = LootTable {
    rolls: 1,
    weights: [70, 10, 12, 8],
    rarity: NORMAL_RARITY,
    gold_per_level: (1, 4),
    gold_chance: 50,
};

/// Every monster kind. See `RULES.md` for the scaling formulas.
pub const MONSTERS: &[MonsterDef] = &[
    MonsterDef {
        kind: MonsterKind::Zombie,
        name: "zombie",
        behaviour: Behaviour::Melee,
        element: Element::Physical,
        hp: 40,
        damage: (3, 6),
        accuracy: 30,
        evasion: 10,
        armour: 5,
        fire_resist: -25,
        range_mm: 1500,
        attack_ticks: 72,
        speed_mms: 1800,
        aggro_mm: 8000,
        leash_mm: 20_000,
        xp: 10,
        crit_pct: 5,
        loot: COMMON_LOOT,
    },
    MonsterDef {
        kind: MonsterKind::Skeleton,
        name: "skeleton",
        behaviour: Behaviour::Melee,
        element: Element::Physical,
        hp: 28,
        damage: (2, 6),
        accuracy: 40,
        evasion: 20,
        armour: 8,
        fire_resist: 0,
        range_mm: 1500,
        attack_ticks: 54,
        speed_mms: 3200,
        aggro_mm: 10_000,
        leash_mm: 22_000,
        xp: 9,
        crit_pct: 5,
        loot: COMMON_LOOT,
    },
    MonsterDef {
        kind: MonsterKind::SkeletonArcher,
        name: "skeleton_archer",
        behaviour: Behaviour::Ranged,
        element: Element::Physical,
        hp: 20,
        damage: (2, 5),
        accuracy: 45,
        evasion: 15,
        armour: 4,
        fire_resist: 0,
        range_mm: 10_000,
        attack_ticks: 75,
        speed_mms: 2800,
        aggro_mm: 12_000,
        leash_mm: 22_000,
        xp: 10,
        crit_pct: 5,
        loot: LootTable {
            weights: [70, 14, 8, 8],
            ..COMMON_LOOT
        },
    },
    MonsterDef {
        kind: MonsterKind::FireImp,
        name: "fire_imp",
        behaviour: Behaviour::Ranged,
        element: Element::Fire,
        hp: 24,
        damage: (3, 7),
        accuracy: 50,
        evasion: 30,
        armour: 2,
        fire_resist: 75,
        range_mm: 9000,
        attack_ticks: 66,
        speed_mms: 3600,
        aggro_mm: 12_000,
        leash_mm: 24_000,
        xp: 12,
        crit_pct: 5,
        loot: COMMON_LOOT,
    },
    MonsterDef {
        kind: MonsterKind::HellKnight,
        name: "hell_knight",
        behaviour: Behaviour::Melee,
        element: Element::Fire,
        hp: 70,
        damage: (5, 11),
        accuracy: 55,
        evasion: 25,
        armour: 20,
        fire_resist: 50,
        range_mm: 1800,
        attack_ticks: 66,
        speed_mms: 3000,
        aggro_mm: 10_000,
        leash_mm: 25_000,
        xp: 20,
        crit_pct: 5,
        loot: LootTable {
            rolls: 2,
            ..COMMON_LOOT
        },
    },
    MonsterDef {
        kind: MonsterKind::AshenKing,
        name: "ashen_king",
        behaviour: Behaviour::Boss,
        element: Element::Physical,
        hp: 600,
        damage: (10, 20),
        accuracy: 80,
        evasion: 40,
        armour: 40,
        fire_resist: 60,
        range_mm: 2200,
        attack_ticks: 60,
        speed_mms: 3400,
        aggro_mm: 14_000,
        leash_mm: 30_000,
        xp: 200,
        crit_pct: 10,
        loot: LootTable {
            rolls: 4,
            weights: [0, 45, 45, 10],
            rarity: BOSS_RARITY,
            gold_per_level: (20, 40),
            gold_chance: 100,
        },
    },
];

impl MonsterKind {
    /// Its definition.
    pub fn def(self) -> &'static MonsterDef {
        // MONSTERS is ordered by discriminant starting at 1 (checked by a test).
        &MONSTERS[(self as usize - 1).min(MONSTERS.len() - 1)]
    }

    /// The kind named `name` in zone files.
    pub fn from_name(name: &str) -> Option<MonsterKind> {
        MONSTERS.iter().find(|m| m.name == name).map(|m| m.kind)
    }
}

/// A monster's combat numbers at a given level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MonsterStats {
    /// Maximum hit points: `hp * (100 + 30 (L-1)) / 100`.
    pub max_hp: u32,
    /// Damage range: `damage * (100 + 12 (L-1)) / 100`.
    pub damage: (u32, u32),
    /// `accuracy + 10 L`.
    pub accuracy: u32,
    /// `evasion + 4 L`.
    pub evasion: u32,
    /// `armour + 3 L`.
    pub armour: u32,
}

impl MonsterDef {
    /// Stats at `level` (1 if 0).
    pub fn stats(&self, level: u8) -> MonsterStats {
        let l = u32::from(level.max(1));
        let dmg = |d: u32| (d * (100 + 12 * (l - 1)) / 100).max(1);
        MonsterStats {
            max_hp: (self.hp * (100 + 30 * (l - 1)) / 100).clamp(1, u32::from(u16::MAX)),
            damage: (dmg(self.damage.0), dmg(self.damage.1)),
            accuracy: self.accuracy + 10 * l,
            evasion: self.evasion + 4 * l,
            armour: self.armour + 3 * l,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_kind() {
        for (i, m) in MONSTERS.iter().enumerate() {
            assert_eq!(m.kind as usize, i + 1);
            assert_eq!(m.kind.def().name, m.name);
            assert_eq!(MonsterKind::from_name(m.name), Some(m.kind));
        }
        assert_eq!(MonsterKind::from_name("dragon"), None);
        let s = MonsterKind::AshenKing.def().stats(u8::MAX);
        assert!(s.max_hp <= u32::from(u16::MAX));
    }
}
