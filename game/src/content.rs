//! Zone templates parsed from TOML (`content/zones/*.toml`) and validated as a set.
//!
//! Parsing is pure: the server reads the files and hands their text to
//! [`ZoneTemplate::from_toml`] or [`Content::from_sources`]. [`Content::builtin`] embeds
//! the repository's `content/zones` at compile time for tests, benches and tools.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::geom::{in_wall, Rect, LOS_STEP_MM};
use crate::monsters::MonsterKind;
use crate::zone::ZoneSpec;

/// Largest accepted zone side in millimetres (1 km).
pub const MAX_ZONE_MM: i32 = 1_000_000;
/// Most monsters a zone template may spawn in total.
pub const MAX_MONSTERS_PER_ZONE: u32 = 500;

/// Why content was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The text is not valid TOML or does not have the expected shape.
    #[error("invalid zone TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// Width or height is not in `1..=MAX_ZONE_MM`.
    #[error("zone size {width}x{height} mm is out of range")]
    BadSize {
        /// Width.
        width: i32,
        /// Height.
        height: i32,
    },
    /// The player spawn is outside the zone.
    #[error("spawn {0:?} is outside the zone")]
    SpawnOutOfBounds((i32, i32)),
    /// The player spawn is inside a wall.
    #[error("spawn {0:?} is inside a wall")]
    SpawnInWall((i32, i32)),
    /// The player spawn is on a portal (players would bounce straight out).
    #[error("spawn {0:?} is on a portal")]
    SpawnOnPortal((i32, i32)),
    /// A rectangle is empty, too thin, or leaves the zone.
    #[error(
        "{what} #{index} {rect:?} is empty, thinner than {LOS_STEP_MM} mm, or outside the zone"
    )]
    BadRect {
        /// Which list: "wall", "portal" or "spawn area".
        what: &'static str,
        /// Position in its list.
        index: usize,
        /// The rectangle.
        rect: Rect,
    },
    /// A spawn group names a monster kind that does not exist.
    #[error("spawn group #{index}: unknown monster kind {kind:?}")]
    UnknownMonster {
        /// Position in the spawn list.
        index: usize,
        /// The name given.
        kind: String,
    },
    /// A level range is empty or outside `1..=99`.
    #[error("spawn group #{index}: bad level range {min}..={max}")]
    BadLevels {
        /// Position in the spawn list.
        index: usize,
        /// Lowest level.
        min: u8,
        /// Highest level.
        max: u8,
    },
    /// A spawn area's centre is inside a wall (no safe fallback position).
    #[error("spawn group #{index}: area centre is inside a wall")]
    SpawnAreaInWall {
        /// Position in the spawn list.
        index: usize,
    },
    /// The zone spawns more than [`MAX_MONSTERS_PER_ZONE`] monsters.
    #[error("zone spawns {0} monsters, more than {MAX_MONSTERS_PER_ZONE}")]
    TooManyMonsters(u32),
    /// A town has monster spawns.
    #[error("town zone {0} has monster spawns")]
    TownWithMonsters(u16),
    /// Two templates share an id.
    #[error("zone id {0} is defined twice")]
    DuplicateZone(u16),
    /// A portal leads to a zone that is not in the set.
    #[error("zone {zone}: portal #{index} targets unknown zone {target}")]
    UnknownPortalTarget {
        /// Zone holding the portal.
        zone: u16,
        /// Position in its portal list.
        index: usize,
        /// The missing target.
        target: u16,
    },
    /// `respawn_zone` names a zone that is not in the set, or not a town.
    #[error("zone {zone}: respawn zone {target} is unknown or not a town")]
    BadRespawnZone {
        /// Zone holding the reference.
        zone: u16,
        /// The bad target.
        target: u16,
    },
    /// An error in one source of a set, with its position in the list.
    #[error("zone source #{index}: {source}")]
    InSource {
        /// Position of the source.
        index: usize,
        /// What was wrong.
        #[source]
        source: Box<ContentError>,
    },
}

/// A group of monsters spawned at random points of an area.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpawnGroup {
    /// Kind.
    pub kind: MonsterKind,
    /// Lowest level (inclusive).
    pub level_min: u8,
    /// Highest level (inclusive).
    pub level_max: u8,
    /// How many.
    pub count: u16,
    /// Where (also the monster's home for leashing).
    pub area: Rect,
    /// Seconds from death to respawn; 0 = never respawns in this instance.
    pub respawn_secs: u32,
}

/// A rectangle that sends players to another zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Portal {
    /// Where it is.
    pub area: Rect,
    /// Destination zone id.
    pub target: u16,
}

/// A validated zone template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZoneTemplate {
    /// Zone id (unique in a content set).
    pub id: u16,
    /// Display name.
    pub name: String,
    /// Width in millimetres.
    pub width_mm: i32,
    /// Height in millimetres.
    pub height_mm: i32,
    /// Where players appear.
    pub spawn_mm: (i32, i32),
    /// Towns have no monsters and are where dead players respawn.
    pub town: bool,
    /// Zone a player who dies here respawns in; equal to `id` means "here, at spawn".
    pub respawn_zone: u16,
    /// Impassable rectangles.
    pub walls: Vec<Rect>,
    /// Exits.
    pub portals: Vec<Portal>,
    /// Monster spawns.
    pub spawns: Vec<SpawnGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    id: u16,
    name: String,
    width_mm: i32,
    height_mm: i32,
    spawn_mm: (i32, i32),
    #[serde(default)]
    town: bool,
    respawn_zone: Option<u16>,
    #[serde(default)]
    walls: Vec<Rect>,
    #[serde(default)]
    portals: Vec<RawPortal>,
    #[serde(default)]
    spawns: Vec<RawSpawn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortal {
    rect: Rect,
    target: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpawn {
    kind: String,
    level: (u8, u8),
    count: u16,
    area: Rect,
    #[serde(default)]
    respawn_secs: u32,
}

impl ZoneTemplate {
    /// Parses and validates one zone on its own (portal targets are checked by
    /// [`Content::from_sources`]).
    pub fn from_toml(text: &str) -> Result<ZoneTemplate, ContentError> {
        let raw: RawZone = toml::from_str(text)?;
        let spawns = raw
            .spawns
            .into_iter()
            .enumerate()
            .map(|(index, s)| {
                let kind = MonsterKind::from_name(&s.kind).ok_or(ContentError::UnknownMonster {
                    index,
                    kind: s.kind,
                })?;
                Ok(SpawnGroup {
                    kind,
                    level_min: s.level.0,
                    level_max: s.level.1,
                    count: s.count,
                    area: s.area,
                    respawn_secs: s.respawn_secs,
                })
            })
            .collect::<Result<Vec<_>, ContentError>>()?;
        let t = ZoneTemplate {
            id: raw.id,
            name: raw.name,
            width_mm: raw.width_mm,
            height_mm: raw.height_mm,
            spawn_mm: raw.spawn_mm,
            town: raw.town,
            respawn_zone: raw.respawn_zone.unwrap_or(raw.id),
            walls: raw.walls,
            portals: raw
                .portals
                .into_iter()
                .map(|p| Portal {
                    area: p.rect,
                    target: p.target,
                })
                .collect(),
            spawns,
        };
        t.validate()?;
        Ok(t)
    }

    /// Checks everything that can be checked without the other zones.
    pub fn validate(&self) -> Result<(), ContentError> {
        let (w, h) = (self.width_mm, self.height_mm);
        if !(1..=MAX_ZONE_MM).contains(&w) || !(1..=MAX_ZONE_MM).contains(&h) {
            return Err(ContentError::BadSize {
                width: w,
                height: h,
            });
        }
        let rect_ok = |r: &Rect, min: i32| {
            r.is_valid() && r.within(w, h) && r.x1 - r.x0 >= min && r.y1 - r.y0 >= min
        };
        for (index, r) in self.walls.iter().enumerate() {
            if !rect_ok(r, LOS_STEP_MM) {
                return Err(ContentError::BadRect {
                    what: "wall",
                    index,
                    rect: *r,
                });
            }
        }
        for (index, p) in self.portals.iter().enumerate() {
            if !rect_ok(&p.area, 1) {
                return Err(ContentError::BadRect {
                    what: "portal",
                    index,
                    rect: p.area,
                });
            }
        }
        let s = self.spawn_mm;
        if !(0..=w).contains(&s.0) || !(0..=h).contains(&s.1) {
            return Err(ContentError::SpawnOutOfBounds(s));
        }
        if in_wall(s, &self.walls) {
            return Err(ContentError::SpawnInWall(s));
        }
        if self.portals.iter().any(|p| p.area.contains(s)) {
            return Err(ContentError::SpawnOnPortal(s));
        }
        let mut total = 0u32;
        for (index, g) in self.spawns.iter().enumerate() {
            if !rect_ok(&g.area, 1) {
                return Err(ContentError::BadRect {
                    what: "spawn area",
                    index,
                    rect: g.area,
                });
            }
            if g.level_min == 0 || g.level_min > g.level_max || g.level_max > 99 {
                return Err(ContentError::BadLevels {
                    index,
                    min: g.level_min,
                    max: g.level_max,
                });
            }
            if in_wall(g.area.center(), &self.walls) {
                return Err(ContentError::SpawnAreaInWall { index });
            }
            total += u32::from(g.count);
        }
        if total > MAX_MONSTERS_PER_ZONE {
            return Err(ContentError::TooManyMonsters(total));
        }
        if self.town && total > 0 {
            return Err(ContentError::TownWithMonsters(self.id));
        }
        Ok(())
    }

    /// An open, empty zone (no walls, monsters or portals) matching a [`ZoneSpec`];
    /// dead players respawn in place.
    pub fn open(spec: &ZoneSpec) -> ZoneTemplate {
        ZoneTemplate {
            id: spec.id,
            name: String::new(),
            width_mm: spec.width_mm,
            height_mm: spec.height_mm,
            spawn_mm: spec.spawn_mm,
            town: false,
            respawn_zone: spec.id,
            walls: Vec::new(),
            portals: Vec::new(),
            spawns: Vec::new(),
        }
    }

    /// The [`ZoneSpec`] summary of this template.
    pub fn spec(&self) -> ZoneSpec {
        ZoneSpec {
            id: self.id,
            width_mm: self.width_mm,
            height_mm: self.height_mm,
            spawn_mm: self.spawn_mm,
        }
    }
}

/// A validated set of zones whose cross-references all resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    zones: BTreeMap<u16, ZoneTemplate>,
}

/// The repository's zone files, embedded at compile time.
pub const BUILTIN_ZONES: &[&str] = &[
    include_str!("../../content/zones/town.toml"),
    include_str!("../../content/zones/crypt.toml"),
    include_str!("../../content/zones/marsh.toml"),
    include_str!("../../content/zones/keep.toml"),
];

impl Content {
    /// Parses every source (one zone each) and checks ids are unique, portal targets
    /// exist and respawn zones exist and are towns.
    pub fn from_sources<S: AsRef<str>>(sources: &[S]) -> Result<Content, ContentError> {
        let mut zones = BTreeMap::new();
        for (index, s) in sources.iter().enumerate() {
            let z = ZoneTemplate::from_toml(s.as_ref()).map_err(|e| ContentError::InSource {
                index,
                source: Box::new(e),
            })?;
            if zones.contains_key(&z.id) {
                return Err(ContentError::DuplicateZone(z.id));
            }
            zones.insert(z.id, z);
        }
        for z in zones.values() {
            for (index, p) in z.portals.iter().enumerate() {
                if !zones.contains_key(&p.target) {
                    return Err(ContentError::UnknownPortalTarget {
                        zone: z.id,
                        index,
                        target: p.target,
                    });
                }
            }
            let respawn_ok =
                z.respawn_zone == z.id || zones.get(&z.respawn_zone).is_some_and(|t| t.town);
            if !respawn_ok {
                return Err(ContentError::BadRespawnZone {
                    zone: z.id,
                    target: z.respawn_zone,
                });
            }
        }
        Ok(Content { zones })
    }

    /// The zones shipped in `content/zones`.
    pub fn builtin() -> Result<Content, ContentError> {
        Content::from_sources(BUILTIN_ZONES)
    }

    /// The zone with id `id`.
    pub fn zone(&self, id: u16) -> Option<&ZoneTemplate> {
        self.zones.get(&id)
    }

    /// Every zone in id order.
    pub fn zones(&self) -> impl Iterator<Item = &ZoneTemplate> + '_ {
        self.zones.values()
    }

    /// The lowest-id town, where new characters start.
    pub fn town(&self) -> Option<&ZoneTemplate> {
        self.zones.values().find(|z| z.town)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small valid zone; world tests mutate it too (`world/tests.rs`).
    pub(crate) const MINI: &str = r#"
        id = 9
        name = "Mini"
        width_mm = 10000
        height_mm = 10000
        spawn_mm = [1000, 1000]
        walls = [[4000, 0, 4500, 8000]]
        [[portals]]
        rect = [9000, 9000, 10000, 10000]
        target = 9
        [[spawns]]
        kind = "zombie"
        level = [1, 2]
        count = 3
        area = [6000, 1000, 9000, 4000]
        respawn_secs = 10
    "#;

    #[test]
    fn builtin_content_loads() {
        let c = Content::builtin().expect("builtin content");
        assert_eq!(c.zones().count(), 4);
        assert!(c.town().is_some_and(|t| t.spawns.is_empty()));
        assert!(c.zones().filter(|z| !z.town).all(|z| !z.spawns.is_empty()));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(text in ".{0,400}") {
            let _ = ZoneTemplate::from_toml(&text);
        }
    }

    #[test]
    fn parses_and_validates() {
        let z = ZoneTemplate::from_toml(MINI).expect("parse");
        assert_eq!(z.walls, vec![Rect::new(4000, 0, 4500, 8000)]);
        assert_eq!(z.spawns[0].kind, MonsterKind::Zombie);
        assert_eq!(z.respawn_zone, 9);
        assert!(Content::from_sources(&[MINI]).is_ok());
    }

    #[test]
    fn typed_errors() {
        let e = |s: String| ZoneTemplate::from_toml(&s).expect_err("must fail");
        assert!(matches!(
            e(MINI.replace("[1000, 1000]", "[4100, 100]")),
            ContentError::SpawnInWall(_)
        ));
        assert!(matches!(
            e(MINI.replace("[1000, 1000]", "[-1, 100]")),
            ContentError::SpawnOutOfBounds(_)
        ));
        assert!(matches!(
            e(MINI.replace("\"zombie\"", "\"dragon\"")),
            ContentError::UnknownMonster { .. }
        ));
        assert!(matches!(
            e(MINI.replace("[1, 2]", "[3, 2]")),
            ContentError::BadLevels { .. }
        ));
        assert!(matches!(
            e(MINI.replace("4500, 8000", "4050, 8000")),
            ContentError::BadRect { what: "wall", .. }
        ));
        assert!(matches!(
            e(MINI.replace("id = 9", "id = \"x\"")),
            ContentError::Toml(_)
        ));
        assert!(matches!(
            Content::from_sources(&[MINI.replace("target = 9", "target = 7")]),
            Err(ContentError::UnknownPortalTarget { target: 7, .. })
        ));
        assert!(matches!(
            Content::from_sources(&[MINI, MINI]),
            Err(ContentError::DuplicateZone(9))
        ));
    }
}
