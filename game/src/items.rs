//! Items: base types, rarity, affixes, uniques, generation and loot rolls.
//!
//! Base types, affixes and uniques are compiled-in constants with stable numeric ids
//! (see `RULES.md` for why they are not data files): a persisted item stores only ids
//! and rolled values, so these tables may gain entries but must never renumber.

use serde::{Deserialize, Serialize};

use crate::rng::{splitmix64, GameRng};

/// A globally unique 128-bit item id.
///
/// Ids are derived from the world seed and a per-world counter:
/// `(splitmix64(seed) << 64) | counter`. Because splitmix64 is a bijection, two worlds
/// with different seeds never mint the same id, and a replay with the same seed mints
/// the same ids. The server must therefore give every instance a distinct seed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct ItemId(pub u128);

impl ItemId {
    /// The `counter`-th id minted by a world seeded with `seed`.
    pub fn mint(seed: u64, counter: u64) -> Self {
        ItemId((u128::from(splitmix64(seed)) << 64) | u128::from(counter))
    }
}

/// Rarity tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Rarity {
    /// No affixes.
    Common,
    /// One or two affixes.
    Magic,
    /// Three to five affixes.
    Rare,
    /// A named item with fixed affixes.
    Unique,
}

impl Rarity {
    /// Wire code 0..=3.
    pub fn code(self) -> u8 {
        match self {
            Rarity::Common => 0,
            Rarity::Magic => 1,
            Rarity::Rare => 2,
            Rarity::Unique => 3,
        }
    }
}

/// Equipment slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EquipSlot {
    /// Main-hand weapon.
    Weapon,
    /// Head.
    Helm,
    /// Chest.
    Body,
    /// Hands.
    Gloves,
    /// Feet.
    Boots,
    /// Finger.
    Ring,
}

impl EquipSlot {
    /// Every slot, in index order.
    pub const ALL: [EquipSlot; 6] = [
        EquipSlot::Weapon,
        EquipSlot::Helm,
        EquipSlot::Body,
        EquipSlot::Gloves,
        EquipSlot::Boots,
        EquipSlot::Ring,
    ];

    /// Index into [`crate::inventory::Equipment`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Broad category of a base type (loot tables pick a category first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// Weapons.
    Weapon,
    /// Armour pieces and rings.
    Armour,
    /// Consumables.
    Potion,
}

/// Stable id of a base type.
pub type BaseId = u16;

/// A base item type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseDef {
    /// Stable id (persisted).
    pub id: BaseId,
    /// Display name.
    pub name: &'static str,
    /// Category.
    pub category: Category,
    /// Slot it equips into (`None` for consumables).
    pub slot: Option<EquipSlot>,
    /// Lowest item level at which it drops.
    pub min_ilvl: u8,
    /// Character level needed to equip.
    pub req_level: u8,
    /// Weapon damage range.
    pub damage: (u32, u32),
    /// Weapon ticks between attacks before attack-speed bonuses.
    pub attack_ticks: u32,
    /// Weapon reach in millimetres.
    pub range_mm: i32,
    /// Armour value.
    pub armour: u32,
    /// Hit points restored (potions).
    pub heal: u32,
}

const fn weapon(
    id: BaseId,
    name: &'static str,
    min_ilvl: u8,
    req_level: u8,
    damage: (u32, u32),
    attack_ticks: u32,
    range_mm: i32,
) -> BaseDef {
    BaseDef {
        id,
        name,
        category: Category::Weapon,
        slot: Some(EquipSlot::Weapon),
        min_ilvl,
        req_level,
        damage,
        attack_ticks,
        range_mm,
        armour: 0,
        heal: 0,
    }
}

const fn armour(
    id: BaseId,
    name: &'static str,
    slot: EquipSlot,
    min_ilvl: u8,
    req_level: u8,
    armour: u32,
) -> BaseDef {
    BaseDef {
        id,
        name,
        category: Category::Armour,
        slot: Some(slot),
        min_ilvl,
        req_level,
        damage: (0, 0),
        attack_ticks: 0,
        range_mm: 0,
        armour,
        heal: 0,
    }
}

const fn potion(id: BaseId, name: &'static str, min_ilvl: u8, heal: u32) -> BaseDef {
    BaseDef {
        id,
        name,
        category: Category::Potion,
        slot: None,
        min_ilvl,
        req_level: 1,
        damage: (0, 0),
        attack_ticks: 0,
        range_mm: 0,
        armour: 0,
        heal,
    }
}

/// Base id of the starter weapon.
pub const SHORT_SWORD: BaseId = 1;
/// Base id of the smallest healing potion.
pub const MINOR_HEALING_POTION: BaseId = 40;

/// Every base type. Ids are stable; append only.
pub const BASES: &[BaseDef] = &[
    weapon(SHORT_SWORD, "Short Sword", 1, 1, (2, 7), 30, 1800),
    weapon(2, "Hand Axe", 3, 2, (3, 9), 33, 1800),
    weapon(3, "Broad Sword", 8, 6, (6, 14), 36, 2000),
    weapon(4, "War Hammer", 14, 12, (10, 24), 48, 2000),
    weapon(5, "Short Bow", 1, 1, (2, 8), 36, 12_000),
    weapon(6, "Long Bow", 10, 8, (5, 15), 42, 15_000),
    armour(20, "Leather Cap", EquipSlot::Helm, 1, 1, 3),
    armour(21, "Great Helm", EquipSlot::Helm, 12, 10, 12),
    armour(22, "Quilted Armour", EquipSlot::Body, 1, 1, 8),
    armour(23, "Chain Mail", EquipSlot::Body, 7, 5, 22),
    armour(24, "Plate Mail", EquipSlot::Body, 15, 12, 40),
    armour(25, "Leather Gloves", EquipSlot::Gloves, 1, 1, 2),
    armour(26, "Gauntlets", EquipSlot::Gloves, 10, 8, 8),
    armour(27, "Boots", EquipSlot::Boots, 1, 1, 2),
    armour(28, "Greaves", EquipSlot::Boots, 10, 8, 8),
    armour(29, "Ring", EquipSlot::Ring, 1, 1, 0),
    potion(MINOR_HEALING_POTION, "Minor Healing Potion", 1, 60),
    potion(41, "Healing Potion", 8, 150),
    potion(42, "Greater Healing Potion", 15, 350),
];

/// Attack when nothing is wielded: damage, ticks between attacks, reach.
pub const FISTS: ((u32, u32), u32, i32) = ((1, 3), 30, 1500);

/// The base type with id `id`.
pub fn base(id: BaseId) -> Option<&'static BaseDef> {
    BASES.iter().find(|b| b.id == id)
}

/// What an affix modifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AffixKind {
    /// + strength.
    Strength,
    /// + dexterity.
    Dexterity,
    /// + vitality.
    Vitality,
    /// + maximum life.
    MaxLife,
    /// + % physical damage.
    PhysDamagePct,
    /// + flat physical damage.
    FlatDamage,
    /// + fire damage per hit.
    FireDamage,
    /// + armour.
    Armour,
    /// + % fire resistance.
    FireResist,
    /// + % attack speed.
    AttackSpeed,
    /// + % critical hit chance.
    CritChance,
    /// + accuracy rating.
    Accuracy,
}

/// One rolled modifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Affix {
    /// What it modifies.
    pub kind: AffixKind,
    /// By how much.
    pub value: i32,
}

/// Roll range of an affix kind at item level `ilvl`:
/// `lo = lo0 + ilvl * lo_per10 / 10`, `hi = hi0 + ilvl * hi_per10 / 10`, capped at `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffixDef {
    /// Kind.
    pub kind: AffixKind,
    /// Low end at item level 0.
    pub lo0: i32,
    /// Low-end growth per 10 item levels.
    pub lo_per10: i32,
    /// High end at item level 0.
    pub hi0: i32,
    /// High-end growth per 10 item levels.
    pub hi_per10: i32,
    /// Upper bound of any roll.
    pub cap: i32,
    /// Slots it may roll on.
    pub slots: &'static [EquipSlot],
}

use EquipSlot::{Body, Boots, Gloves, Helm, Ring, Weapon};

const ANY: &[EquipSlot] = &[Weapon, Helm, Body, Gloves, Boots, Ring];
const DEFENSIVE: &[EquipSlot] = &[Helm, Body, Gloves, Boots, Ring];

/// Every affix with its roll range (see `RULES.md`).
pub const AFFIXES: &[AffixDef] = &[
    AffixDef {
        kind: AffixKind::Strength,
        lo0: 1,
        lo_per10: 2,
        hi0: 3,
        hi_per10: 3,
        cap: 30,
        slots: ANY,
    },
    AffixDef {
        kind: AffixKind::Dexterity,
        lo0: 1,
        lo_per10: 2,
        hi0: 3,
        hi_per10: 3,
        cap: 30,
        slots: ANY,
    },
    AffixDef {
        kind: AffixKind::Vitality,
        lo0: 1,
        lo_per10: 2,
        hi0: 3,
        hi_per10: 3,
        cap: 30,
        slots: ANY,
    },
    AffixDef {
        kind: AffixKind::MaxLife,
        lo0: 5,
        lo_per10: 10,
        hi0: 15,
        hi_per10: 20,
        cap: 120,
        slots: DEFENSIVE,
    },
    AffixDef {
        kind: AffixKind::PhysDamagePct,
        lo0: 10,
        lo_per10: 5,
        hi0: 20,
        hi_per10: 20,
        cap: 150,
        slots: &[Weapon],
    },
    AffixDef {
        kind: AffixKind::FlatDamage,
        lo0: 1,
        lo_per10: 3,
        hi0: 3,
        hi_per10: 5,
        cap: 30,
        slots: &[Weapon, Ring],
    },
    AffixDef {
        kind: AffixKind::FireDamage,
        lo0: 1,
        lo_per10: 5,
        hi0: 4,
        hi_per10: 10,
        cap: 40,
        slots: &[Weapon, Ring],
    },
    AffixDef {
        kind: AffixKind::Armour,
        lo0: 2,
        lo_per10: 5,
        hi0: 6,
        hi_per10: 10,
        cap: 60,
        slots: &[Helm, Body, Gloves, Boots],
    },
    AffixDef {
        kind: AffixKind::FireResist,
        lo0: 5,
        lo_per10: 2,
        hi0: 10,
        hi_per10: 10,
        cap: 40,
        slots: DEFENSIVE,
    },
    AffixDef {
        kind: AffixKind::AttackSpeed,
        lo0: 5,
        lo_per10: 1,
        hi0: 10,
        hi_per10: 5,
        cap: 30,
        slots: &[Weapon, Gloves, Ring],
    },
    AffixDef {
        kind: AffixKind::CritChance,
        lo0: 1,
        lo_per10: 1,
        hi0: 3,
        hi_per10: 1,
        cap: 10,
        slots: &[Weapon, Ring],
    },
    AffixDef {
        kind: AffixKind::Accuracy,
        lo0: 5,
        lo_per10: 10,
        hi0: 15,
        hi_per10: 30,
        cap: 150,
        slots: &[Weapon, Helm, Gloves, Ring],
    },
];

impl AffixDef {
    /// The inclusive roll range at item level `ilvl`.
    pub fn range(&self, ilvl: u8) -> (i32, i32) {
        let l = i32::from(ilvl);
        let lo = (self.lo0 + l * self.lo_per10 / 10).min(self.cap);
        let hi = (self.hi0 + l * self.hi_per10 / 10).min(self.cap).max(lo);
        (lo, hi)
    }
}

/// A named unique item: a base with fixed affixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniqueDef {
    /// Stable index (persisted in [`Item::unique`]).
    pub id: u8,
    /// Display name.
    pub name: &'static str,
    /// Base type.
    pub base: BaseId,
    /// Fixed affixes.
    pub affixes: &'static [Affix],
}

const fn ax(kind: AffixKind, value: i32) -> Affix {
    Affix { kind, value }
}

/// Every unique item. Append only.
pub const UNIQUES: &[UniqueDef] = &[
    UniqueDef {
        id: 0,
        name: "Emberfang",
        base: SHORT_SWORD,
        affixes: &[
            ax(AffixKind::FireDamage, 6),
            ax(AffixKind::PhysDamagePct, 40),
            ax(AffixKind::AttackSpeed, 10),
        ],
    },
    UniqueDef {
        id: 1,
        name: "Gravewarden",
        base: 23,
        affixes: &[
            ax(AffixKind::MaxLife, 40),
            ax(AffixKind::FireResist, 30),
            ax(AffixKind::Armour, 20),
        ],
    },
    UniqueDef {
        id: 2,
        name: "Ashen Crown",
        base: 21,
        affixes: &[
            ax(AffixKind::FireResist, 40),
            ax(AffixKind::Strength, 10),
            ax(AffixKind::Accuracy, 60),
        ],
    },
    UniqueDef {
        id: 3,
        name: "Soulreaper",
        base: 4,
        affixes: &[
            ax(AffixKind::PhysDamagePct, 80),
            ax(AffixKind::CritChance, 8),
            ax(AffixKind::Vitality, 10),
        ],
    },
];

/// One item instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Item {
    /// Unique id.
    pub id: ItemId,
    /// Base type id (see [`BASES`]).
    pub base: BaseId,
    /// Rarity.
    pub rarity: Rarity,
    /// Item level (the level of the monster that dropped it).
    pub level: u8,
    /// Index into [`UNIQUES`] when `rarity` is `Unique`.
    pub unique: Option<u8>,
    /// Rolled modifiers.
    pub affixes: Vec<Affix>,
}

impl Item {
    /// A plain item of `base` (no affixes).
    pub fn common(id: ItemId, base: BaseId, level: u8) -> Self {
        Item {
            id,
            base,
            rarity: Rarity::Common,
            level,
            unique: None,
            affixes: Vec::new(),
        }
    }

    /// Its base definition.
    pub fn base_def(&self) -> Option<&'static BaseDef> {
        base(self.base)
    }

    /// The slot it equips into, if any.
    pub fn slot(&self) -> Option<EquipSlot> {
        self.base_def().and_then(|b| b.slot)
    }

    /// Display name.
    pub fn name(&self) -> &'static str {
        if let Some(u) = self.unique.and_then(|u| UNIQUES.get(usize::from(u))) {
            return u.name;
        }
        self.base_def().map_or("Unknown Item", |b| b.name)
    }

    /// Sum of the values of affixes of `kind`.
    pub fn affix_total(&self, kind: AffixKind) -> i32 {
        self.affixes
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| a.value)
            .sum()
    }
}

/// Rarity weights `[common, magic, rare, unique]`.
pub type RarityWeights = [u32; 4];

/// Rarity weights of ordinary monsters.
pub const NORMAL_RARITY: RarityWeights = [780, 180, 36, 4];
/// Rarity weights of bosses.
pub const BOSS_RARITY: RarityWeights = [0, 550, 380, 70];

/// What a monster kind may drop. See `RULES.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LootTable {
    /// Independent item rolls per kill.
    pub rolls: u8,
    /// Category weights per roll: `[nothing, weapon, armour, potion]`.
    pub weights: [u32; 4],
    /// Rarity weights.
    pub rarity: RarityWeights,
    /// Gold per monster level, `(min, max)`; credited directly to the killer.
    pub gold_per_level: (u32, u32),
    /// Percent chance of any gold.
    pub gold_chance: u32,
}

/// Rolls one item of `category` at item level `ilvl` with the given rarity weights.
/// Returns `None` if no base of the category drops at that level.
pub(crate) fn generate(
    rng: &mut GameRng,
    id: ItemId,
    category: Category,
    ilvl: u8,
    rarity: &RarityWeights,
) -> Option<Item> {
    let candidates: Vec<&BaseDef> = BASES
        .iter()
        .filter(|b| b.category == category && b.min_ilvl <= ilvl)
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let base = candidates[rng.range(0, candidates.len() as u32 - 1) as usize];
    if category == Category::Potion {
        return Some(Item::common(id, base.id, ilvl));
    }
    let mut tier = match rng.weighted(rarity) {
        Some(0) | None => Rarity::Common,
        Some(1) => Rarity::Magic,
        Some(2) => Rarity::Rare,
        Some(_) => Rarity::Unique,
    };
    if tier == Rarity::Unique {
        let uniques: Vec<&UniqueDef> = UNIQUES
            .iter()
            .filter(|u| base_min_ilvl(u.base) <= ilvl)
            .collect();
        if uniques.is_empty() {
            tier = Rarity::Rare;
        } else {
            let u = uniques[rng.range(0, uniques.len() as u32 - 1) as usize];
            return Some(Item {
                id,
                base: u.base,
                rarity: Rarity::Unique,
                level: ilvl,
                unique: Some(u.id),
                affixes: u.affixes.to_vec(),
            });
        }
    }
    let slot = base.slot.unwrap_or(EquipSlot::Weapon);
    // A plain ring is pointless: rings are at least magic.
    if tier == Rarity::Common && slot == EquipSlot::Ring {
        tier = Rarity::Magic;
    }
    let count = match tier {
        Rarity::Common | Rarity::Unique => 0,
        Rarity::Magic => rng.range(1, 2),
        Rarity::Rare => rng.range(3, 5),
    };
    let mut pool: Vec<&AffixDef> = AFFIXES.iter().filter(|a| a.slots.contains(&slot)).collect();
    let mut affixes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if pool.is_empty() {
            break;
        }
        let def = pool.remove(rng.range(0, pool.len() as u32 - 1) as usize);
        let (lo, hi) = def.range(ilvl);
        affixes.push(Affix {
            kind: def.kind,
            value: rng.range_i32(lo, hi),
        });
    }
    affixes.sort_by_key(|a| a.kind);
    Some(Item {
        id,
        base: base.id,
        rarity: tier,
        level: ilvl,
        unique: None,
        affixes,
    })
}

fn base_min_ilvl(id: BaseId) -> u8 {
    base(id).map_or(u8::MAX, |b| b.min_ilvl)
}

/// Rolls the categories of a kill's drops (one entry per item to generate).
pub(crate) fn roll_categories(rng: &mut GameRng, table: &LootTable, out: &mut Vec<Category>) {
    for _ in 0..table.rolls {
        match rng.weighted(&table.weights) {
            Some(1) => out.push(Category::Weapon),
            Some(2) => out.push(Category::Armour),
            Some(3) => out.push(Category::Potion),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_consistent() {
        for (i, b) in BASES.iter().enumerate() {
            assert!(
                BASES[..i].iter().all(|o| o.id != b.id),
                "duplicate base {}",
                b.id
            );
            assert_eq!(b.slot.is_some(), b.category != Category::Potion);
        }
        for (i, u) in UNIQUES.iter().enumerate() {
            assert_eq!(usize::from(u.id), i);
            assert!(base(u.base).is_some());
        }
        for a in AFFIXES {
            for l in [0u8, 1, 50, 255] {
                let (lo, hi) = a.range(l);
                assert!(lo <= hi && hi <= a.cap, "{:?}", a.kind);
            }
        }
    }

    #[test]
    fn generation_respects_rarity_and_ranges() {
        let mut rng = GameRng::new(1);
        let mut seen = [0u32; 4];
        for n in 0..5000u64 {
            let cat = [Category::Weapon, Category::Armour][(n % 2) as usize];
            let ilvl = (n % 30) as u8 + 1;
            let Some(item) = generate(&mut rng, ItemId(u128::from(n)), cat, ilvl, &NORMAL_RARITY)
            else {
                panic!("no base");
            };
            seen[item.rarity.code() as usize] += 1;
            let b = item.base_def().expect("base");
            assert!(b.min_ilvl <= ilvl);
            match item.rarity {
                Rarity::Common => assert!(item.affixes.is_empty()),
                Rarity::Magic => assert!((1..=2).contains(&item.affixes.len())),
                Rarity::Rare => assert!((3..=5).contains(&item.affixes.len())),
                Rarity::Unique => assert!(item.unique.is_some()),
            }
            if item.rarity != Rarity::Unique {
                for a in &item.affixes {
                    let def = AFFIXES.iter().find(|d| d.kind == a.kind).expect("affix");
                    let (lo, hi) = def.range(ilvl);
                    assert!((lo..=hi).contains(&a.value));
                    assert!(def.slots.contains(&b.slot.expect("slot")));
                }
            }
        }
        assert!(seen.iter().all(|s| *s > 0), "{seen:?}");
    }

    #[test]
    fn ids_are_distinct_across_seeds() {
        assert_ne!(ItemId::mint(1, 0), ItemId::mint(2, 0));
        assert_ne!(ItemId::mint(1, 0), ItemId::mint(1, 1));
    }
}
