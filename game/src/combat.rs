//! Combat formulas shared by players and monsters. Constants are in `RULES.md`.

use crate::rng::GameRng;

/// Lowest hit chance in percent.
pub const MIN_HIT_PCT: u32 = 5;
/// Highest hit chance in percent.
pub const MAX_HIT_PCT: u32 = 95;
/// Critical hits deal this percentage of normal damage.
pub const CRIT_MULTIPLIER_PCT: u32 = 150;
/// Highest armour damage reduction in percent.
pub const MAX_ARMOUR_REDUCTION_PCT: u32 = 75;
/// Highest resistance in percent (lowest is -100).
pub const MAX_RESIST_PCT: i32 = 75;

/// What the attacker brings to one swing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attacker {
    /// Character or monster level.
    pub level: u8,
    /// Accuracy rating.
    pub accuracy: u32,
    /// Critical hit chance in percent.
    pub crit_pct: u32,
    /// Physical damage range before the multiplier.
    pub physical: (u32, u32),
    /// Physical damage multiplier in percent (100 = none).
    pub physical_pct: u32,
    /// Fire damage range.
    pub fire: (u32, u32),
}

/// What the defender brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defender {
    /// Character or monster level.
    pub level: u8,
    /// Evasion rating.
    pub evasion: u32,
    /// Armour.
    pub armour: u32,
    /// Fire resistance in percent.
    pub fire_resist: i32,
}

/// Result of one attack roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The attack missed.
    Miss,
    /// The attack hit for this much damage after mitigation.
    Hit {
        /// Physical damage taken.
        physical: u32,
        /// Fire damage taken.
        fire: u32,
        /// Whether it was a critical hit.
        crit: bool,
    },
}

/// Chance to hit in percent:
/// `clamp(200 acc / (2 acc + eva) + 2 (attacker level - defender level), 5, 95)`.
pub fn hit_chance(accuracy: u32, evasion: u32, attacker_level: u8, defender_level: u8) -> u32 {
    let acc = u64::from(accuracy);
    let denom = 2 * acc + u64::from(evasion);
    let base = (200 * acc).checked_div(denom).unwrap_or(100) as i64;
    let adj = base + 2 * (i64::from(attacker_level) - i64::from(defender_level));
    adj.clamp(i64::from(MIN_HIT_PCT), i64::from(MAX_HIT_PCT)) as u32
}

/// Armour damage reduction in percent against an attacker of `attacker_level`:
/// `min(75, 100 armour / (armour + 40 + 20 level))`.
pub fn armour_reduction_pct(armour: u32, attacker_level: u8) -> u32 {
    let a = u64::from(armour);
    let r = 100 * a / (a + 40 + 20 * u64::from(attacker_level));
    (r as u32).min(MAX_ARMOUR_REDUCTION_PCT)
}

/// `damage` after a resistance of `resist_pct` (clamped to `-100..=75`).
pub fn apply_resist(damage: u32, resist_pct: i32) -> u32 {
    let r = i64::from(resist_pct.clamp(-100, MAX_RESIST_PCT));
    (i64::from(damage) * (100 - r) / 100) as u32
}

/// Rolls one attack: hit roll, damage roll, critical roll, then mitigation.
/// A hit always deals at least 1 damage in total.
pub(crate) fn resolve(rng: &mut GameRng, a: &Attacker, d: &Defender) -> Outcome {
    if !rng.percent(hit_chance(a.accuracy, d.evasion, a.level, d.level)) {
        return Outcome::Miss;
    }
    let crit = rng.percent(a.crit_pct.min(100));
    let mult = |v: u64| {
        if crit {
            v * u64::from(CRIT_MULTIPLIER_PCT) / 100
        } else {
            v
        }
    };
    let phys_raw =
        u64::from(rng.range(a.physical.0, a.physical.1)) * u64::from(a.physical_pct) / 100;
    let fire_raw = u64::from(rng.range(a.fire.0, a.fire.1));
    let phys = mult(phys_raw) * u64::from(100 - armour_reduction_pct(d.armour, a.level)) / 100;
    let fire = u64::from(apply_resist(
        mult(fire_raw).min(u64::from(u32::MAX)) as u32,
        d.fire_resist,
    ));
    let phys = phys.min(u64::from(u32::MAX)) as u32;
    let fire = fire as u32;
    let physical = if phys == 0 && fire == 0 { 1 } else { phys };
    Outcome::Hit {
        physical,
        fire,
        crit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas() {
        assert_eq!(hit_chance(100, 100, 5, 5), 66);
        assert_eq!(hit_chance(0, 100, 1, 1), MIN_HIT_PCT);
        assert_eq!(hit_chance(1000, 0, 1, 1), MAX_HIT_PCT);
        assert_eq!(hit_chance(0, 0, 1, 1), MAX_HIT_PCT);
        assert_eq!(armour_reduction_pct(0, 1), 0);
        assert_eq!(armour_reduction_pct(60, 1), 50);
        assert_eq!(armour_reduction_pct(u32::MAX, 1), 75);
        assert_eq!(apply_resist(100, 50), 50);
        assert_eq!(apply_resist(100, 200), 25);
        assert_eq!(apply_resist(100, -25), 125);
    }

    #[test]
    fn hits_deal_at_least_one() {
        let mut rng = GameRng::new(3);
        let a = Attacker {
            level: 1,
            accuracy: 1000,
            crit_pct: 50,
            physical: (0, 0),
            physical_pct: 100,
            fire: (0, 0),
        };
        let d = Defender {
            level: 1,
            evasion: 0,
            armour: 10_000,
            fire_resist: 75,
        };
        for _ in 0..100 {
            match resolve(&mut rng, &a, &d) {
                Outcome::Hit { physical, fire, .. } => assert!(physical + fire >= 1),
                Outcome::Miss => {}
            }
        }
    }
}
