//! Character progression: XP curve, attributes per level, derived combat stats and the
//! exportable [`PlayerState`].

use serde::{Deserialize, Serialize};

use crate::combat::MAX_RESIST_PCT;
use crate::inventory::{Equipment, Inventory};
use crate::items::{AffixKind, FISTS};

/// Highest character level.
pub const MAX_LEVEL: u8 = 50;
/// Highest critical hit chance a player can reach, in percent.
pub const MAX_CRIT_PCT: u32 = 50;
/// Highest attack-speed bonus that counts, in percent.
pub const MAX_ATTACK_SPEED_PCT: u32 = 75;
/// Fewest ticks between two attacks.
pub const MIN_ATTACK_TICKS: u32 = 10;

/// XP needed to go from `level` to `level + 1`: `50 L^2 + 50 L` (0 at [`MAX_LEVEL`]).
pub fn xp_to_next(level: u8) -> u64 {
    if level >= MAX_LEVEL {
        return 0;
    }
    let l = u64::from(level.max(1));
    50 * l * l + 50 * l
}

/// Strength, dexterity and vitality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Attributes {
    /// +1 % physical damage per point.
    pub strength: u32,
    /// Accuracy, evasion and critical chance.
    pub dexterity: u32,
    /// Hit points.
    pub vitality: u32,
}

/// Attributes before items: 10/10/10 at level 1, then +2 strength, +2 dexterity and
/// +3 vitality per level (allocated automatically).
pub fn base_attributes(level: u8) -> Attributes {
    let l = u32::from(level.max(1)) - 1;
    Attributes {
        strength: 10 + 2 * l,
        dexterity: 10 + 2 * l,
        vitality: 10 + 3 * l,
    }
}

/// A player's derived combat numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PlayerStats {
    /// Attributes including items.
    pub attributes: Attributes,
    /// `40 + 8 vit + 4 level + life affixes`.
    pub max_hp: u32,
    /// Weapon (or fist) damage plus flat damage affixes.
    pub physical: (u32, u32),
    /// `100 + strength + % physical damage affixes`.
    pub physical_pct: u32,
    /// Fire damage per hit from affixes.
    pub fire: u32,
    /// `5 dex + 10 level + accuracy affixes`.
    pub accuracy: u32,
    /// `3 dex + 2 level`.
    pub evasion: u32,
    /// Sum of item armour and armour affixes.
    pub armour: u32,
    /// Fire resistance affixes, capped at 75.
    pub fire_resist: i32,
    /// `min(50, 5 + dex / 10 + crit affixes)`.
    pub crit_pct: u32,
    /// `max(10, weapon ticks * 100 / (100 + min(75, attack speed)))`.
    pub attack_ticks: u32,
    /// Weapon reach in millimetres.
    pub range_mm: i32,
}

/// Derived stats for a character of `level` wearing `equipment`.
pub fn player_stats(level: u8, equipment: &Equipment) -> PlayerStats {
    let level = level.clamp(1, MAX_LEVEL);
    let total = |k: AffixKind| -> i32 { equipment.items().map(|i| i.affix_total(k)).sum() };
    let pos = |v: i32| v.max(0) as u32;
    let base = base_attributes(level);
    let attributes = Attributes {
        strength: base.strength + pos(total(AffixKind::Strength)),
        dexterity: base.dexterity + pos(total(AffixKind::Dexterity)),
        vitality: base.vitality + pos(total(AffixKind::Vitality)),
    };
    let l = u32::from(level);
    let (dmg, ticks, range) = match equipment.weapon().and_then(|w| w.base_def()) {
        Some(b) => (b.damage, b.attack_ticks, b.range_mm),
        None => FISTS,
    };
    let flat = pos(total(AffixKind::FlatDamage));
    let ias = pos(total(AffixKind::AttackSpeed)).min(MAX_ATTACK_SPEED_PCT);
    let armour: u32 = equipment
        .items()
        .filter_map(|i| i.base_def())
        .map(|b| b.armour)
        .sum::<u32>()
        + pos(total(AffixKind::Armour));
    PlayerStats {
        attributes,
        max_hp: 40 + 8 * attributes.vitality + 4 * l + pos(total(AffixKind::MaxLife)),
        physical: (dmg.0 + flat, dmg.1 + flat),
        physical_pct: 100 + attributes.strength + pos(total(AffixKind::PhysDamagePct)),
        fire: pos(total(AffixKind::FireDamage)),
        accuracy: 5 * attributes.dexterity + 10 * l + pos(total(AffixKind::Accuracy)),
        evasion: 3 * attributes.dexterity + 2 * l,
        armour,
        fire_resist: total(AffixKind::FireResist).clamp(0, MAX_RESIST_PCT),
        crit_pct: (5 + attributes.dexterity / 10 + pos(total(AffixKind::CritChance)))
            .min(MAX_CRIT_PCT),
        attack_ticks: (ticks * 100 / (100 + ias)).max(MIN_ATTACK_TICKS),
        range_mm: range,
    }
}

/// Everything durable about a character: what the server saves and moves between
/// instances ([`crate::World::export_player`], [`crate::World::add_player_with_state`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlayerState {
    /// Account-level player id.
    pub player_id: u64,
    /// Level, `1..=MAX_LEVEL`.
    pub level: u8,
    /// XP gathered toward the next level.
    pub xp: u64,
    /// Current hit points (clamped to the maximum on import; 0 imports as full).
    pub hp: u32,
    /// Bag, equipment and gold.
    pub inventory: Inventory,
}

impl PlayerState {
    /// A fresh level-1 character with nothing (the world adds a starter kit in
    /// [`crate::World::add_player`]).
    pub fn new(player_id: u64) -> Self {
        PlayerState {
            player_id,
            level: 1,
            xp: 0,
            hp: 0,
            inventory: Inventory::default(),
        }
    }

    /// Derived stats.
    pub fn stats(&self) -> PlayerStats {
        player_stats(self.level, &self.inventory.equipment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_and_stats() {
        assert_eq!(xp_to_next(1), 100);
        assert_eq!(xp_to_next(10), 5500);
        assert_eq!(xp_to_next(MAX_LEVEL), 0);
        let s = player_stats(1, &Equipment::default());
        assert_eq!(s.max_hp, 40 + 80 + 4);
        assert_eq!(s.physical, (1, 3));
        assert_eq!(s.crit_pct, 6);
        assert_eq!(s.attack_ticks, 30);
    }
}
